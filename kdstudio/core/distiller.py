"""The module that trains: the frozen teacher, the student and any learned projections.

Its forward pass computes the objective (objective.py): the weighted sum of the active loss
terms, each logged under its own name.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdstudio.core.errors import ConfigError
from kdstudio.core.models import hidden_size, num_layers
from kdstudio.core.batch import Batch
from kdstudio.core.objective import (
    TermInputs,
    active_terms,
    default_layer_pairs,
    head_terms_loss,
)
from kdstudio.core.tasks import Task, get_task


class Distiller(nn.Module):
    """Holds the frozen teacher, the student and any learned projections; computes the
    objective as the weighted sum of the active loss terms."""

    def __init__(self, task: Task | str, method: Any, teacher: Any, student: Any, *,
                 kept_layers: list[int] | None = None, vocab_size: int = 0, chunk: int = 0):
        super().__init__()
        self.task = get_task(task)
        self.method, self.vocab_size = method, vocab_size
        # Language models: the head terms run over chunks of positions (0: size chosen
        # from free memory, -1: full logits at once).
        self.chunk = chunk
        # The teacher cache (teacher_cache.TeacherCache) when it stands in for the live
        # teacher; batches it does not hold (on-policy samples) still ask the teacher.
        self.cache: Any = None
        self.terms = active_terms(self.task, method)
        self.student = student
        self.teacher = [teacher]  # a list so the teacher is not registered as a trainable child
        tw, sw = hidden_size(teacher), hidden_size(student)
        self.pairs: list[tuple[int, int]] = []
        # Terms that compare hidden states layer by layer pair each student layer with a
        # teacher layer (and learn a projection when the widths differ).
        if any(t.needs.layer_pairs for t in self.terms):
            ns, nt = num_layers(student), num_layers(teacher)
            self.pairs = ([tuple(p) for p in method.layer_pairs] if method.layer_pairs
                          else default_layer_pairs(ns, nt, kept_layers))
            for s, t in self.pairs:
                if s > ns or t > nt:
                    raise ConfigError(f"method.layer_pairs has [{s}, {t}], but the student has "
                                      f"hidden states 0..{ns} and the teacher 0..{nt}.")
        # A linear map from the student's width to the teacher's, learned with the student.
        self.hidden_proj = nn.ModuleList(
            [nn.Linear(sw, tw, bias=False) for _ in self.pairs] if tw != sw else [])
        # method.balance = "auto": each term's running size (an average of its recent values'
        # magnitudes, 0 until seen), kept with the checkpoint so a resume weighs alike.
        self.balance = getattr(method, "balance", "none") == "auto"
        if self.balance:
            self.register_buffer("term_size", torch.zeros(len(self.terms), dtype=torch.float64))
        self.embed_proj = (nn.Linear(sw, tw, bias=False)
                           if self.task.projects_output and tw != sw else None)
        kept = getattr(student, "pruned_channels", None)
        if kept is not None and tw != sw and len(kept) == sw:
            # A student pruned from the teacher keeps some of its channels: each projection
            # starts by putting them back in place, so step 0 already compares like with like.
            with torch.no_grad():
                for proj in [*self.hidden_proj, *([self.embed_proj] if self.embed_proj else [])]:
                    proj.weight.zero_()
                    proj.weight[torch.as_tensor(kept), torch.arange(sw)] = 1.0

    def trainable_parameters(self) -> list:
        return [p for p in self.parameters() if p.requires_grad]

    def project_embedding(self, emb: "torch.Tensor") -> "torch.Tensor":
        return self.embed_proj(emb) if self.embed_proj is not None else emb

    def forward(self, batch: Batch) -> tuple["torch.Tensor", dict[str, float]]:
        """Returns the weighted total loss and each term's (unweighted) value."""
        terms = [t for t in self.terms if not (t.skip and t.skip(batch))]
        want = frozenset().union(*(t.needs.features for t in terms))
        # no_grad rather than inference_mode: inference tensors cannot be saved for the
        # backward pass of the losses that mix them with the student's outputs.
        head_terms = [t for t in terms if t.head]
        chunked = bool(head_terms) and self.chunk >= 0 and self.task.chunks_head \
            and batch.align is None
        t_feats: dict[str, Any] = {}
        cached = None
        if self.cache is not None and batch.rows is not None and not batch.on_policy:
            length = batch.student["input_ids"].shape[1]
            cached = self.cache.get(batch.rows, batch.student["input_ids"].device, seq_len=length)
        elif any(t.needs.teacher for t in self.terms):
            with torch.no_grad():
                t_feats = self.task.forward_features(self.teacher[0], batch.teacher, want=want,
                                                     head_only=chunked)
        s_feats = self.task.forward_features(self.student, batch.student, want=want,
                                             head_only=chunked)
        x = TermInputs(batch, s_feats, t_feats, self.method, self, self.vocab_size, cached)
        weights = self.weights(terms)
        if "last_hidden" in s_feats:  # the student's head runs chunk by chunk
            total, head_values = head_terms_loss(x, head_terms, self.chunk, weights)
            parts = {t.name: t.compute(x) for t in terms if not t.head}
            total = total + sum(weights[t.name] * parts[t.name] for t in terms if not t.head)
            values = {t.name: float(head_values[t.name]) if t.head else float(parts[t.name].detach())
                      for t in terms}
        else:
            parts = {t.name: t.compute(x) for t in terms}
            total = sum(weights[t.name] * parts[t.name] for t in terms)
            values = {k: float(v.detach()) for k, v in parts.items()}
        if self.balance:
            self._track_sizes(values)
        values["total"] = float(total.detach())
        return total, values

    def weights(self, terms: list) -> dict[str, float]:
        """Each term's weight in the sum: its configured weight, or with balance 'auto' that
        weight times (the terms' mean running size / its own running size), so every term
        contributes about its weight's share whatever its scale. A term not yet seen, or
        one whose size is 0, keeps its weight."""
        w = {t.name: t.weight(self.method) for t in terms}
        if not self.balance:
            return w
        at = {t.name: i for i, t in enumerate(self.terms)}
        sizes = {t.name: float(self.term_size[at[t.name]]) for t in terms}
        seen = [s for s in sizes.values() if s > 0]
        if not seen:
            return w
        ref = sum(seen) / len(seen)
        return {k: v * (ref / sizes[k] if sizes[k] > 0 else 1.0) for k, v in w.items()}

    def _track_sizes(self, values: dict[str, float]) -> None:
        """Update each term's running size: 0.9 of the old plus 0.1 of this value's size."""
        import math

        for i, t in enumerate(self.terms):
            v = values.get(t.name)
            if v is None or not math.isfinite(v):
                continue
            old = float(self.term_size[i])
            self.term_size[i] = abs(v) if old == 0 else 0.9 * old + 0.1 * abs(v)
