"""Distillation losses as pure tensor functions.

Logit losses compare the teacher's and the student's softened distributions;
hidden-state and embedding losses compare representations the caller has
already brought to the same width. Every loss returns a scalar tensor, ignores
masked positions, and never divides by zero: when nothing is kept the result is
a zero that is still connected to the inputs, so ``backward()`` works.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "EMBEDDING_LOSSES",
    "HIDDEN_LOSSES",
    "LOGIT_LOSSES",
    "cross_tokenizer_loss",
    "embedding_loss",
    "hard_label_loss",
    "hidden_state_loss",
    "logit_distillation_loss",
    "mean_pool",
]

# The names live in loss_kinds.py (the config reads them before torch); re-exported here.
from kdstudio.core.loss_kinds import EMBEDDING_LOSSES, HIDDEN_LOSSES, LOGIT_LOSSES

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    # Half-precision softmax/log and sums lose too much; float64 stays as it is.
    return x.float() if x.dtype in _LOW_PRECISION else x


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_mask(mask: torch.Tensor | None, leading: torch.Size, name: str = "mask") -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        # An integer 0/1 mask would index by position instead of selecting: refuse it.
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a bool tensor (True = keep), got {got}")
    if mask.shape != leading:
        raise ValueError(
            f"{name} must have the leading shape {tuple(leading)} of the inputs, "
            f"got {tuple(mask.shape)}"
        )


def _check_choice(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _check_unit_interval(value: float, name: str) -> float:
    value = float(value)
    # Written so that NaN fails too.
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def _mean(per_position: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor of per-position values; 0 (with grad) when it is empty."""
    # Summing an empty selection gives a zero that keeps its grad_fn.
    return per_position.sum() / max(per_position.numel(), 1)


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) summed over the last dim, from log-probabilities: (..., V) -> (...)."""
    if torch.isinf(logp).any():
        # 0 * log(0 / q) is 0 by convention; kl_div would give NaN for a -inf logit.
        p = logp.exp()
        diff = torch.where(p > 0, logp - logq, torch.zeros_like(logp))
        return (p * diff).sum(dim=-1)
    # The common case in one fused kernel: on LM-sized logits (tokens x vocab) the
    # step-by-step version above costs several extra passes over memory.
    return F.kl_div(logq, logp, reduction="none", log_target=True).sum(dim=-1)


def log_mix(logp: torch.Tensor, logq: torch.Tensor, weight: float) -> torch.Tensor:
    """log(weight * p + (1 - weight) * q), computed in log space: (..., V) -> (..., V)."""
    # The endpoints are exact and avoid log(0).
    if weight == 1.0:
        return logp
    if weight == 0.0:
        return logq
    return torch.logsumexp(
        torch.stack([logp + math.log(weight), logq + math.log1p(-weight)]), dim=0
    )


def divergence(logp_s: torch.Tensor, logp_t: torch.Tensor, loss: str, *, beta: float,
               alpha: float, kl: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _kl,
               ) -> torch.Tensor:
    """The divergence named ``loss`` between student and teacher log-probabilities, per
    position: (..., V) -> (...). ``kl`` is KL(p || q) over the last dim (the cached loss
    passes its own, over its k + 1 buckets). Names, beta and alpha as in
    logit_distillation_loss."""
    if loss == "forward_kl":
        return kl(logp_t, logp_s)
    if loss == "reverse_kl":
        return kl(logp_s, logp_t)
    if loss == "jsd":
        # The endpoints are a deliberate jump (as in TRL): the mixture limit would be 0.
        if beta == 0.0:
            return kl(logp_t, logp_s)
        if beta == 1.0:
            return kl(logp_s, logp_t)
        log_m = log_mix(logp_t, logp_s, beta)
        return beta * kl(logp_t, log_m) + (1.0 - beta) * kl(logp_s, log_m)
    if loss == "skew_kl":
        return kl(logp_t, log_mix(logp_t, logp_s, alpha))
    return kl(logp_s, log_mix(logp_s, logp_t, alpha))  # skew_reverse_kl


def logit_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    alpha: float = 0.1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Divergence between softened teacher and student distributions.

    student_logits, teacher_logits: (..., vocab), same shape, e.g. (batch, classes)
    or (batch, seq, vocab). mask: bool (...), True = keep. Returns a scalar: the
    divergence summed over vocab, times temperature**2, averaged over kept positions.

    loss: forward_kl = KL(t||s); reverse_kl = KL(s||t); jsd = beta*KL(t||M) +
    (1-beta)*KL(s||M) with M = beta*t + (1-beta)*s (beta 0 / 1 give forward / reverse
    KL, as TRL's generalized_jsd_loss); skew_kl = KL(t || alpha*t + (1-alpha)*s);
    skew_reverse_kl = KL(s || alpha*s + (1-alpha)*t).
    """
    _check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    if student_logits.dim() < 1:
        raise ValueError("student_logits must have a last (vocab) dimension, got a scalar")
    _check_choice(loss, LOGIT_LOSSES, "loss")
    temperature = float(temperature)
    if not (temperature > 0.0) or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    beta = _check_unit_interval(beta, "beta")
    alpha = _check_unit_interval(alpha, "alpha")
    _check_mask(mask, student_logits.shape[:-1])

    s_logits = _upcast(student_logits)
    t_logits = _upcast(teacher_logits)
    if mask is not None and not bool(mask.all()):
        # Select kept positions first, so padding never enters the maths or its gradients.
        # (When every position is kept, as with packed LM batches, skip the copy.)
        s_logits = s_logits[mask]
        t_logits = t_logits[mask]

    logp_s = F.log_softmax(s_logits / temperature, dim=-1)
    logp_t = F.log_softmax(t_logits / temperature, dim=-1)

    per_position = divergence(logp_s, logp_t, loss, beta=beta, alpha=alpha)
    # T**2 keeps gradient magnitudes comparable across temperatures (Hinton et al.).
    return _mean(per_position) * (temperature**2)


