"""A past run's events, read back from its metrics.jsonl as the typed events a live run sends.

The pages tell events apart by their class (kdstudio.core.events); the file holds each event
as a dict with its ``kind``. Reading it back into the same classes lets one piece of code
draw a live run and replay a past one.
"""

from __future__ import annotations

from typing import Any

from kdstudio.core.events import Event, event_from_record

__all__ = ["event_from_record", "events_from_records"]


def events_from_records(records: list[dict[str, Any]]) -> list[Event]:
    """Every event of a run's records that this version can read, in order."""
    return [e for e in map(event_from_record, records) if e is not None]
