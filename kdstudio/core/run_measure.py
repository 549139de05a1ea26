"""What a run measures besides its losses: the checks that the teacher answers with numbers,
the student's figures at each evaluation, and the plain-training baseline at the end.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from kdstudio.core import distributed
from kdstudio.core.config import RunConfig
from kdstudio.core.errors import ModelError
from kdstudio.core.evaluation import (
    METRIC_LABELS,
    quality_retained,
)
from kdstudio.core.events import Log, Stage
from kdstudio.core.loop import train_baseline
from kdstudio.core.setup import RunContext, Setup
from kdstudio.core.weight_checks import check_teacher_weights  # noqa: F401  (re-exported)


def check_teacher_figures(metrics: dict[str, Any], name: str) -> None:
    """The first measurement of the teacher must be numbers (an overflow in half precision
    gives NaN or Inf just as damaged weights do)."""
    bad = {k: v for k, v in metrics.items()
           if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k} {v}" for k, v in bad.items())
        raise ModelError(f"The teacher '{name}' gives answers that are not numbers on the "
                         f"evaluation texts ({shown}), so there is nothing to distil.",
                         hint="If teacher.dtype is float16, try 'float32' or 'bfloat16'; "
                              "otherwise the model files are damaged.")


def student_figures(group: distributed.ProcessGroup, wrapped: Any, evaluator: Any,
                    student: torch.nn.Module, su: Setup) -> tuple[dict[str, float], Any]:
    """The student's metrics (each process measures its share of the batches) and, on the
    main process, its answers to the pinned inputs."""
    with group.whole(wrapped):
        metrics = evaluator.student_metrics(student)
        return metrics, su.evaluation.pinned() if group.is_main else None


def baseline(cfg: RunConfig, su: Setup, ctx: RunContext, teacher_metrics: dict,
             after: dict) -> dict[str, Any]:
    total_steps, emit = su.training.total_steps, ctx.emit
    models, text, headline = su.models, su.data.text, su.evaluation.headline
    emit(Stage("baseline", f"the same student, {total_steps} steps of plain training"))
    n, make = su.task.batch_maker(text.train_texts, text.train_labels,
                                  source=f"'{text.source}'", **su.data.batch_args)
    student = models.student
    if ctx.group is not None and ctx.group.multi:
        # The main process trains the baseline alone, at the run's global micro-batch.
        cfg = cfg.with_overrides([f"training.batch_size="
                                  f"{cfg.training.batch_size * ctx.group.world_size}"])
    if ctx.group is not None and ctx.group.fsdp:
        # FSDP's modules cannot be copied: the same architecture, built afresh (the baseline
        # loads the starting weights into it), trained by the main process alone.
        student = type(student)(student.config).to(ctx.device)
    result = train_baseline(cfg, su.task, student, models.initial_state, models.tmodel, n, make,
                            total_steps, device=ctx.device, precision=ctx.precision,
                            autocast=ctx.autocast, evaluate=su.evaluation.evaluator.student_metrics,
                            emit=emit, stop=ctx.stop)
    if result is None:
        return {}
    metrics = result.pop("metrics")
    result["quality_retained"] = quality_retained(headline, teacher_metrics, metrics)
    # The evaluator's last measurement is the baseline's: its figures' 95% intervals.
    result["intervals"] = su.evaluation.evaluator.intervals(headline)
    label = METRIC_LABELS.get(headline, headline)
    emit(Log(f"Plain training without a teacher, same student and steps: {label} "
             f"{metrics.get(headline, float('nan')):.4g}, against {after.get(headline, float('nan')):.4g} "
             "with distillation."))
    return {"baseline_metrics": metrics, "baseline": result}
