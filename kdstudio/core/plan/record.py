"""The time a run was planned at, kept in its summary beside the time it took.

The sweep queue records what the plan said for each run; the run's summary then shows how
far off the estimate was, and the Runs page says so in a sentence. Only the run store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdstudio.core.runs import Run


def _short(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def record_estimate(run_dir: str | Path, planned_s: float, method: str, note: str,
                    measured_s: float | None = None) -> dict[str, Any]:
    """Write the plan's estimate (and the measured whole time) into the run's summary."""
    run = Run(Path(run_dir))
    entry: dict[str, Any] = {"planned_s": round(float(planned_s), 1), "method": method,
                             "note": note}
    if measured_s is not None:
        entry["measured_s"] = round(float(measured_s), 1)
    return run.update_summary(estimate=entry)


def estimate_check(summary: dict[str, Any]) -> str:
    """'Planned at 8 min (a rough guess …); it took 31 s, 15x less.' ('' when not planned)."""
    est = summary.get("estimate")
    if not isinstance(est, dict) or not isinstance(est.get("planned_s"), (int, float)):
        return ""
    planned = float(est["planned_s"])
    took = est.get("measured_s") or summary.get("duration_s")
    text = f"Planned at {_short(planned)}"
    if est.get("note"):
        text += f" ({est['note']})"
    if not isinstance(took, (int, float)) or took <= 0 or planned <= 0:
        return text + "."
    ratio = planned / float(took)
    if 0.8 <= ratio <= 1.25:
        how = "close to the plan"
    elif ratio > 1:
        how = f"{ratio:.1f}x less than planned"
    else:
        how = f"{1 / ratio:.1f}x more than planned"
    return f"{text}; it took {_short(float(took))}, {how}."
