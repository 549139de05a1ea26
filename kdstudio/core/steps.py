"""The pieces of a training step the loop and the plain-training baseline share: how batches
are made, the optimizer and its schedule, and one optimizer step over accumulated
micro-batches."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .data import BatchOrder, causal_blocks, collate_blocks, encode
from .distill import Batch, Distiller
from .errors import KDStudioError
from .events import EventSink, Log, Progress
from .lm import text_batch

MakeBatch = Callable[[list[int]], Batch]


def batch_maker(task: str, texts: list[str], labels: list[int] | None, *, student_tok: Any,
                teacher_tok: Any, same_tok: bool, max_length: int, pack: bool,
                device: torch.device, prompt_chars: list[int] | None = None,
                source: str = "the data") -> tuple[int, MakeBatch]:
    """(number of training items, a function from item indices to a Batch)."""
    if task == "causal-lm" and (prompt_chars is not None or not same_tok):
        # From text: the prompt is context only, or the teacher tokenizes the text its own way.
        chars = prompt_chars or [0] * len(texts)
        t_tok = None if same_tok else teacher_tok
        return len(texts), lambda idx: text_batch(
            [texts[i] for i in idx], [chars[i] for i in idx], student_tok, t_tok, max_length, device)
    if task == "causal-lm":
        blocks = causal_blocks(student_tok, texts, max_length, pack)
        if not blocks:
            raise KDStudioError(f"After tokenizing, {source} gives no training sequences of two "
                                "or more tokens.")

        def make_blocks(idx: list[int]) -> Batch:
            b = collate_blocks([blocks[i] for i in idx], student_tok.pad_token_id)
            b = {k: v.to(device) for k, v in b.items()}
            return Batch(b, b, None, int(b["attention_mask"].sum()), len(idx))
        return len(blocks), make_blocks

    def make_texts(idx: list[int]) -> Batch:
        chunk = [texts[i] for i in idx]
        s = {k: v.to(device) for k, v in encode(student_tok, chunk, max_length).items()}
        t = s if same_tok else {k: v.to(device) for k, v in encode(teacher_tok, chunk, max_length).items()}
        y = torch.tensor([labels[i] for i in idx], device=device) if labels is not None else None
        return Batch(s, t, y, int(s["attention_mask"].sum()), len(idx))
    return len(texts), make_texts


def make_optimizer(distiller: Distiller, tc: Any, total_steps: int, device: torch.device,
                   precision: str) -> tuple[Any, Any, Any]:
    """AdamW (no weight decay on biases and norms), the schedule, and the fp16 grad scaler."""
    from transformers import get_scheduler

    decay, no_decay = [], []
    for name, p in distiller.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=tc.learning_rate, fused=device.type == "cuda")
    scheduler = get_scheduler(tc.scheduler, optimizer,
                              num_warmup_steps=int(tc.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return optimizer, scheduler, scaler


@dataclasses.dataclass
class StepResult:
    losses: dict[str, float]
    lr: float
    samples: int
    tokens: int


def optimizer_step(distiller: Distiller, batches: Iterable[Batch], accum: int, optimizer: Any,
                   scheduler: Any, scaler: Any, max_grad_norm: float,
                   autocast: Callable[[], Any]) -> StepResult:
    """Accumulate gradients over ``accum`` micro-batches, clip, step, advance the schedule."""
    sums: dict[str, float] = {}
    samples = tokens = 0
    for batch in batches:
        with autocast():
            loss, parts = distiller(batch)
        # Dividing by accum makes the summed gradients an average over the micro-batches.
        scaler.scale(loss / accum).backward()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v / accum
        samples += batch.size
        tokens += batch.tokens
    if max_grad_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(distiller.trainable_parameters(), max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    lr = scheduler.get_last_lr()[0]
    scheduler.step()
    return StepResult(sums, lr, samples, tokens)


PLAIN_LOSS = dict(logit_weight=0.0, hidden_weight=0.0, cross_tokenizer_weight=0.0,
                  embedding_weight=0.0, hard_label_weight=1.0, on_policy_share=0.0,
                  sequence_level=False)


def train_baseline(cfg: Any, student: torch.nn.Module, initial_state: dict[str, torch.Tensor],
                   teacher: torch.nn.Module, n_train: int, make_batch: MakeBatch, total_steps: int,
                   *, device: torch.device, precision: str, autocast: Callable[[], Any],
                   evaluate: Callable[[torch.nn.Module], dict[str, float]], emit: EventSink,
                   stop: Any) -> dict[str, Any] | None:
    """The same student from the same starting weights, trained for the same steps on the same
    real data with the plain task loss alone: what it reaches without a teacher.
    Returns its metrics and cost, or None when stopped."""
    tc = cfg.training
    base = copy.deepcopy(student)
    base.load_state_dict(initial_state)
    base.train()
    method = dataclasses.replace(cfg.method, **PLAIN_LOSS)
    distiller = Distiller(cfg.task, method, teacher, base).to(device)
    optimizer, scheduler, scaler = make_optimizer(distiller, tc, total_steps, device, precision)
    order = BatchOrder(n_train, min(tc.batch_size, n_train), tc.seed)
    accum, t0 = tc.grad_accum_steps, time.perf_counter()
    for step in range(total_steps):
        if stop.is_set():
            emit(Log("Stopped during the plain-training baseline; the distilled student is "
                     "complete, the baseline is left out.", "warning"))
            return None
        res = optimizer_step(distiller, (make_batch(order.indices(step * accum + i))
                                         for i in range(accum)),
                             accum, optimizer, scheduler, scaler, tc.max_grad_norm, autocast)
        emit(Progress("baseline", step + 1, total_steps, "steps", {"loss": res.losses["total"]}))
    metrics = evaluate(base)
    return {"metrics": metrics, "steps": total_steps,
            "duration_s": round(time.perf_counter() - t0, 2)}
