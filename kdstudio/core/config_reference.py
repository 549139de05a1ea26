"""The README's config reference: one table row per key, from the dataclasses' help text."""

import dataclasses
import typing
from typing import Any

import tomli_w

from kdstudio.core.config import RunConfig
from kdstudio.core.config_checks import type_name


def config_reference_markdown() -> str:
    """The README's config reference, generated from the dataclasses' help text."""
    lines = ["| key | default | allowed | what it does |", "|---|---|---|---|"]

    def walk(cls: type, prefix: str, base: Any) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            meta = f.metadata
            allowed = ", ".join(f"`{c}`" for c in meta["choices"]) if meta.get("choices") else ""
            if not allowed and (meta.get("min") is not None or meta.get("max") is not None):
                lo = meta.get("min")
                hi = meta.get("max")
                allowed = (f"{lo} to {hi}" if lo is not None and hi is not None
                           else f">= {lo}" if lo is not None else f"<= {hi}")
            if not allowed:
                allowed = type_name(hints[f.name])
            default = tomli_w.dumps({"v": getattr(base, f.name)})[4:].strip()
            lines.append(f"| `{prefix}{f.name}` | `{default}` | {allowed} | {meta['help']} |")
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{f.name}.", getattr(base, f.name))

    walk(RunConfig, "", RunConfig())
    return "\n".join(lines) + "\n"
