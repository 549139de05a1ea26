"""What a run does around loop.train_steps: the micro-batches it takes (micro_batches, with
GKD's on-policy share), what follows each step on the main process (AfterStep: log, evaluate,
checkpoint), and the final measurement (final_measurement).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from kdstudio.core import artifacts
from kdstudio.core.batch import Batch
from kdstudio.core.config import RunConfig
from kdstudio.core.device import peak_memory_mb
from kdstudio.core.evaluation import quality_retained
from kdstudio.core.events import Eval, Stage, Step
from kdstudio.core.lm import on_policy_batch
from kdstudio.core.loop import StepResult
from kdstudio.core.run_group import shared_result
from kdstudio.core.run_measure import baseline, student_figures
from kdstudio.core.run_saves import save_checkpoint
from kdstudio.core.runs import Run
from kdstudio.core.setup import RunContext, Setup


def micro_batches(cfg: RunConfig, su: Setup, ctx: RunContext) -> Callable[[int], Batch]:
    """Micro-batch number i (counted from the run's start) in the run's seeded order."""
    tc, models = cfg.training, su.models

    def micro_batch(i: int) -> Batch:
        batch = su.data.make_batch(su.data.order.indices(i))
        # GKD's lambda: this share of the batches is replaced by the student's own samples.
        # The draw depends only on the seed and the micro-batch number, so a resumed run makes
        # the same choices as an uninterrupted one.
        share = cfg.method.on_policy_share
        if share <= 0 or (share < 1 and random.Random(tc.seed * 1_000_003 + i).random() >= share):
            return batch
        return on_policy_batch(models.student, models.student_tok,
                               None if models.same_tok else models.teacher.tokenizer, batch,
                               cfg.generation, cfg.data.max_length, ctx.device,
                               seed=tc.seed + i, autocast=ctx.autocast)
    return micro_batch


class AfterStep:
    """train_steps' on_step on the main process: the Step event, then an evaluation and a
    checkpoint when due (not after the last step: the end measures and saves anyway). It
    keeps the last step done and the last one saved, for the checkpoint at the end or after
    running out of memory, and the time the steps started."""

    def __init__(self, cfg: RunConfig, su: Setup, run: Run, ctx: RunContext, wrapped: Any,
                 start_step: int):
        self.tc, self.su, self.run, self.ctx, self.wrapped = cfg.training, su, run, ctx, wrapped
        self.start_step = self.done = self.last_saved = start_step
        self.t_start = time.perf_counter()

    def __call__(self, r: StepResult) -> None:
        tc, su, group, emit = self.tc, self.su, self.ctx.group, self.ctx.emit
        total_steps = su.training.total_steps
        step = self.done = r.step
        if group.multi:  # every process's share of the step: its losses averaged, rows summed
            r = shared_result(group, r)
        elapsed = time.perf_counter() - self.t_start
        emit(Step(step=step, total_steps=total_steps, losses=r.losses, lr=r.lr,
                  samples_per_s=r.samples / r.seconds, tokens_per_s=r.tokens / r.seconds,
                  memory_mb=peak_memory_mb(self.ctx.device), elapsed_s=elapsed,
                  eta_s=elapsed / (step - self.start_step) * (total_steps - step)))
        if tc.eval_every and step % tc.eval_every == 0 and step < total_steps:
            metrics, samples = student_figures(group, self.wrapped, su.evaluation.evaluator,
                                               su.models.student, su)
            emit(Eval(step=step, metrics=metrics, samples=samples))
        if tc.save_every and step % tc.save_every == 0 and step < total_steps:
            save_checkpoint(self.run, su.training.distiller, su.training.opt, step, tc, emit,
                            group, self.wrapped)
            self.last_saved = step


def final_measurement(cfg: RunConfig, su: Setup, run: Run, ctx: RunContext, wrapped: Any,
                      teacher_metrics: dict, step: int, t_start: float) -> dict[str, Any]:
    """The student's figures after the steps (every process measures its share), then, on the
    main process alone, its size and speed against the teacher's and the plain-training
    baseline if asked for. Returns the run's summary, written."""
    group, emit, models = ctx.group, ctx.emit, su.models
    evaluator, student = su.evaluation.evaluator, models.student
    emit(Stage("evaluate", "final measurement of teacher and student"))
    with group.whole(wrapped):
        after = evaluator.student_metrics(student)
        # The other processes end here; what follows the main process measures alone.
        evaluator.group = None
        emit(Eval(step=step, metrics=after, teacher_metrics=teacher_metrics,
                  samples=su.evaluation.pinned()))
        perf = artifacts.measure(evaluator, models.tmodel, student, models.teacher.tokenizer,
                                 models.student_tok, models.teacher.source, run.student_dir,
                                 cfg.evaluation.latency_repeats)
        duration = round(time.perf_counter() - t_start, 2)
        extra: dict[str, Any] = {}
        if models.initial_state is not None:
            extra = baseline(cfg, su, ctx, teacher_metrics, after)
    return run.update_summary(
        status="finished", steps=step, student_metrics=after,
        quality_retained=quality_retained(su.evaluation.headline, teacher_metrics, after),
        duration_s=duration, **perf, **extra)