def hard_label_loss(
    student_logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100
) -> torch.Tensor:
    """Cross-entropy of student_logits (..., classes) against integer labels (...).

    Positions whose label is ignore_index are excluded; a scalar mean over the rest,
    0 (with grad) when every position is ignored.
    """
    if student_logits.dim() < 1:
        raise ValueError("student_logits must have a last (classes) dimension, got a scalar")
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"labels must have the leading shape {tuple(student_logits.shape[:-1])} "
            f"of student_logits, got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")

    keep = labels != ignore_index
    logits = _upcast(student_logits)[keep]  # (n_kept, classes)
    targets = labels[keep].long()
    # Sum then divide ourselves: F.cross_entropy's mean over zero targets is NaN.
    return F.cross_entropy(logits, targets, reduction="sum") / max(targets.numel(), 1)


def cross_tokenizer_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0,
) -> torch.Tensor:
    """Universal Logit Distillation (Boizard et al., 2024) for models whose vocabularies differ.

    student_logits (n, V_s) and teacher_logits (n, V_t) are n positions already aligned by
    text (row i of each predicts what follows the same stretch of text). Token ids cannot be
    matched across vocabularies, so each softened distribution is sorted from most to least
    likely, the shorter one padded with zeros, and the two compared as one-dimensional
    distributions: the sum of absolute differences, the closed form of the Wasserstein
    distance the paper uses. Scaled by T^2 like the other logit losses; a scalar mean over
    positions, 0 (with grad) when n is 0. It is zero when the two distributions are
    permutations of each other, so it teaches the student how peaked the teacher is, not
    which token it prefers: use it beside the next-token loss.
    """
    if student_logits.dim() != 2 or teacher_logits.dim() != 2:
        raise ValueError("student_logits and teacher_logits must be (positions, vocab), got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError("student_logits and teacher_logits must have the same number of aligned "
                         f"positions, got {student_logits.shape[0]} and {teacher_logits.shape[0]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    ps = F.softmax(_upcast(student_logits) / temperature, dim=-1).sort(dim=-1, descending=True).values
    pt = F.softmax(_upcast(teacher_logits).detach() / temperature, dim=-1).sort(dim=-1, descending=True).values
    width = max(ps.shape[-1], pt.shape[-1])
    ps = F.pad(ps, (0, width - ps.shape[-1]))
    pt = F.pad(pt, (0, width - pt.shape[-1]))
    return _mean((ps - pt).abs().sum(-1)) * temperature ** 2


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    *,
    kind: str = "mse",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distance between hidden states (batch, seq, dim) or (batch, dim), same shape.

    The caller projects the student to the teacher's width first. mask: bool
    (batch, seq), True = keep. kind mse: mean over kept positions of the squared
    error averaged over dim; cosine: mean over kept positions of 1 - cosine similarity.
    """
    _check_same_shape(student_hidden, teacher_hidden, "student_hidden", "teacher_hidden")
    if student_hidden.dim() < 1:
        raise ValueError("student_hidden must have a last (dim) dimension, got a scalar")
    _check_choice(kind, HIDDEN_LOSSES, "kind")
    _check_mask(mask, student_hidden.shape[:-1])

    s = _upcast(student_hidden)
    t = _upcast(teacher_hidden)
    if mask is not None:
        s, t = s[mask], t[mask]  # (n_kept, dim)

    if kind == "mse":
        per_position = (s - t).pow(2).mean(dim=-1)
    else:
        per_position = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
    return _mean(per_position)


def embedding_loss(
    student_emb: torch.Tensor, teacher_emb: torch.Tensor, *, kind: str = "mse+cosine"
) -> torch.Tensor:
    """Distance between pooled embeddings (batch, dim), same shape.

    kind mse: squared error averaged over batch and dim; cosine: mean of 1 - cosine
    similarity; mse+cosine: their sum. Returns a scalar.
    """
    _check_same_shape(student_emb, teacher_emb, "student_emb", "teacher_emb")
    if student_emb.dim() < 1:
        raise ValueError("student_emb must have a last (dim) dimension, got a scalar")
    _check_choice(kind, EMBEDDING_LOSSES, "kind")

    s = _upcast(student_emb)
    t = _upcast(teacher_emb)
    total = None
    if kind in ("mse", "mse+cosine"):
        total = _mean((s - t).pow(2))
    if kind in ("cosine", "mse+cosine"):
        cos = _mean(1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8))
        total = cos if total is None else total + cos
    return total


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of hidden (batch, seq, dim) over the positions attention_mask (batch, seq) keeps.

    Sentence-transformers mean pooling: masked sum / count clamped to 1e-9, so an
    all-padding row gives zeros. Any non-zero mask value counts as kept. Returns
    (batch, dim) in hidden's dtype.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (batch, seq, dim), got shape {tuple(hidden.shape)}")
    if attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"attention_mask must have shape {tuple(hidden.shape[:2])} (batch, seq), "
            f"got {tuple(attention_mask.shape)}"
        )
    keep = attention_mask != 0
    h = _upcast(hidden)
    # masked_fill rather than multiply: padding that holds inf/NaN must not leak in.
    summed = h.masked_fill(~keep.unsqueeze(-1), 0.0).sum(dim=1)
    # In float32 at least, since 1e-9 underflows to 0 in float16.
    counts = keep.sum(dim=1, keepdim=True).to(h.dtype).clamp(min=1e-9)
    return (summed / counts).to(hidden.dtype)
