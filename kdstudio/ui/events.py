"""A past run's events, read back from its metrics.jsonl as the typed events a live run sends.

The pages tell events apart by their class (kdstudio.core.events); the file holds each event
as a dict with its ``kind``. Reading it back into the same classes lets one piece of code
draw a live run and replay a past one.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from kdstudio.core.events import Event


@functools.cache
def _classes_by_kind() -> dict[str, type[Event]]:
    out: dict[str, type[Event]] = {}
    todo = [Event]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            kind = next(f.default for f in dataclasses.fields(sub) if f.name == "kind")
            out[str(kind)] = sub
            todo.append(sub)
    return out


def event_from_record(record: dict[str, Any]) -> Event | None:
    """The event a metrics.jsonl line records; None for a kind or a shape this version does not
    know (a line from another version, or a torn one)."""
    cls = _classes_by_kind().get(record.get("kind", "")) if isinstance(record, dict) else None
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    try:
        return cls(**{k: v for k, v in record.items() if k in names})
    except TypeError:  # a field it needs is missing
        return None


def events_from_records(records: list[dict[str, Any]]) -> list[Event]:
    """Every event of a run's records that this version can read, in order."""
    return [e for e in map(event_from_record, records) if e is not None]
