"""What the processes of a multi-process run share: the batch (BatchShare, batch_share), each
process's slice of it (ShardOrder), the loss weighted by each one's share of the positions
(LossShare, loss_positions), and each process's own random stream (seed_process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdstudio.core.distributed import ProcessGroup


def loss_positions(batch: Any) -> int:
    """How many things a micro-batch's loss is a mean over: next-token positions for a
    language model's blocks, rows for everything else."""
    labels = batch.student.get("labels") if isinstance(batch.student, dict) else None
    if labels is not None and labels.dim() == 2:
        return int((labels[:, 1:] != -100).sum())
    return int(batch.size)


class LossShare:
    """Weights each process's loss by its share of the group's positions.

    DDP averages the processes' gradients as equals; a process whose shard holds fewer
    positions (a shorter last block, padding) would count for as much as the others. Scaled
    by world x own / total, the averaged gradient and the averaged losses are those of one
    process holding the whole global micro-batch. One extra all-reduce a micro-batch.
    """

    def __init__(self, model: Any, group: ProcessGroup):
        self.model, self.group = model, group

    def __call__(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts = self.model(batch)
        own = loss_positions(batch)
        (total,) = self.group.sum(own)
        w = self.group.world_size * own / max(total, 1)
        return loss * w, {k: v * w for k, v in parts.items()}


@dataclass
class BatchShare:
    """How a batch is split: per-process rows x processes x accumulation = the global batch."""

    per_process: int
    processes: int
    accumulation: int
    note: str = ""

    @property
    def global_batch(self) -> int:
        return self.per_process * self.processes * self.accumulation

    def line(self) -> str:
        return (f"Global batch: {self.per_process} rows per process x {self.processes} processes "
                f"x {self.accumulation} accumulation = {self.global_batch} rows per optimizer step.")

    def record(self) -> dict[str, int]:
        return {"processes": self.processes, "per_process_batch": self.per_process,
                "global_batch": self.global_batch}


def batch_share(batch_size: int, accumulation: int, processes: int,
                recorded: dict[str, Any] | None = None) -> BatchShare:
    """The per-process batch of a run with ``processes`` processes. A resumed run keeps the
    rows of each micro-batch its checkpoint was taken with (per-process batch x processes),
    so it sees the very batches an uninterrupted run would, with any number of processes."""
    rec = recorded or {}
    before_n = int(rec.get("processes") or 1)
    before_b = int(rec.get("per_process_batch") or batch_size)
    rows = before_n * before_b
    if before_n == processes or not recorded:
        return BatchShare(batch_size, processes, accumulation)
    if rows % processes == 0:
        return BatchShare(rows // processes, processes, accumulation,
                          note=f"The checkpoint was taken with {before_n} processes of "
                               f"{before_b} rows; with {processes} each takes {rows // processes} "
                               "rows, so the global batch and the data order stay the same.")
    return BatchShare(batch_size, processes, accumulation,
                      note=f"The checkpoint was taken with {before_n} processes of {before_b} rows "
                           f"({rows} a micro-batch), which {processes} processes cannot share "
                           "evenly: the run continues with a different global batch and data order.")


class ShardOrder:
    """A BatchOrder over the global micro-batch, of which this process takes its own slice."""

    def __init__(self, order: Any, rank: int, world: int):
        self.order, self.rank, self.world = order, rank, world
        self.per_epoch = order.per_epoch

    def indices(self, i: int) -> list[int]:
        rows = self.order.indices(i)
        each = len(rows) // self.world
        return rows[self.rank * each:(self.rank + 1) * each]


def seed_process(group: ProcessGroup, seed: int, step: int) -> None:
    """Each process its own random stream (dropout) from here on; the data order is not drawn
    from it (BatchOrder has its own generator), so every process still reads the same global
    batches. The main process keeps the stream a single process would have, so one process
    is exactly what it always was; another's stream follows from (seed, rank, step), so a
    resume with any number of processes draws the same masks again."""
    if group.multi and not group.is_main:
        torch.manual_seed((seed * 1_000_003 + group.rank * 10_007 + step) % (2**63 - 1))
