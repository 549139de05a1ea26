"""The one training loop, train_steps, and what it needs: the optimizer and its schedule.

The distillation run, the plain-training baseline and the classification teacher's
preparation all train through train_steps, so accumulation, clipping, the fp16 grad scaler,
stop checks and timing behave the same everywhere. What each caller does after a step
(events, evaluation, checkpoints) it says in its on_step callback.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch

from kdstudio.core.distiller import Distiller
from kdstudio.core.batch import Batch

MakeBatch = Callable[[list[int]], Batch]


def batch_maker(task: Any, texts: list[str], labels: list[int] | None, **kw: Any) -> tuple[int, MakeBatch]:
    """(number of training items, a function from item indices to a Batch): the task's own."""
    from kdstudio.core.tasks import get_task

    return get_task(task).batch_maker(texts, labels, **kw)


def make_optimizer(module: torch.nn.Module, *, lr: float, weight_decay: float, scheduler: str,
                   warmup_steps: int, total_steps: int, device: torch.device, precision: str,
                   decay_norms: bool = False) -> tuple[Any, Any, Any]:
    """AdamW, the schedule, and the fp16 grad scaler.

    Biases and norms get no weight decay unless ``decay_norms`` (the teacher's preparation,
    plain fine-tuning, decays everything). Fused AdamW on CUDA: one kernel for all parameters.
    """
    from transformers import get_scheduler

    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if decay_norms:
        groups = [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    else:
        decay = [p for n, p in params if p.ndim >= 2 and "norm" not in n.lower()]
        no_decay = [p for n, p in params if p.ndim < 2 or "norm" in n.lower()]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=device.type == "cuda")
    sched = get_scheduler(scheduler, optimizer, num_warmup_steps=warmup_steps,
                          num_training_steps=total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return optimizer, sched, scaler


def run_optimizer(distiller: Distiller, tc: Any, total_steps: int, device: torch.device,
                  precision: str) -> tuple[Any, Any, Any]:
    """The optimizer of a distillation run (and its baseline), from [training]."""
    return make_optimizer(distiller, lr=tc.learning_rate, weight_decay=tc.weight_decay,
                          scheduler=tc.scheduler, warmup_steps=int(tc.warmup_ratio * total_steps),
                          total_steps=total_steps, device=device, precision=precision)


@dataclasses.dataclass
class StepResult:
    step: int                 # the optimizer step just taken (1-based)
    losses: dict[str, float]  # each term's value, averaged over the micro-batches
    lr: float
    samples: int
    tokens: int
    seconds: float            # wall time of this step


@dataclasses.dataclass
class Optimizer:
    """What an optimizer step needs besides the batches."""

    optimizer: Any
    scheduler: Any
    scaler: Any
    max_grad_norm: float
    autocast: Callable[[], Any]
    # How gradients are clipped: torch's clip_grad_norm_, or in a multi-process run
    # Accelerate's (distributed.ProcessGroup.clip_grad_norm), which knows sharded gradients.
    clip: Callable[[Any, float], Any] | None = None


def accumulate(distiller: Distiller, batches: Any, accum: int, scaler: Any,
               autocast: Callable[[], Any]) -> tuple[dict[str, float], int, int]:
    """Forward and backward ``accum`` micro-batches, summing their gradients into .grad.
    Returns (each term's value averaged over the micro-batches, samples, tokens)."""
    sums: dict[str, float] = {}
    samples = tokens = 0
    for batch in batches:
        with autocast():
            loss, parts = distiller(batch)
        # Dividing by accum makes the summed gradients an average over the micro-batches:
        # the same gradient as one batch accum times the size, at a micro-batch's memory.
        scaler.scale(loss / accum).backward()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v / accum
        samples += batch.size
        tokens += batch.tokens
    return sums, samples, tokens


def optimizer_step(distiller: Distiller, batches: Any, accum: int, opt: Optimizer,
                   model: Any = None) -> tuple[dict[str, float], float, int, int]:
    """Accumulate gradients over ``accum`` micro-batches, clip, step, advance the schedule.
    ``model`` is what the batches run through when it is not the distiller itself (the
    distiller wrapped in DDP in a multi-process run, which averages the gradients).
    Returns (losses, lr, samples, tokens)."""
    sums, samples, tokens = accumulate(model if model is not None else distiller, batches, accum,
                                       opt.scaler, opt.autocast)
    if opt.max_grad_norm > 0:
        opt.scaler.unscale_(opt.optimizer)
        clip = opt.clip or torch.nn.utils.clip_grad_norm_
        clip(distiller.trainable_parameters(), opt.max_grad_norm)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.optimizer.zero_grad(set_to_none=True)
    lr = opt.scheduler.get_last_lr()[0]
    opt.scheduler.step()
    return sums, lr, samples, tokens


def train_steps(distiller: Distiller, micro_batch: Callable[[int], Batch], opt: Optimizer, *,
                start_step: int, total_steps: int, accum: int, stop: Any,
                on_step: Callable[[StepResult], None] | None = None,
                model: Any = None) -> tuple[int, bool]:
    """Optimizer steps start_step+1 .. total_steps; returns (last step, whether stopped).

    ``micro_batch(i)`` gives micro-batch number i (counted from the run's start, so a
    resumed run sees the very batches an uninterrupted one would). ``stop`` is checked
    before every step (in a multi-process run a dist_control.SharedStop, whose check every
    process makes together). ``model``: see optimizer_step.
    """
    device = next(distiller.student.parameters()).device
    step = start_step
    while step < total_steps:
        if stop.is_set():
            return step, True
        t0 = time.perf_counter()
        first = step * accum
        losses, lr, samples, tokens = optimizer_step(
            distiller, (micro_batch(first + i) for i in range(accum)), accum, opt, model)
        step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if on_step is not None:
            on_step(StepResult(step, losses, lr, samples, tokens, time.perf_counter() - t0))
    return step, False


def train_baseline(cfg: Any, task: Any, student: torch.nn.Module, initial_state: dict[str, torch.Tensor],
                   teacher: torch.nn.Module, n_train: int, make_batch: MakeBatch, total_steps: int,
                   *, device: torch.device, precision: str, autocast: Callable[[], Any],
                   evaluate: Callable[[torch.nn.Module], dict[str, float]], emit: Any,
                   stop: Any) -> dict[str, Any] | None:
    """The same student from the same starting weights, trained for the same steps on the same
    real data with the task's plain loss alone: what it reaches without a teacher.
    Returns its metrics and cost, or None when stopped."""
    import copy

    from kdstudio.core.data import BatchOrder
    from kdstudio.core.events import Log, Progress
    from kdstudio.core.objective import plain_method

    tc = cfg.training
    base = copy.deepcopy(student)
    base.load_state_dict(initial_state)
    base.train()
    distiller = Distiller(task, plain_method(cfg.method, task), teacher, base,
                          chunk=tc.logit_chunk).to(device)
    optimizer, scheduler, scaler = run_optimizer(distiller, tc, total_steps, device, precision)
    opt = Optimizer(optimizer, scheduler, scaler, tc.max_grad_norm, autocast)
    order = BatchOrder(n_train, min(tc.batch_size, n_train), tc.seed)
    t0 = time.perf_counter()
    _, stopped = train_steps(
        distiller, lambda i: make_batch(order.indices(i)), opt, start_step=0,
        total_steps=total_steps, accum=tc.grad_accum_steps, stop=stop,
        on_step=lambda r: emit(Progress("baseline", r.step, total_steps, "steps",
                                        {"loss": r.losses["total"]})))
    if stopped:
        emit(Log("Stopped during the plain-training baseline; the distilled student is "
                 "complete, the baseline is left out.", "warning"))
        return None
    metrics = evaluate(base)
    return {"metrics": metrics, "steps": total_steps,
            "duration_s": round(time.perf_counter() - t0, 2)}
