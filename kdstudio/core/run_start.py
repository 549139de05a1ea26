"""A run's start, before its first step: the processes and where they compute
(start_processes), the run folder or the checkpoint a resume continues from (open_run), the
student as a group of processes trains it (wrap_student), and what the run says it is
(announce).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdstudio.core import checkpoints, distributed
from kdstudio.core.config import RunConfig
from kdstudio.core.device import autocast_for, device_label, resolve_device, resolve_precision
from kdstudio.core.dist_control import SetupStop, SharedStop, announce_run_dir
from kdstudio.core.dist_share import BatchShare, LossShare, batch_share
from kdstudio.core.events import EventSink, Log, Resumed, Started
from kdstudio.core.lm import GENERATIONS_FILE, save_generations
from kdstudio.core.models import count_params
from kdstudio.core.runs import Run, create_run
from kdstudio.core.setup import RunContext, Setup


def start_processes(cfg: RunConfig, emit: EventSink, stop: Any, run: Run | None
                    ) -> tuple[RunConfig, RunContext, BatchShare | None, SharedStop | None]:
    """The run's processes and the context they compute in. One process: distributed.SINGLE,
    and nothing after this changes. Launched by Accelerate: the group, each process with its
    share of the micro-batch. Returns the config (its batch size a process's share), the
    context, the share and the stop every process agrees on (both None for one process)."""
    tc = cfg.training
    group = distributed.start(resolve_device(tc.device))
    device = group.device(resolve_device(tc.device))
    share = None
    recorded = run.summary().get("distributed") if run is not None else None
    if group.multi or recorded:  # a resume of a multi-process run keeps its micro-batches
        share = batch_share(tc.batch_size, tc.grad_accum_steps, group.world_size, recorded)
        if share.per_process != tc.batch_size:
            cfg = cfg.with_overrides([f"training.batch_size={share.per_process}"])
        if share.note:
            emit(Log(share.note, "warning" if "cannot" in share.note else "info"))
        emit(Log(share.line()))
    precision = resolve_precision(cfg.training.precision, device, sharded=group.fsdp)
    # Several processes: the stop (and pause) every process agrees on, already during setup.
    shared = (SharedStop(group, stop, run.path if run is not None else None)
              if group.multi else None)
    ctx = RunContext(device, precision, autocast_for(device, precision), emit,
                     SetupStop(shared) if shared is not None else stop, group)
    return cfg, ctx, share, shared


def open_run(cfg: RunConfig, su: Setup, runs: Any, ctx: RunContext,
             shared: SharedStop | None) -> tuple[Run | None, int]:
    """(the run folder, the step to start from). A new run's folder is made now, by the main
    process, with the teacher's continuations of a sequence-level run; a resume loads the
    first intact of ``runs.checkpoints`` (``runs``: trainer's holder of the run folder)."""
    run, group, emit = runs.run, ctx.group, ctx.emit
    start_step = 0
    if run is None and group.is_main:
        name = cfg.name or f"{su.task.name}-{Path(str(cfg.teacher.name)).name}"
        run = create_run(cfg.to_toml(), name=name, task=su.task.name, teacher=cfg.teacher.name,
                         student=su.models.student_desc)
        runs.open(run)
        if group.multi:
            announce_run_dir(run.path)
            shared.run_dir = run.path
        if su.data.generations is not None:
            save_generations(run.path / GENERATIONS_FILE, *su.data.generations)
    elif run is not None:
        start_step, cp = checkpoints.load_first_intact(runs.checkpoints, su.training.distiller,
                                                       su.training.opt, emit)
        emit(Resumed(step=start_step, checkpoint=cp.name))
        emit(Log(f"Resumed from {cp.name}."))
        if group.multi and group.is_main:
            announce_run_dir(run.path)
    return run, start_step


def wrap_student(su: Setup, group: distributed.ProcessGroup, emit: EventSink) -> tuple[Any, Any]:
    """(wrapped, model): the distiller as the group holds it, and what the batches run through
    (both the distiller itself for one process).

    In a group the student runs through DDP (FSDP2 if Accelerate's config says so), which
    averages the gradients across processes; it starts from the main process's weights.
    FSDP2 shards it in place, with the optimizer's state; clipping then goes through
    Accelerate, which knows sharded gradients."""
    opt = su.training.opt
    wrapped = model = group.wrap(su.training.distiller, opt.optimizer,
                                 find_unused=su.task.leaves_weights_unused)
    if group.multi:
        model = LossShare(model, group)
        opt.clip = group.clip_grad_norm
        if group.fsdp:
            emit(Log(group.fsdp_line(wrapped)))
    return wrapped, model


def announce(cfg: RunConfig, su: Setup, run: Run, ctx: RunContext, share: BatchShare | None,
             start_step: int) -> None:
    """What the run is, in its summary (the Runs page and a resume read it) and in Started;
    a teacher cache records that this run reads it (so it is not deleted as unused)."""
    models, total_steps = su.models, su.training.total_steps
    t_params, s_params = count_params(models.tmodel), count_params(models.student)
    run.update_summary(status="running", device=str(ctx.device), precision=ctx.precision,
                       teacher_params=t_params, student_params=s_params, kept_layers=models.kept,
                       total_steps=total_steps, headline_metric=su.evaluation.headline,
                       label_names=su.data.text.label_names, teacher_source=models.teacher.source,
                       teacher_targets=su.targets.record(),
                       **({"distributed": share.record()} if share is not None else {}))
    if su.targets.cache is not None:
        from kdstudio.core.teacher_cache.manage import record_use

        record_use(su.targets.cache.path, run.path.name)
    ctx.emit(Started(run_dir=str(run.path), task=su.task.name, device=device_label(ctx.device),
                     precision=ctx.precision, teacher=cfg.teacher.name,
                     student=models.student_desc, teacher_params=t_params,
                     student_params=s_params, total_steps=total_steps, start_step=start_step,
                     train_samples=su.data.n_train,
                     eval_samples=len(su.evaluation.evaluator.eval_set.texts)))
