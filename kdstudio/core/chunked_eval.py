"""Evaluation's per-position figures over a large vocabulary, computed chunk by chunk.

The student's and the teacher's -log p(label) and entropy, their top-1 agreement and the KL
between them, without gradients and without ever holding (positions, vocab) logits; the head runs
in the same precision as the chunked training loss (chunked.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .chunk_size import auto_chunk_size
from .chunked import loss_dtype, matmul_dtype

__all__ = ["TokenStats", "chunked_token_logprobs"]


class TokenStats(NamedTuple):
    """Per-position figures, each (N,); the teacher's are None without a teacher.

    student_nll / teacher_nll: -log p(label) (0 where the label is -100); agree: the
    argmaxes match; kl: KL(teacher || student) at temperature 1 summed over the vocab;
    student_entropy / teacher_entropy: each prediction's entropy in nats (temperature 1).
    """

    student_nll: torch.Tensor
    teacher_nll: torch.Tensor | None
    agree: torch.Tensor | None
    kl: torch.Tensor | None
    student_entropy: torch.Tensor | None = None
    teacher_entropy: torch.Tensor | None = None


def _head(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    mm = matmul_dtype(hidden, weight)
    with torch.autocast(hidden.device.type, enabled=False):
        logits = F.linear(hidden.to(mm), weight.to(mm), bias.to(mm) if bias is not None else None)
    return logits.to(loss_dtype(mm))


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    """-sum p log p over the last dim; 0 * log 0 is 0 (a -inf logit must not give NaN)."""
    p = logp.exp()
    return -torch.where(p > 0, p * logp, 0.0).sum(-1)


@torch.no_grad()
def chunked_token_logprobs(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    vocab_size: int | None = None,
    chunk_size: int | None = None,
) -> TokenStats:
    """What evaluation needs per position, computed chunk by chunk without gradients.

    student_hidden (N, H_s) with head student_weight (V_s, H_s); teacher_hidden (N, H_t)
    with teacher_weight (V_t, H_t), optional; labels (N,), -100 ignored. vocab_size keeps
    the first vocab_size logits of each (heads padded past the shared vocabulary).
    """
    if (teacher_hidden is None) != (teacher_weight is None):
        raise ValueError("give both teacher_hidden and teacher_weight, or neither")
    n_rows = student_hidden.shape[0]
    if labels.shape != (n_rows,):
        raise ValueError(f"labels must be ({n_rows},), got {tuple(labels.shape)}")
    if n_rows == 0:
        empty = student_hidden.new_zeros(0, dtype=torch.float32)
        has = teacher_hidden is not None
        return TokenStats(empty, empty if has else None,
                          empty.bool() if has else None, empty if has else None,
                          empty, empty if has else None)
    v = vocab_size or None
    sw, sb = student_weight[:v], student_bias[:v] if student_bias is not None else None
    has_t = teacher_hidden is not None
    if has_t:
        tw, tb = teacher_weight[:v], teacher_bias[:v] if teacher_bias is not None else None
    chunk_size = auto_chunk_size(sw.shape[0], sw.shape[1], device=student_hidden.device,
                                 override=chunk_size)
    s_nll, t_nll, agree, kl, s_ent, t_ent = [], [], [], [], [], []
    for start in range(0, n_rows, chunk_size):
        rows = slice(start, start + chunk_size)
        lab = labels[rows].long()
        # One log_softmax serves the NLL (cross_entropy is log_softmax then nll_loss), the
        # entropy and the KL: the entropy costs one elementwise pass over the chunk.
        s = _head(student_hidden[rows], sw, sb)
        logp_s = F.log_softmax(s, -1)
        s_nll.append(F.nll_loss(logp_s, lab, ignore_index=-100, reduction="none"))
        s_ent.append(_entropy(logp_s))
        if not has_t:
            del s, logp_s
            continue
        t = _head(teacher_hidden[rows], tw, tb)
        logp_t = F.log_softmax(t, -1)
        t_nll.append(F.nll_loss(logp_t, lab, ignore_index=-100, reduction="none"))
        t_ent.append(_entropy(logp_t))
        agree.append(s.argmax(-1) == t.argmax(-1))
        p_t = logp_t.exp()
        # 0 * log 0 is 0: a teacher with -inf logits must not give NaN.
        kl.append(torch.where(p_t > 0, p_t * (logp_t - logp_s), 0.0).sum(-1))
        del s, t, logp_s, logp_t, p_t  # before the next chunk's are made
    if not has_t:
        return TokenStats(torch.cat(s_nll), None, None, None, torch.cat(s_ent), None)
    return TokenStats(torch.cat(s_nll), torch.cat(t_nll), torch.cat(agree), torch.cat(kl),
                      torch.cat(s_ent), torch.cat(t_ent))
