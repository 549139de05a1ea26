"""A distillation run: run_training (a new run) and resume_training (an existing one).

Read _train top to bottom: the processes (run_start), setup_run (data, teacher, student,
compatibility, objective, batches, optimizer), the run folder or the checkpoint resumed from,
measure the starting point, then the steps through loop.train_steps (nanoGPT's order: learning
rate, accumulate micro-batches, clip, step) with logging, evaluation and checkpoints after each
(run_steps.AfterStep), then the final measurement. It reports only through events. How a run
starts is in run_start, what surrounds its steps in run_steps, what it measures in
run_measure, what it saves in run_saves, and the path of a multi-process run's other processes
in run_group.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdstudio.core import artifacts, checkpoints, distributed
from kdstudio.core.config import RunConfig, load_config
from kdstudio.core.dist_share import seed_process
from kdstudio.core.errors import KDStudioError, RunError, StoppedError
from kdstudio.core.events import (
    Eval,
    Event,
    EventSink,
    Failed,
    Finished,
    Log,
    Stage,
    ignore,
)
from kdstudio.core.health import conclude, watch_for, watched
from kdstudio.core.loop import train_steps
from kdstudio.core.run_group import follow_steps
from kdstudio.core.run_measure import (
    check_teacher_figures,
    check_teacher_weights,
    student_figures,
)
from kdstudio.core.run_saves import out_of_memory, save_checkpoint, student_state
from kdstudio.core.run_start import announce, open_run, start_processes, wrap_student
from kdstudio.core.run_steps import AfterStep, final_measurement, micro_batches
from kdstudio.core.runs import Run
from kdstudio.core.setup import setup_run
from kdstudio.core.setup import check_stop as _check_stop


@dataclass
class RunResult:
    status: str  # "finished" or "stopped"
    run_dir: Path
    summary: dict[str, Any]


def run_training(config: RunConfig, on_event: EventSink | None = None, stop: Any = None, *,
                 resume: str | Path | None = None, checkpoint: str = "") -> RunResult:
    """Distill config.teacher into a student; returns when finished or stopped.

    ``stop`` is anything with ``is_set()`` (a threading.Event); it is checked every step and
    leaves a checkpoint behind. ``resume`` (a run folder) continues that run instead, as
    resume_training does. Errors are reported as a Failed event and then raised.
    """
    if resume is not None:
        return resume_training(resume, on_event, stop, checkpoint=checkpoint)
    return _guarded(lambda r: _preflight(config.validate()), on_event, stop)


def _preflight(config: RunConfig) -> RunConfig:
    """Refuse what the config files alone show to be wrong, before any data or weights load."""
    from kdstudio.core.preflight import preflight

    preflight(config)
    return config


def resume_training(run_dir: str | Path, on_event: EventSink | None = None,
                    stop: Any = None, *, checkpoint: str = "") -> RunResult:
    """Continue a stopped or interrupted run from its latest intact checkpoint (or the one
    named, e.g. 'step-40'), in its own folder."""
    def open_existing(runs: "_RunHolder") -> RunConfig:
        r = Run(Path(run_dir))
        if not r.config_path.exists():
            raise RunError(f"'{run_dir}' is not a KD Studio run folder (it has no config.toml).",
                           hint="Give a run folder, or a name from 'kdstudio runs'.")
        config = _preflight(load_config(r.config_path))
        if r.latest_checkpoint() is None:
            raise RunError(f"The run '{r.path.name}' has no checkpoint to resume from.",
                           hint="Start it again with 'kdstudio run'.")
        runs.checkpoints = checkpoints.resume_candidates(r, checkpoint)
        runs.status_before = r.status()
        runs.open(r)
        if not runs.silent:
            r.update_summary(status="running", pid=os.getpid())
        return config
    return _guarded(open_existing, on_event, stop)


class _RunHolder:
    """The run folder once it exists; events from before it are kept and written then."""

    def __init__(self, on_event: EventSink, silent: bool = False):
        self.run: Run | None = None
        # A process other than the main one of a multi-process run writes nothing, says nothing.
        self.silent = silent
        self.checkpoints: list[Path] = []  # a resume's checkpoints to try, newest first
        self.status_before = ""  # a resumed run's status, kept when its checkpoints fail
        self.pending: list[Event] = []
        self.on_event = on_event

    def emit(self, event: Event) -> None:
        if self.silent:
            return
        if self.run is not None:
            self.run.append_event(event.to_dict())
        else:
            self.pending.append(event)
        self.on_event(event)

    def open(self, run: Run) -> None:
        self.run = run
        if self.silent:
            return
        for e in self.pending:
            run.append_event(e.to_dict())
        self.pending.clear()


def _guarded(start: Any, on_event: EventSink | None, stop: Any) -> RunResult:
    """Run start (which returns the config) then the training, turning errors into events."""
    holder = _RunHolder(on_event or ignore, silent=not distributed.is_main_process())
    stop = stop or threading.Event()
    emit = holder.emit
    try:
        config = start(holder)
        return _train(config, emit, stop, holder)
    except StoppedError as exc:
        run = holder.run
        if run is not None and not holder.silent:
            run.update_summary(status="stopped")
        emit(Finished(status="stopped", run_dir=str(run.path) if run else "", summary={"message": exc.message}))
        return RunResult("stopped", run.path if run else Path(), run.summary() if run else {})
    except KDStudioError as exc:
        _fail(emit, holder.run, type(exc).__name__, exc.title, str(exc))
        if isinstance(exc, RunError) and holder.run is not None and holder.status_before \
                and not holder.silent:
            # A damaged checkpoint fails the resume, not the run: it stays resumable.
            holder.run.update_summary(status=holder.status_before)
        raise
    except torch.cuda.OutOfMemoryError:
        # Outside the steps (loading, the teacher cache pass, evaluation): nothing to keep.
        _fail(emit, holder.run, "OutOfMemoryError", "Out of GPU memory",
              "The GPU ran out of memory before or after the training steps. Hold the teacher "
              "in half precision (teacher.dtype), lower evaluation.batch_size or "
              "data.max_length, or choose smaller models.")
        raise
    except Exception as exc:
        _fail(emit, holder.run, type(exc).__name__, "Unexpected error",
              f"The run stopped on an unexpected error: {type(exc).__name__}: {exc}")
        raise


def _fail(emit: EventSink, run: Run | None, kind: str, title: str, message: str) -> None:
    if run is not None and distributed.is_main_process():
        run.update_summary(status="failed", error=message)
    emit(Failed(error_type=kind, title=title, message=message,
                run_dir=str(run.path) if run else ""))


def _train(cfg: RunConfig, emit: EventSink, stop: Any, runs: _RunHolder) -> RunResult:
    # -- setup: the processes, then data, teacher, student, objective, batches, optimizer ------
    cfg, ctx, share, shared = start_processes(cfg, emit, stop, runs.run)
    tc, group = cfg.training, ctx.group
    su = setup_run(cfg, ctx, runs.run)
    check_teacher_weights(su.models.tmodel, cfg.teacher.name)
    distiller, opt, total_steps = su.training.distiller, su.training.opt, su.training.total_steps
    evaluator, student = su.evaluation.evaluator, su.models.student
    micro_batch = micro_batches(cfg, su, ctx)
    run, start_step = open_run(cfg, su, runs, ctx, shared)  # a new folder, or a checkpoint
    wrapped, model = wrap_student(su, group, emit)
    if not group.is_main:  # the other processes take their part in the steps and write nothing
        stopped = follow_steps(cfg, su, model, wrapped, group, shared, start_step, micro_batch)
        return RunResult("stopped" if stopped else "finished", Path(), {})
    announce(cfg, su, run, ctx, share, start_step)
    # From here every event also passes the run-health watch (health.py), which answers
    # with alarms in plain words, and stops the run if the loss stops being a number.
    watch = watch_for(su.task, cfg.method, su.evaluation.headline, total_steps,
                      len(evaluator.eval_set.texts))
    ctx.emit = emit = watched(emit, watch, lambda: after_step.last_saved)

    # -- where we start from -------------------------------------------------------------------
    emit(Stage("evaluate", "teacher and student before distillation"))
    # Every process measures its share of the evaluation batches (Evaluator.each).
    teacher_metrics = evaluator.teacher_metrics()
    check_teacher_figures(teacher_metrics, cfg.teacher.name)
    if start_step == 0:
        before, samples = student_figures(group, wrapped, evaluator, student, su)
        intervals = evaluator.intervals(su.evaluation.headline)
        run.update_summary(teacher_metrics=teacher_metrics, student_metrics_before=before,
                           intervals_before=intervals)
        emit(Eval(step=0, metrics=before, teacher_metrics=teacher_metrics, samples=samples,
                  intervals=intervals))
    _check_stop(ctx.stop)

    # -- the loop: lr, accumulate, clip, step (train_steps), then log, evaluate, checkpoint ------
    after_step = AfterStep(cfg, su, run, ctx, wrapped, start_step)
    after_step.keeper.announce(emit)
    seed_process(group, tc.seed, start_step)  # the main process keeps its stream
    try:
        step, stopped = train_steps(
            distiller, micro_batch, opt, start_step=start_step, total_steps=total_steps,
            accum=tc.grad_accum_steps, stop=shared if shared is not None else stop,
            on_step=after_step, model=model if group.multi else None)
    except torch.cuda.OutOfMemoryError:
        # The failed step never reached the optimizer: keep a checkpoint of the last whole one.
        raise out_of_memory(cfg, run, distiller, opt, after_step.done, after_step.last_saved,
                            ctx.device, emit) from None

    # -- the end: checkpoint, the student folder, final measurement, the card -------------------
    if group.broadcast(step > after_step.last_saved or not run.checkpoints()):
        save_checkpoint(run, distiller, opt, step, tc, emit, group, wrapped)
    # training.keep: the best student on the validation rows, or the last (the checkpoint
    # above stays the last step's, so a resume continues from where the steps ended).
    keeper = after_step.keeper
    headline = su.evaluation.headline

    def measure_last() -> dict[str, Any]:
        return {"metrics": evaluator.student_metrics(student),
                "intervals": evaluator.intervals(headline)}
    keep = None if stopped else keeper.conclude(step, measure_last)
    if keep is not None:
        emit(Log(keep["why"]))
    emit(Stage("save student", str(run.student_dir)))
    artifacts.save_student(run.student_dir, student, su.models.student_tok, su.task,
                           su.models.teacher.source, student_state(group, wrapped))
    status = "stopped" if stopped else "finished"
    if stopped:  # a stopped run is measured when it is resumed and finishes
        summary = run.update_summary(status="stopped", steps=step)
    else:
        summary = final_measurement(cfg, su, run, ctx, wrapped, teacher_metrics, step,
                                    after_step.t_start, keep)
        keeper.tidy()
        summary = conclude(watch, summary, emit, run.update_summary)
        artifacts.write_model_card(run, summary)
    emit(Finished(status=status, run_dir=str(run.path), summary=summary))
    return RunResult(status, run.path, summary)
