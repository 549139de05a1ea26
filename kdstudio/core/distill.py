"""The distillation objective: forward both models on a batch, return every loss component.

Kept apart from the training loop so the loop reads top to bottom, and so the app and
the tests can compute the same losses on a single batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .evaluation import forward_features
from .losses import (
    cross_tokenizer_loss,
    embedding_loss,
    hard_label_loss,
    hidden_state_loss,
    logit_distillation_loss,
)
from .models import hidden_size, num_layers


def default_layer_pairs(n_student: int, n_teacher: int, kept: list[int] | None) -> list[tuple[int, int]]:
    """Student hidden state j (after layer j) against the teacher layer it came from, or an evenly
    spaced one. Index 0 is the embedding output in both, which a derived student shares."""
    if kept and len(kept) == n_student:
        return [(j + 1, kept[j] + 1) for j in range(n_student)]
    return [(j, round(j * n_teacher / n_student)) for j in range(1, n_student + 1)]


@dataclass
class Batch:
    """What one micro-batch holds: inputs for each model (the same dict when tokenizers match)."""

    student: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor]
    labels: torch.Tensor | None
    tokens: int
    size: int
    # causal-lm with different tokenizers: (n, 3) rows of (row, student pos, teacher pos)
    # that predict the same next text; None when both read the same ids.
    align: torch.Tensor | None = None
    on_policy: bool = False  # the continuations are the student's own samples


class Distiller(nn.Module):
    """Holds the frozen teacher, the student and any learned projections; computes the losses."""

    def __init__(self, task: str, method: Any, teacher: nn.Module, student: nn.Module, *,
                 kept_layers: list[int] | None = None, vocab_size: int = 0):
        super().__init__()
        self.task, self.method, self.vocab_size = task, method, vocab_size
        self.student = student
        self.teacher = [teacher]  # a list so the teacher is not registered as a trainable child
        tw, sw = hidden_size(teacher), hidden_size(student)
        self.pairs: list[tuple[int, int]] = []
        if method.hidden_weight > 0:
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
        self.embed_proj = (nn.Linear(sw, tw, bias=False)
                           if task == "sentence-embedding" and tw != sw else None)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def project_embedding(self, emb: torch.Tensor) -> torch.Tensor:
        return self.embed_proj(emb) if self.embed_proj is not None else emb

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Returns the weighted total loss and each component's (unweighted) value."""
        m = self.method
        want_hidden = m.hidden_weight > 0
        # no_grad rather than inference_mode: inference tensors cannot be saved for the
        # backward pass of the losses that mix them with the student's outputs.
        t: dict[str, Any] = {}
        if any(getattr(m, k, 0) > 0 for k in ("logit_weight", "hidden_weight", "embedding_weight",
                                               "cross_tokenizer_weight")):
            with torch.no_grad():
                t = forward_features(self.teacher[0], self.task, batch.teacher, hidden=want_hidden)
        s = forward_features(self.student, self.task, batch.student, hidden=want_hidden)
        parts: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        if self.task == "causal-lm":
            labels = batch.student["labels"][:, 1:]
            mask = labels != -100
            v = self.vocab_size or None
            s_logits = s["logits"][:, :-1, :v]
            if m.logit_weight > 0 and batch.align is None:
                parts["logit"] = logit_distillation_loss(
                    s_logits, t["logits"][:, :-1, :v], loss=m.logit_loss,
                    temperature=m.temperature, beta=m.beta, alpha=m.alpha, mask=mask)
                weights["logit"] = m.logit_weight
            # On the student's own samples the "labels" are its own guesses: only the
            # teacher's judgement of them teaches anything.
            if m.hard_label_weight > 0 and not batch.on_policy:
                parts["hard_label"] = hard_label_loss(s_logits, labels)
                weights["hard_label"] = m.hard_label_weight
            if m.cross_tokenizer_weight > 0:
                if batch.align is None:
                    s_pos, t_pos = s_logits[mask], t["logits"][:, :-1, :v][mask]
                else:
                    r, si, ti = batch.align.unbind(-1)
                    s_pos, t_pos = s["logits"][r, si], t["logits"][r, ti]
                parts["cross_tokenizer"] = cross_tokenizer_loss(s_pos, t_pos,
                                                                temperature=m.temperature)
                weights["cross_tokenizer"] = m.cross_tokenizer_weight
        elif self.task == "sequence-classification":
            if m.logit_weight > 0:
                parts["logit"] = logit_distillation_loss(
                    s["logits"], t["logits"], loss=m.logit_loss, temperature=m.temperature,
                    beta=m.beta, alpha=m.alpha)
                weights["logit"] = m.logit_weight
            if m.hard_label_weight > 0:
                parts["hard_label"] = hard_label_loss(s["logits"], batch.labels)
                weights["hard_label"] = m.hard_label_weight
        else:
            if m.embedding_weight > 0:
                parts["embedding"] = embedding_loss(self.project_embedding(s["embedding"]),
                                                    t["embedding"].float(), kind=m.embedding_loss)
                weights["embedding"] = m.embedding_weight
        if want_hidden:
            mask = batch.student["attention_mask"].bool()
            total_h = 0.0
            for i, (si, ti) in enumerate(self.pairs):
                sh = s["hidden_states"][si]
                if len(self.hidden_proj):
                    sh = self.hidden_proj[i](sh)
                total_h = total_h + hidden_state_loss(sh, t["hidden_states"][ti].float(),
                                                      kind=m.hidden_loss, mask=mask)
            parts["hidden"] = total_h / len(self.pairs)
            weights["hidden"] = m.hidden_weight
        total = sum(weights[k] * parts[k] for k in parts)
        values = {k: float(v.detach()) for k, v in parts.items()}
        values["total"] = float(total.detach())
        return total, values
