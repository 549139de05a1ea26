"""Before and around a sweep: how long it will take, and the teacher's shape it plans with.

The estimates themselves live in plan/ (time.py, measured.py) and the budget helper in
sweep/budget.py; the names below stay importable from here. torch is imported only inside
functions that read a model's shape, so the app can import this.
"""

from __future__ import annotations

from typing import Any

from kdstudio.core.errors import KDStudioError, SweepError
from kdstudio.core.plan.measured import Figures, PastRun, known_figures, past_runs
from kdstudio.core.plan.memory import ModelShape
from kdstudio.core.plan.record import record_estimate
from kdstudio.core.plan.time import (
    ROUGH_FLOPS,
    ROUGH_SETUP_S,
    TimeEstimate,
    estimate_run_times,
    format_duration,
)
from kdstudio.core.sweep.budget import BUDGET_KINDS, BudgetAdvice, Candidate, fit_budget
from kdstudio.core.sweep.store import Sweep, SweepEntry


def estimate_time(sweep: Sweep, entries: list[SweepEntry] | None = None, *,
                  teacher_shape: ModelShape | None = None, device: str = "") -> TimeEstimate:
    """Seconds the entries (default: the unfinished ones) will take on this machine.

    The sweep's own finished runs count as earlier runs, with the whole wall time the queue
    measured: the estimate sharpens as the sweep goes (see plan.time.estimate_run_times).
    """
    entries = sweep.todo(retry_failed=True) if entries is None else entries
    walls = {e.run_dir: e.wall_s for e in sweep.entries if e.run_dir and e.wall_s}
    est = estimate_run_times(sweep.base, {e.index: e.spec for e in entries}, known_walls=walls,
                             teacher_shape=teacher_shape, device=device)
    if est.method != "unknown":  # the plan's word for each run, kept for record_planned
        _PLANNED.setdefault(str(sweep.folder), {}).update(
            {i: (s, est.method, est.note) for i, s in est.per_entry.items()})
    return est


# What the latest estimate of each sweep (by folder) said of each entry, in this process:
# written into the entry's run when it ends, beside what it took.
_PLANNED: dict[str, dict[int, tuple[float, str, str]]] = {}


def record_planned(sweep: Sweep, entry: SweepEntry, measured_s: float | None) -> None:
    """Write what the plan estimated for this entry into its run's summary, with the whole
    time it took (measured_s; None leaves the run's own duration to compare)."""
    planned = _PLANNED.get(str(sweep.folder), {}).get(entry.index)
    if planned is None or not entry.run_dir:
        return
    try:
        record_estimate(entry.run_dir, *planned, measured_s=measured_s)
    except OSError:  # the record is a courtesy; the run itself is already safe on disk
        pass


def teacher_shape_for(config: Any) -> ModelShape:
    """The teacher's shape from its config files; errors say which model could not be read."""
    from kdstudio.core.plan.memory import model_shape

    t = config.teacher
    try:
        return model_shape(t.name, config.task, revision=t.revision,
                           trust_remote_code=t.trust_remote_code)
    except KDStudioError:
        raise
    except Exception as exc:
        raise SweepError(f"The teacher '{t.name}' could not be read to count its layers: {exc}",
                         hint="Check the teacher on the Models page.") from exc


__all__ = ["BUDGET_KINDS", "ROUGH_FLOPS", "ROUGH_SETUP_S", "BudgetAdvice", "Candidate", "Figures",
           "PastRun", "TimeEstimate", "estimate_time", "fit_budget", "format_duration",
           "known_figures", "past_runs", "record_planned", "teacher_shape_for"]
