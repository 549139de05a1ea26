"""Reading a past run for the Train page: its events, headline metric and whether it resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdstudio.core.metrics import METRIC_LABELS  # no torch
from kdstudio.ui.events import events_from_records


def metric_label(metric: str) -> str:
    """A metric's plain name ("Perplexity (lower is better)")."""
    return METRIC_LABELS.get(metric, metric.replace("_", " ").capitalize())


def read_history(run_dir: str) -> dict[str, Any]:
    """A past run's events (typed, as a live run sends them) and what the page needs to draw
    them (reads a file: runs in a job)."""
    from kdstudio.core.runs import Run

    run = Run(Path(run_dir))
    metric = run.summary().get("headline_metric", "")
    return {"events": events_from_records(run.events()), "metric": metric, "label": metric_label(metric),
            "status": run.status(), "resumable": run.latest_checkpoint() is not None}
