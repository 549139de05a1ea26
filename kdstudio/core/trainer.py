"""A distillation run: run_training (a new run) and resume_training (an existing one).

Read it top to bottom: setup_run (device, data, teacher, student, compatibility, objective,
batches, optimizer), measure the starting point, then the steps through loop.train_steps
(nanoGPT's order: learning rate, accumulate micro-batches, clip, step) with logging,
evaluation and checkpoints after each, then the final measurement. It reports only through
events. What it measures is in run_measure, what it saves in run_saves, and the path of a
multi-process run's other processes in run_group.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdstudio.core import artifacts, checkpoints, distributed
from kdstudio.core.config import RunConfig, load_config
from kdstudio.core.device import (
    autocast_for,
    device_label,
    peak_memory_mb,
    resolve_device,
    resolve_precision,
)
from kdstudio.core.dist_control import SetupStop, SharedStop, announce_run_dir
from kdstudio.core.dist_share import LossShare, batch_share, seed_process
from kdstudio.core.errors import KDStudioError, RunError, StoppedError
from kdstudio.core.evaluation import quality_retained
from kdstudio.core.events import (
    Eval,
    Event,
    EventSink,
    Failed,
    Finished,
    Log,
    Resumed,
    Stage,
    Started,
    Step,
    ignore,
)
from kdstudio.core.lm import (
    GENERATIONS_FILE,
    on_policy_batch,
    save_generations,
)
from kdstudio.core.loop import (
    StepResult,
    train_steps,
)
from kdstudio.core.models import (
    count_params,
)
from kdstudio.core.objective import Batch
from kdstudio.core.run_group import follow_steps, shared_result
from kdstudio.core.run_measure import (
    baseline,
    check_teacher_figures,
    check_teacher_weights,
    student_figures,
)
from kdstudio.core.run_saves import out_of_memory, save_checkpoint, student_state
from kdstudio.core.runs import Run, create_run
from kdstudio.core.setup import RunContext, setup_run
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
    tc = cfg.training
    # One process: SINGLE, and nothing below changes. Launched by Accelerate: the group.
    group = distributed.start(resolve_device(tc.device))
    device = group.device(resolve_device(tc.device))
    share = None
    recorded = runs.run.summary().get("distributed") if runs.run is not None else None
    if group.multi or recorded:  # a resume of a multi-process run keeps its micro-batches
        share = batch_share(tc.batch_size, tc.grad_accum_steps, group.world_size, recorded)
        if share.per_process != tc.batch_size:
            cfg = cfg.with_overrides([f"training.batch_size={share.per_process}"])
            tc = cfg.training
        if share.note:
            emit(Log(share.note, "warning" if "cannot" in share.note else "info"))
        emit(Log(share.line()))
    main = group.is_main
    precision = resolve_precision(tc.precision, device, sharded=group.fsdp)
    # Several processes: the stop (and pause) every process agrees on, already during setup.
    shared = (SharedStop(group, stop, runs.run.path if runs.run is not None else None)
              if group.multi else None)
    ctx = RunContext(device, precision, autocast_for(device, precision), emit,
                     SetupStop(shared) if shared is not None else stop, group)
    su = setup_run(cfg, ctx, runs.run)
    check_teacher_weights(su.tmodel, cfg.teacher.name)
    task, student, distiller, evaluator = su.task, su.student, su.distiller, su.evaluator
    t_source = su.teacher.source

    def maybe_on_policy(batch: Batch, micro: int) -> Batch:
        """GKD's lambda: this share of the batches is replaced by the student's own samples.
        The draw depends only on the seed and the micro-batch number, so a resumed run makes
        the same choices as an uninterrupted one."""
        share = cfg.method.on_policy_share
        if share <= 0 or (share < 1 and random.Random(tc.seed * 1_000_003 + micro).random() >= share):
            return batch
        return on_policy_batch(student, su.student_tok,
                               None if su.same_tok else su.teacher.tokenizer, batch,
                               cfg.generation, cfg.data.max_length, device,
                               seed=tc.seed + micro, autocast=ctx.autocast)

    def micro_batch(i: int) -> Batch:
        return maybe_on_policy(su.make_batch(su.order.indices(i)), i)

    # -- the run folder, or the checkpoint we resume from ---------------------------------------
    run = runs.run
    start_step = 0
    if run is None and main:
        name = cfg.name or f"{task.name}-{Path(str(cfg.teacher.name)).name}"
        run = create_run(cfg.to_toml(), name=name, task=task.name, teacher=cfg.teacher.name,
                         student=su.student_desc)
        runs.open(run)
        if group.multi:
            announce_run_dir(run.path)
            shared.run_dir = run.path
        if su.generations is not None:
            save_generations(run.path / GENERATIONS_FILE, *su.generations)
    elif run is not None:
        start_step, cp = checkpoints.load_first_intact(runs.checkpoints, distiller, su.opt, emit)
        emit(Resumed(step=start_step, checkpoint=cp.name))
        emit(Log(f"Resumed from {cp.name}."))
        if group.multi and main:
            announce_run_dir(run.path)
    # In a group the student runs through DDP (FSDP2 if Accelerate's config says so), which
    # averages the gradients across processes; it starts from the main process's weights.
    # FSDP2 shards it in place, with the optimizer's state; clipping then goes through
    # Accelerate, which knows sharded gradients.
    wrapped = model = group.wrap(distiller, su.opt.optimizer,
                                 find_unused=task.leaves_weights_unused)
    if group.multi:
        model = LossShare(model, group)
        su.opt.clip = group.clip_grad_norm
        if group.fsdp:
            emit(Log(group.fsdp_line(wrapped)))
    if not main:  # the other processes take their part in the steps and write nothing
        stopped = follow_steps(cfg, su, model, wrapped, group, shared, start_step, micro_batch)
        return RunResult("stopped" if stopped else "finished", Path(), {})
    t_params, s_params = count_params(su.tmodel), count_params(student)
    total_steps = su.total_steps
    run.update_summary(status="running", device=str(device), precision=precision,
                       teacher_params=t_params, student_params=s_params, kept_layers=su.kept,
                       total_steps=total_steps, headline_metric=su.headline,
                       label_names=su.data.label_names, teacher_source=t_source,
                       teacher_targets=su.targets_record(),
                       **({"distributed": share.record()} if share is not None else {}))
    if su.cache is not None:
        from kdstudio.core.teacher_cache.manage import record_use

        record_use(su.cache.path, run.path.name)
    emit(Started(run_dir=str(run.path), task=task.name, device=device_label(device),
                 precision=precision, teacher=cfg.teacher.name, student=su.student_desc,
                 teacher_params=t_params, student_params=s_params, total_steps=total_steps,
                 start_step=start_step, train_samples=su.n_train,
                 eval_samples=len(evaluator.eval_set.texts)))

    # -- where we start from -------------------------------------------------------------------
    emit(Stage("evaluate", "teacher and student before distillation"))
    # Every process measures its share of the evaluation batches (Evaluator.each).
    teacher_metrics = evaluator.teacher_metrics()
    check_teacher_figures(teacher_metrics, cfg.teacher.name)
    if start_step == 0:
        before, samples = student_figures(group, wrapped, evaluator, student, su)
        run.update_summary(teacher_metrics=teacher_metrics, student_metrics_before=before)
        emit(Eval(step=0, metrics=before, teacher_metrics=teacher_metrics, samples=samples))
    _check_stop(ctx.stop)

    # -- the loop: lr, accumulate, clip, step (train_steps), then log, evaluate, checkpoint ------
    accum = tc.grad_accum_steps
    t_start = time.perf_counter()
    last_saved = done = start_step

    def after_step(r: StepResult) -> None:
        nonlocal last_saved, done
        step = done = r.step
        if group.multi:  # every process's share of the step: its losses averaged, rows summed
            r = shared_result(group, r)
        elapsed = time.perf_counter() - t_start
        emit(Step(step=step, total_steps=total_steps, losses=r.losses, lr=r.lr,
                  samples_per_s=r.samples / r.seconds, tokens_per_s=r.tokens / r.seconds,
                  memory_mb=peak_memory_mb(device), elapsed_s=elapsed,
                  eta_s=elapsed / (step - start_step) * (total_steps - step)))
        if tc.eval_every and step % tc.eval_every == 0 and step < total_steps:
            metrics, samples = student_figures(group, wrapped, evaluator, student, su)
            emit(Eval(step=step, metrics=metrics, samples=samples))
        if tc.save_every and step % tc.save_every == 0 and step < total_steps:
            save_checkpoint(run, distiller, su.opt, step, tc, emit, group, wrapped)
            last_saved = step

    seed_process(group, tc.seed, start_step)  # the main process keeps its stream
    try:
        step, stopped = train_steps(
            distiller, micro_batch, su.opt,
            start_step=start_step, total_steps=total_steps, accum=accum,
            stop=shared if shared is not None else stop,
            on_step=after_step, model=model if group.multi else None)
    except torch.cuda.OutOfMemoryError:
        raise out_of_memory(cfg, run, distiller, su.opt, done, last_saved, device, emit) from None

    # -- the end: checkpoint, final measurement, the student folder, the card -------------------
    if group.broadcast(step > last_saved or not run.checkpoints()):
        save_checkpoint(run, distiller, su.opt, step, tc, emit, group, wrapped)
    emit(Stage("save student", str(run.student_dir)))
    artifacts.save_student(run.student_dir, student, su.student_tok, task, t_source,
                           student_state(group, wrapped))
    if stopped:
        summary = run.update_summary(status="stopped", steps=step)
        emit(Finished(status="stopped", run_dir=str(run.path), summary=summary))
        return RunResult("stopped", run.path, summary)

    emit(Stage("evaluate", "final measurement of teacher and student"))
    with group.whole(wrapped):
        after = evaluator.student_metrics(student)
        # The other processes end here; what follows the main process measures alone.
        evaluator.group = None
        emit(Eval(step=step, metrics=after, teacher_metrics=teacher_metrics, samples=su.pinned()))
        perf = artifacts.measure(evaluator, su.tmodel, student, su.teacher.tokenizer,
                                 su.student_tok, t_source, run.student_dir,
                                 cfg.evaluation.latency_repeats)
        duration = round(time.perf_counter() - t_start, 2)
        extra: dict[str, Any] = {}
        if su.initial_state is not None:
            extra = baseline(cfg, su, ctx, teacher_metrics, after)
    summary = run.update_summary(
        status="finished", steps=step, student_metrics=after,
        quality_retained=quality_retained(su.headline, teacher_metrics, after),
        duration_s=duration, **perf, **extra)
    artifacts.write_model_card(run, summary)
    emit(Finished(status="finished", run_dir=str(run.path), summary=summary))
    return RunResult("finished", run.path, summary)
