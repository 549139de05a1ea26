"""What a run does around loop.train_steps: the micro-batches it takes (micro_batches, with
GKD's on-policy share), what follows each step on the main process (AfterStep: log, evaluate,
checkpoint), the best student kept (KeepBest) and the final measurement (final_measurement).
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from typing import Any

from kdstudio.core.cached_teacher import cached_perf
from kdstudio.core import artifacts, checkpoints
from kdstudio.core.batch import Batch
from kdstudio.core.config import RunConfig
from kdstudio.core.device import peak_memory_mb
from kdstudio.core.evaluation import METRIC_LABELS, EvalSet, Evaluator, quality_retained
from kdstudio.core.events import Eval, Log, Stage, Step
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


class KeepBest:
    """training.keep = "best": the student measured on the validation rows at each evaluation,
    the best so far by the task's selection figure written to the run folder
    (checkpoints.save_best), and after the last step the choice between it and the last
    student (conclude). Inactive (``active`` False) without validation rows: the run keeps
    its last student, as with training.keep = "last"."""

    def __init__(self, cfg: RunConfig, su: Setup, run: Run, ctx: RunContext, start_step: int):
        self.su, self.run, self.ctx, self.mode = su, run, ctx, cfg.training.keep
        self.metric, self.higher = su.task.selection_figure()
        text, ev = su.data.text, su.evaluation.evaluator
        self.evaluator: Evaluator | None = None
        if self.mode == "best" and text.val_texts:
            dc = cfg.data
            rows = EvalSet(su.task, text.val_texts, text.val_labels,
                           max_samples=cfg.evaluation.max_samples, max_length=dc.max_length,
                           pack=dc.pack, batch_size=cfg.evaluation.batch_size)
            self.evaluator = Evaluator(su.task, rows, ev.teacher, su.models.teacher.tokenizer,
                                       su.models.student_tok, ev.device, ev.autocast,
                                       ev.vocab_size, project=ev.project)
        self.best: dict[str, Any] | None = None
        if self.evaluator is not None and start_step:
            info = checkpoints.best_info(run.path)
            # A best from beyond the checkpoint resumed from belongs to steps now redone.
            if info is not None and info["step"] <= start_step:
                self.best = info
        self.last: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return self.evaluator is not None

    def announce(self, emit: Any) -> None:
        text = self.su.data.text
        if self.active:
            emit(Log(f"Keeping the best student: {len(self.evaluator.eval_set.texts)} "
                     f"validation rows ({text.val_source}) choose it by "
                     f"{_label(self.metric)} ({'higher' if self.higher else 'lower'} is "
                     "better); the final figures are measured on the held-out rows."))
        elif self.mode == "best":
            emit(Log("training.keep is 'best', but this run has no validation rows (no "
                     "evaluations during training, data.validation_fraction 0, too few rows, "
                     "or several processes): it keeps the last student.", "warning"))

    def evaluate(self, step: int, save: bool = True) -> dict[str, float]:
        """The student's validation figures at ``step``; a new best is saved (save)."""
        assert self.evaluator is not None
        self.last = self.evaluator.student_metrics(self.su.models.student)
        if save and self._better(self.last.get(self.metric)):
            self.best = {"step": step, "metric": self.metric, "value": self.last[self.metric],
                         "validation": self.last}
            checkpoints.save_best(self.run.path, self.su.training.distiller, self.best)
        return self.last

    def _better(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best["value"] if self.higher else value < self.best["value"]

    def conclude(self, step: int, measure_last: Any) -> dict[str, Any]:
        """After the last step: its validation figures, and the student kept. When the best
        is an earlier one, ``measure_last()`` (the last student's held-out figures: {"metrics",
        "intervals"}) runs first, then the best's weights are loaded. Returns the summary's "keep" record."""
        if not self.active:
            why = ("training.keep is 'last'" if self.mode == "last"
                   else "there were no validation rows to choose by")
            return {"mode": self.mode, "step": step, "last_step": step,
                    "why": f"Kept the student of the last step ({step}): {why}."}
        last = self.evaluate(step, save=False)
        better = self._better(last.get(self.metric))
        record: dict[str, Any] = {
            "mode": "best", "metric": self.metric, "higher_is_better": self.higher,
            "validation_rows": len(self.evaluator.eval_set.texts),
            "last_step": step, "last": {"validation": last}}
        if self.best is None or better:
            record.update(step=step, best={"validation": last})
        else:
            record.update(step=self.best["step"], best={"validation": self.best["validation"]})
            record["last"].update(measure_last())
            checkpoints.load_best(self.run.path, self.su.training.distiller)
        record["why"] = _why(record)
        return record

    def tidy(self) -> None:
        """The run is finished and its student folder holds the kept student: the copy of the
        best's weights is no longer needed."""
        shutil.rmtree(self.run.path / checkpoints.BEST_DIR, ignore_errors=True)


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric).split(" (")[0].lower()


