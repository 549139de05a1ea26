"""The PyTorch side of an export: the module that is exported, and how it is called.

ONNX graphs take input_ids and attention_mask (int64, batch x sequence, both axes dynamic)
and give `logits` (a generative model: every position, no KV cache; a classifier) or
`sentence_embedding` (mean pooling inside the graph, L2-normalised when the student's
sentence-transformers files say so).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ONNX_INPUTS = ("input_ids", "attention_mask")
Runner = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # a batch in, float32 outputs out


def output_name(task: Any) -> str:
    return task.onnx_output


class Graph(nn.Module):
    """input_ids, attention_mask -> float32 logits, or the pooled sentence embedding."""

    def __init__(self, model: nn.Module, task: Any, normalize: bool):
        super().__init__()
        self.model, self.normalize = model, normalize
        self.pooled = task.export_pools
        # What the family's forward needs besides the inputs (a language model: no KV cache).
        self.extra = task.export_kwargs()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooled:
            h = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            h = h.float()  # pool in fp32 (as losses.mean_pool does): fp16 sums overflow
            keep = (attention_mask != 0).unsqueeze(-1)
            emb = h.masked_fill(~keep, 0.0).sum(1) / keep.sum(1).to(h.dtype).clamp(min=1e-9)
            return F.normalize(emb, dim=-1) if self.normalize else emb
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **self.extra)
        return out.logits.float()


def runner(graph: Graph) -> Runner:
    @torch.inference_mode()
    def run(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return graph(batch["input_ids"], batch["attention_mask"])

    return run


def half_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).half().eval()


@contextmanager
def quiet():
    """The exporter and the quantizer warn about torchvision, deprecations and pre-processing
    (through the root logger): not the user's business, and the engine must not print."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
