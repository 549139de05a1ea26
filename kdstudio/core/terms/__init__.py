"""Loss terms beyond the built-in five, one module each.

A module here defines ``TERM`` (an objective.LossTerm) and, when the term brings settings of
its own, ``FIELDS``: (name, type, default, help, extra) tuples that become fields of
[method] in the run config, with ``extra`` holding choices/min/max. Adding a method is one
module here plus its test; nothing else changes. Modules stay free of torch at import (the
config reads them before torch is loaded); compute functions import what they need.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def modules() -> list[tuple[Any, list[tuple]]]:
    """(TERM or None, FIELDS) of every module in this package, in module-name order. The
    app builds each module's settings controls from this, grouped by term."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append((getattr(module, "TERM", None), list(getattr(module, "FIELDS", ()))))
    return found


def discover() -> tuple[list[Any], list[tuple]]:
    """(terms, config fields) of every module in this package, in module-name order."""
    terms: list[Any] = []
    fields: list[tuple] = []
    for term, module_fields in modules():
        if term is not None:
            terms.append(term)
        fields.extend(module_fields)
    return terms, fields
