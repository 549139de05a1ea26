"""A distillation run: run_training (a new run) and resume_training (an existing one).

Read it top to bottom: setup_run (device, data, teacher, student, compatibility, objective,
batches, optimizer), measure the starting point, then the steps through loop.train_steps
(nanoGPT's order: learning rate, accumulate micro-batches, clip, step) with logging,
evaluation and checkpoints after each, then the final measurement. It reports only through
events.
"""

from __future__ import annotations

import math
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
from kdstudio.core.distiller import Distiller
from kdstudio.core.errors import KDStudioError, ModelError, OutOfMemory, RunError, StoppedError
from kdstudio.core.evaluation import (
    METRIC_LABELS,
    quality_retained,
)
from kdstudio.core.events import (
    Checkpoint,
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
    Optimizer,
    StepResult,
    train_baseline,
    train_steps,
)
from kdstudio.core.models import (
    count_params,
)
from kdstudio.core.objective import Batch
from kdstudio.core.runs import Run, create_run
from kdstudio.core.setup import RunContext, Setup, setup_run
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


def _check_teacher_weights(model: torch.nn.Module, name: str) -> None:
    """A teacher with NaN or Inf in its weights answers with NaN: refuse it before any step."""
    for pname, p in model.named_parameters():
        bad = p.numel() - int(torch.isfinite(p).sum())
        if bad:
            raise ModelError(f"The teacher '{name}' has {bad:,} NaN or infinite values in its "
                             f"weights (first in '{pname}'), so its answers are not numbers and "
                             "a student cannot learn from it.",
                             hint="The model files are damaged or were saved after training "
                                  "diverged: use another copy or another checkpoint of it.")


def _check_teacher_figures(metrics: dict[str, Any], name: str) -> None:
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
        share = distributed.batch_share(tc.batch_size, tc.grad_accum_steps, group.world_size,
                                        recorded)
        if share.per_process != tc.batch_size:
            cfg = cfg.with_overrides([f"training.batch_size={share.per_process}"])
            tc = cfg.training
        if share.note:
            emit(Log(share.note, "warning" if "cannot" in share.note else "info"))
        emit(Log(share.line()))
    main = group.is_main
    precision = resolve_precision(tc.precision, device, sharded=group.fsdp)
    # Several processes: the stop (and pause) every process agrees on, already during setup.
    shared = (distributed.SharedStop(group, stop, runs.run.path if runs.run is not None else None)
              if group.multi else None)
    ctx = RunContext(device, precision, autocast_for(device, precision), emit,
                     distributed.SetupStop(shared) if shared is not None else stop, group)
    su = setup_run(cfg, ctx, runs.run)
    _check_teacher_weights(su.tmodel, cfg.teacher.name)
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
            distributed.announce_run_dir(run.path)
            shared.run_dir = run.path
        if su.generations is not None:
            save_generations(run.path / GENERATIONS_FILE, *su.generations)
    elif run is not None:
        start_step, cp = checkpoints.load_first_intact(runs.checkpoints, distiller, su.opt, emit)
        emit(Resumed(step=start_step, checkpoint=cp.name))
        emit(Log(f"Resumed from {cp.name}."))
        if group.multi and main:
            distributed.announce_run_dir(run.path)
    # In a group the student runs through DDP (FSDP2 if Accelerate's config says so), which
    # averages the gradients across processes; it starts from the main process's weights.
    # FSDP2 shards it in place, with the optimizer's state; clipping then goes through
    # Accelerate, which knows sharded gradients.
    wrapped = model = group.wrap(distiller, su.opt.optimizer,
                                 find_unused=task.leaves_weights_unused)
    if group.multi:
        model = distributed.LossShare(model, group)
        su.opt.clip = group.clip_grad_norm
        if group.fsdp:
            emit(Log(group.fsdp_line(wrapped)))
    if not main:  # the other processes take their part in the steps and write nothing
        return _follow_steps(cfg, su, model, wrapped, group, shared, start_step, micro_batch)
    t_params, s_params = count_params(su.tmodel), count_params(student)
    total_steps = su.total_steps
    run.update_summary(status="running", device=str(device), precision=precision,
                       teacher_params=t_params, student_params=s_params, kept_layers=su.kept,
                       total_steps=total_steps, headline_metric=su.headline,
                       label_names=su.data.label_names, teacher_source=t_source,
                       teacher_targets=su.targets_record(),
                       **({"distributed": share.record()} if share is not None else {}))
    if su.cache is not None:
        from kdstudio.core.teacher_cache.store import record_use

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
    _check_teacher_figures(teacher_metrics, cfg.teacher.name)
    if start_step == 0:
        before, samples = _student_figures(group, wrapped, evaluator, student, su)
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
            r = _shared_result(group, r)
        elapsed = time.perf_counter() - t_start
        emit(Step(step=step, total_steps=total_steps, losses=r.losses, lr=r.lr,
                  samples_per_s=r.samples / r.seconds, tokens_per_s=r.tokens / r.seconds,
                  memory_mb=peak_memory_mb(device), elapsed_s=elapsed,
                  eta_s=elapsed / (step - start_step) * (total_steps - step)))
        if tc.eval_every and step % tc.eval_every == 0 and step < total_steps:
            metrics, samples = _student_figures(group, wrapped, evaluator, student, su)
            emit(Eval(step=step, metrics=metrics, samples=samples))
        if tc.save_every and step % tc.save_every == 0 and step < total_steps:
            _save_checkpoint(run, distiller, su.opt, step, tc, emit, group, wrapped)
            last_saved = step

    distributed.seed_process(group, tc.seed, start_step)  # the main process keeps its stream
    try:
        step, stopped = train_steps(
            distiller, micro_batch, su.opt,
            start_step=start_step, total_steps=total_steps, accum=accum,
            stop=shared if shared is not None else stop,
            on_step=after_step, model=model if group.multi else None)
    except torch.cuda.OutOfMemoryError:
        raise _out_of_memory(cfg, run, distiller, su.opt, done, last_saved, device, emit) from None

    # -- the end: checkpoint, final measurement, the student folder, the card -------------------
    if group.broadcast(step > last_saved or not run.checkpoints()):
        _save_checkpoint(run, distiller, su.opt, step, tc, emit, group, wrapped)
    emit(Stage("save student", str(run.student_dir)))
    artifacts.save_student(run.student_dir, student, su.student_tok, task, t_source,
                           _student_state(group, wrapped))
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
            extra = _baseline(cfg, su, ctx, teacher_metrics, after)
    summary = run.update_summary(
        status="finished", steps=step, student_metrics=after,
        quality_retained=quality_retained(su.headline, teacher_metrics, after),
        duration_s=duration, **perf, **extra)
    artifacts.write_model_card(run, summary)
    emit(Finished(status="finished", run_dir=str(run.path), summary=summary))
    return RunResult("finished", run.path, summary)


