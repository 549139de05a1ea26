"""A multi-process run's side of the training: a step as the whole group took it
(shared_result), and the path of every process other than the main one (follow_steps).
"""

from __future__ import annotations

from typing import Any

import torch

from kdstudio.core import distributed
from kdstudio.core.config import RunConfig
from kdstudio.core.dist_control import SetupStop, SharedStop
from kdstudio.core.dist_share import seed_process
from kdstudio.core.events import ignore
from kdstudio.core.loop import StepResult, train_steps
from kdstudio.core.run_measure import check_teacher_figures, student_figures
from kdstudio.core.run_saves import save_checkpoint, student_state
from kdstudio.core.setup import Setup, check_stop


def shared_result(group: distributed.ProcessGroup, r: StepResult) -> StepResult:
    """A step as the whole group took it: losses averaged, rows and tokens summed."""
    samples, tokens = group.sum(r.samples, r.tokens)
    return StepResult(r.step, group.mean(r.losses), r.lr, int(samples), int(tokens), r.seconds)


def follow_steps(cfg: RunConfig, su: Setup, model: torch.nn.Module, wrapped: Any,
                 group: distributed.ProcessGroup, shared: SharedStop,
                 start_step: int, micro_batch: Any) -> bool:
    """A process other than the main one: the main process's path with nothing written or
    said. The same steps on its own shard, and the same collectives in the same order: its
    share of every evaluation, the stop checks, the averaged losses, the gathering of the
    weights and optimizer state for each checkpoint and for the student (under FSDP).
    Returns whether the run stopped."""
    tc, evaluator, student = cfg.training, su.evaluation.evaluator, su.models.student
    distiller, opt, total_steps = su.training.distiller, su.training.opt, su.training.total_steps
    check_teacher_figures(evaluator.teacher_metrics(), cfg.teacher.name)
    if start_step == 0:
        student_figures(group, wrapped, evaluator, student, su)
    check_stop(SetupStop(shared))
    last_saved = start_step

    def after_step(r: StepResult) -> None:
        nonlocal last_saved
        shared_result(group, r)
        if tc.eval_every and r.step % tc.eval_every == 0 and r.step < total_steps:
            student_figures(group, wrapped, evaluator, student, su)
        if tc.save_every and r.step % tc.save_every == 0 and r.step < total_steps:
            save_checkpoint(None, distiller, opt, r.step, tc, ignore, group, wrapped)
            last_saved = r.step

    seed_process(group, tc.seed, start_step)
    step, stopped = train_steps(
        distiller, micro_batch, opt,
        start_step=start_step, total_steps=total_steps, accum=tc.grad_accum_steps,
        stop=shared, on_step=after_step, model=model)
    if group.broadcast(None):  # the main process's word: a checkpoint at the end
        save_checkpoint(None, distiller, opt, step, tc, ignore, group, wrapped)
    student_state(group, wrapped)  # the main process saves the student
    if not stopped:
        student_figures(group, wrapped, evaluator, student, su)
    return stopped
