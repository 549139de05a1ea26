"""Work the Compare page runs in ctx.jobs (off the GUI thread): loading, comparing, history.

torch and transformers are imported inside these functions only, never on the GUI thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdstudio.core.events import Eval
from kdstudio.core.runs import Run, list_runs
from kdstudio.core.tasks import get_task
from kdstudio.ui.events import events_from_records

COMPARABLE = ("finished", "stopped")


def comparable_runs() -> list[Any]:
    """Finished or stopped runs with a saved student, newest first."""
    return [i for i in list_runs()
            if i.status in COMPARABLE and (i.path / "student" / "config.json").exists()]


def compare_job(run_dir: str, comparer: Any, text: str | None, gen: dict[str, Any]) -> tuple:
    """Load the run's models (when not loaded yet), then compare on ``text`` if given.

    For causal-lm the answer comes with the per-token view of the prompt and the teacher's
    continuation (after the timed answers, so it does not slow them), or the reason there is
    none as a string: (run_dir, comparer, text, result, tokens).
    """
    from kdstudio.core.compare import Comparer, GenerationSettings
    from kdstudio.core.errors import KDStudioError

    if comparer is None:
        # No warm-up answer needed: Comparer.compare times both with a warm-up of its own.
        comparer = Comparer.from_run(run_dir, device="auto")
    result = comparer.compare(text, GenerationSettings(**gen)) if text is not None else None
    tokens: Any = None
    if result is not None and get_task(comparer.task).shows_token_view:
        try:
            tokens = comparer.token_view(text, result.teacher.text)
        except KDStudioError as exc:  # e.g. different tokenizers: the answers still show
            tokens = str(exc)
    return run_dir, comparer, text, result, tokens


def history_job(run_dir: str) -> tuple[str, list[tuple[int, list[dict[str, str]]]]]:
    """Every evaluation's pinned answers recorded in the run's metrics.jsonl."""
    evals = [e for e in events_from_records(Run(Path(run_dir)).events())
             if isinstance(e, Eval) and e.samples]
    return run_dir, [(int(e.step), e.samples) for e in evals]