def _shared_result(group: distributed.ProcessGroup, r: StepResult) -> StepResult:
    """A step as the whole group took it: losses averaged, rows and tokens summed."""
    samples, tokens = group.sum(r.samples, r.tokens)
    return StepResult(r.step, group.mean(r.losses), r.lr, int(samples), int(tokens), r.seconds)


def _student_figures(group: distributed.ProcessGroup, wrapped: Any, evaluator: Any,
                     student: torch.nn.Module, su: Setup) -> tuple[dict[str, float], Any]:
    """The student's metrics (each process measures its share of the batches) and, on the
    main process, its answers to the pinned inputs."""
    with group.whole(wrapped):
        metrics = evaluator.student_metrics(student)
        return metrics, su.pinned() if group.is_main else None


def _follow_steps(cfg: RunConfig, su: Setup, model: torch.nn.Module, wrapped: Any,
                  group: distributed.ProcessGroup, shared: distributed.SharedStop,
                  start_step: int, micro_batch: Any) -> RunResult:
    """A process other than the main one: the main process's path with nothing written or
    said. The same steps on its own shard, and the same collectives in the same order: its
    share of every evaluation, the stop checks, the averaged losses, the gathering of the
    weights and optimizer state for each checkpoint and for the student (under FSDP)."""
    tc, distiller, evaluator, student = cfg.training, su.distiller, su.evaluator, su.student
    _check_teacher_figures(evaluator.teacher_metrics(), cfg.teacher.name)
    if start_step == 0:
        _student_figures(group, wrapped, evaluator, student, su)
    _check_stop(distributed.SetupStop(shared))
    last_saved = start_step

    def after_step(r: StepResult) -> None:
        nonlocal last_saved
        _shared_result(group, r)
        if tc.eval_every and r.step % tc.eval_every == 0 and r.step < su.total_steps:
            _student_figures(group, wrapped, evaluator, student, su)
        if tc.save_every and r.step % tc.save_every == 0 and r.step < su.total_steps:
            _save_checkpoint(None, distiller, su.opt, r.step, tc, ignore, group, wrapped)
            last_saved = r.step

    distributed.seed_process(group, tc.seed, start_step)
    step, stopped = train_steps(
        distiller, micro_batch, su.opt,
        start_step=start_step, total_steps=su.total_steps, accum=tc.grad_accum_steps,
        stop=shared, on_step=after_step, model=model)
    if group.broadcast(None):  # the main process's word: a checkpoint at the end
        _save_checkpoint(None, distiller, su.opt, step, tc, ignore, group, wrapped)
    _student_state(group, wrapped)  # the main process saves the student
    if not stopped:
        _student_figures(group, wrapped, evaluator, student, su)
    return RunResult("stopped" if stopped else "finished", Path(), {})