def _why(record: dict[str, Any]) -> str:
    """The kept student, and why, in one sentence."""
    metric, kept, last = record["metric"], record["step"], record["last_step"]
    rows = record["validation_rows"]
    best = record["best"]["validation"].get(metric, float("nan"))
    said = f"its {_label(metric)} on the {rows} validation rows, {best:.4g}"
    if kept == last:
        return (f"Kept the student of the last step ({last}): {said}, was the best of the "
                "evaluations.")
    at_last = record["last"]["validation"].get(metric, float("nan"))
    return (f"Kept the student of step {kept} (of {last}): {said}, was the best of the "
            f"evaluations; the last step's was {at_last:.4g}.")


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
        self.keeper = KeepBest(cfg, su, run, ctx, start_step)

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
            intervals = su.evaluation.evaluator.intervals(su.evaluation.headline)
            validation = self.keeper.evaluate(step) if self.keeper.active else {}
            emit(Eval(step=step, metrics=metrics, samples=samples, validation=validation,
                      intervals=intervals))
        if tc.save_every and step % tc.save_every == 0 and step < total_steps:
            save_checkpoint(self.run, su.training.distiller, su.training.opt, step, tc, emit,
                            group, self.wrapped)
            self.last_saved = step


def final_measurement(cfg: RunConfig, su: Setup, run: Run, ctx: RunContext, wrapped: Any,
                      teacher_metrics: dict, step: int, t_start: float,
                      keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kept student's figures after the steps (every process measures its share), then,
    on the main process alone, its size and speed against the teacher's and the
    plain-training baseline if asked for. ``keep``: KeepBest.conclude's record, completed
    here with the held-out figures of the kept and the last student. Returns the run's
    summary, written."""
    group, emit, models = ctx.group, ctx.emit, su.models
    evaluator, student = su.evaluation.evaluator, models.student
    emit(Stage("evaluate", "final measurement of teacher and student"))
    keep = keep if keep is not None else {"mode": cfg.training.keep, "step": step,
                                          "last_step": step}
    with group.whole(wrapped):
        after = evaluator.student_metrics(student)
        # The other processes end here; what follows the main process measures alone.
        evaluator.group = None
        intervals = evaluator.intervals(su.evaluation.headline)
        last = keep.setdefault("last", {})
        last.setdefault("metrics", after)
        last.setdefault("intervals", intervals)
        keep.setdefault("best", {})["metrics"] = after
        # The curve's last point is the last student's; the summary's figures the kept one's.
        emit(Eval(step=step, metrics=last["metrics"], teacher_metrics=teacher_metrics,
                  samples=su.evaluation.pinned(), validation=last.get("validation", {}),
                  intervals=last["intervals"]))
        figures = getattr(evaluator, "teacher_figures", None)  # a run without the teacher
        perf = cached_perf(evaluator, student, models.student_tok, models.teacher.source,
                           run.student_dir, cfg.evaluation.latency_repeats, figures) \
            if figures is not None else artifacts.measure(
                evaluator, models.tmodel, student, models.teacher.tokenizer, models.student_tok,
                models.teacher.source, run.student_dir, cfg.evaluation.latency_repeats)
        duration = round(time.perf_counter() - t_start, 2)
        extra: dict[str, Any] = {}
        if models.initial_state is not None:
            extra = baseline(cfg, su, ctx, teacher_metrics, after)
    return run.update_summary(
        status="finished", steps=step, student_metrics=after, keep=keep, intervals=intervals,
        quality_retained=quality_retained(su.evaluation.headline, teacher_metrics, after),
        duration_s=duration, **perf, **extra)