def _out_of_memory(cfg: RunConfig, run: Run, distiller: Distiller, opt: Optimizer, done: int,
                   last_saved: int, device: torch.device, emit: EventSink) -> OutOfMemory:
    """Out of memory during the steps: keep a checkpoint of the last whole step, and say what
    to change. The failed step never reached the optimizer, so the weights are those of
    step ``done``."""
    from kdstudio.core.plan.memory import oom_advice

    opt.optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    kept = ""
    if done > last_saved or (done and not run.checkpoints()):
        try:
            _save_checkpoint(run, distiller, opt, done, cfg.training, emit)
        except Exception as exc:  # noqa: BLE001 - still report the memory problem
            emit(Log(f"The checkpoint after running out of memory could not be saved: {exc}",
                     "warning"))
    latest = run.latest_checkpoint()
    if latest is not None:
        kept = (f" The run kept a checkpoint of step {done} ({latest.name}): change the settings "
                f"in {run.config_path} and continue with 'kdstudio resume {run.path.name}' "
                "(or Resume on the Runs page).")
    advice = oom_advice(cfg, str(device))
    where = "the GPU" if device.type == "cuda" else str(device)
    tips = "; or ".join(advice[:3]) if advice else "choose a smaller teacher or student"
    return OutOfMemory(f"{where} ran out of memory at step {done + 1}. To fit, {tips}.{kept}")


def _baseline(cfg: RunConfig, su: Setup, ctx: RunContext, teacher_metrics: dict,
              after: dict) -> dict[str, Any]:
    total_steps, emit = su.total_steps, ctx.emit
    emit(Stage("baseline", f"the same student, {total_steps} steps of plain training"))
    n, make = su.task.batch_maker(su.data.train_texts, su.data.train_labels,
                                  source=f"'{su.data.source}'", **su.batch_args)
    student = su.student
    if ctx.group is not None and ctx.group.multi:
        # The main process trains the baseline alone, at the run's global micro-batch.
        cfg = cfg.with_overrides([f"training.batch_size="
                                  f"{cfg.training.batch_size * ctx.group.world_size}"])
    if ctx.group is not None and ctx.group.fsdp:
        # FSDP's modules cannot be copied: the same architecture, built afresh (the baseline
        # loads the starting weights into it), trained by the main process alone.
        student = type(student)(student.config).to(ctx.device)
    result = train_baseline(cfg, su.task, student, su.initial_state, su.tmodel, n, make,
                            total_steps, device=ctx.device, precision=ctx.precision,
                            autocast=ctx.autocast, evaluate=su.evaluator.student_metrics,
                            emit=emit, stop=ctx.stop)
    if result is None:
        return {}
    metrics = result.pop("metrics")
    result["quality_retained"] = quality_retained(su.headline, teacher_metrics, metrics)
    label = METRIC_LABELS.get(su.headline, su.headline)
    emit(Log(f"Plain training without a teacher, same student and steps: {label} "
             f"{metrics.get(su.headline, float('nan')):.4g}, against {after.get(su.headline, float('nan')):.4g} "
             "with distillation."))
    return {"baseline_metrics": metrics, "baseline": result}


def _save_checkpoint(run: Run | None, distiller: Distiller, opt: Optimizer, step: int, tc: Any,
                     emit: EventSink, group: distributed.ProcessGroup = distributed.SINGLE,
                     wrapped: Any = None) -> None:
    """A checkpoint of the whole run, written by the main process. Under FSDP every process
    takes part: the optimizer's state and the weights are gathered from the shards, so the
    checkpoint is the one a single process writes, and resumes with any number of processes."""
    state = group.optimizer_state(wrapped, opt.optimizer)
    weights = group.full_state(wrapped)
    if run is None:  # another process than the main one
        return
    path = checkpoints.save(run.checkpoints_dir, step, distiller, opt.optimizer, opt.scheduler,
                            opt.scaler, keep=tc.keep_checkpoints, optimizer_state=state,
                            model_state=weights)
    emit(Checkpoint(step=step, path=str(path)))


def _student_state(group: distributed.ProcessGroup, wrapped: Any) -> dict[str, Any] | None:
    """Under FSDP the student's whole weights for its folder (gathered by every process, held
    by the main one); None otherwise: the student's own are whole."""
    full = group.full_state(wrapped)
    if full is None:
        return None
    return {k.removeprefix("student."): v for k, v in full.items() if k.startswith("student.")}
