"""The logit distillation loss against cached top-k targets.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from kdstudio.core.losses import divergence
from kdstudio.core.loss_kinds import SPARSE_LOSSES

# ---------------------------------------------------------------- the sparse loss


def _log_power_sum(a: torch.Tensor, w: float, span: float) -> torch.Tensor:
    """log of the integral of x**-a from w to w * e**span (the sum over the tail's ranks,
    with midpoints): log(w**c * expm1(c * span) / c), c = 1 - a, and log(w) + log(span) at c = 0."""
    c = 1.0 - a
    small = c.abs() < 1e-6
    c_safe = torch.where(small, torch.ones_like(c), c)
    ratio = torch.where(small, torch.full_like(c, span), torch.expm1(c_safe * span) / c_safe)
    return c * math.log(w) + torch.log(ratio)


def tail_power_law(tail_logmass: torch.Tensor, min_logprob: torch.Tensor, k: int, n_tail: int,
                   iterations: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """The tail model: p_r = C * r**-a for the ranks r = k+1 .. k+n_tail, continuing the
    smallest kept log-prob (C * k**-a = exp(min_logprob)) and holding exactly the tail's mass.
    Returns (a, log C), each (N,), float64; a >= 0 (0: the tail is flat at its mass)."""
    m = tail_logmass.double()
    low = min_logprob.double()
    w, span = k + 0.5, math.log((k + n_tail + 0.5) / (k + 0.5))

    def excess(a: torch.Tensor) -> torch.Tensor:  # decreasing in a
        return low + a * math.log(k) + _log_power_sum(a, w, span) - m

    lo = torch.zeros_like(m)
    hi = torch.full_like(m, 64.0)
    for _ in range(iterations):  # bisection: 64 / 2**40 is far below float32's steps
        mid = 0.5 * (lo + hi)
        up = excess(mid) > 0
        lo = torch.where(up, mid, lo)
        hi = torch.where(up, hi, mid)
    a = torch.where(torch.nan_to_num(excess(torch.zeros_like(m)), nan=-1.0) > 0, 0.5 * (lo + hi),
                    torch.zeros_like(m))
    return a, m - _log_power_sum(a, w, span)


def tail_temper(tail_logmass: torch.Tensor, tail_log_half: torch.Tensor, min_logprob: torch.Tensor,
                n_tail: int, temperature: float, *, k: int = 1) -> torch.Tensor:
    """Estimate log(sum over the tail of p**(1/T)) for the teacher's tail bucket: (N,) -> (N,).

    Exact at T = 1 (the tail's mass). Where tail_log_half (log of the tail's sum of sqrt(p),
    which format-1 caches written by a local pass hold) is given, f(a) = log sum p**a is
    interpolated through a = 0 (log n_tail), 1/2 and 1: exact at T = 1, 2 and infinity. Where
    it is NaN (format 2, served or imported answers), the tail follows tail_power_law (k: how
    many entries were kept): a power law in rank that continues the top k's smallest entry and
    holds the tail's exact mass, so a served and a local cache of the same top k give the same
    targets at every T.
    """
    a = 1.0 / temperature
    m = tail_logmass
    if n_tail <= 0:
        return torch.full_like(m, float("-inf"))
    log_n = math.log(n_tail)
    finite = torch.isfinite(m)
    # Work on finite stand-ins so that no -inf meets a zero weight (0 * inf = NaN).
    m_f = torch.where(finite, m, torch.zeros_like(m))
    modelled = torch.isnan(tail_log_half) & finite
    h = torch.where(modelled | ~finite, m_f, tail_log_half)
    if a == 1.0:
        est = m_f
    elif 0.5 <= a < 1.0:
        w = (a - 0.5) / 0.5
        est = (1 - w) * h + w * m_f
    elif a < 0.5:
        w = a / 0.5
        est = (1 - w) * log_n + w * h
    else:
        est = torch.minimum(m_f + (a - 1.0) * 2.0 * (m_f - h), m_f + (a - 1.0) * min_logprob)
    if a != 1.0 and bool(modelled.any()):
        kept = max(1, int(k))
        w_, span = kept + 0.5, math.log((kept + n_tail + 0.5) / (kept + 0.5))
        slope, log_c = tail_power_law(m_f, min_logprob, kept, n_tail)
        law = (a * log_c + _log_power_sum(a * slope, w_, span)).to(est.dtype)
        est = torch.where(modelled, law, est)
    return torch.where(finite, est, m)


def _kl_buckets(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim; 0 * log(0 / q) counts as 0: (..., B) -> (...)."""
    p = logp.exp()
    diff = torch.where(p > 0, logp - logq, torch.zeros_like(logp))
    return (p * diff).sum(dim=-1)


class _StudentBuckets(torch.autograd.Function):
    """(N, V) logits z and (N, k) distinct ids -> (N, k + 1) log-probs of the k ids and of
    everything else (log_softmax(z) collapsed to k + 1 buckets), with a hand-written
    backward: one softmax over the vocabulary instead of autograd's path through two
    log-sum-exps and a scatter (about twice as fast on a CPU)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(z, dim=-1, keepdim=True)
        top = z.gather(-1, ids) - lse
        # The filler is finite so that a full top-k (k = V) gives a finite, negligible tail.
        tail_lse = torch.logsumexp(z.scatter(-1, ids, torch.finfo(z.dtype).min), dim=-1,
                                   keepdim=True)
        ctx.save_for_backward(z, ids, lse, tail_lse)
        return torch.cat([top, tail_lse - lse], dim=-1)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        z, ids, lse, tail_lse = ctx.saved_tensors
        g_top, g_tail = g[:, :-1], g[:, -1:]
        # d top_j / dz = onehot(id_j) - p; d tail / dz = 1[tail] * q - p, with p the softmax
        # over the vocabulary and q the softmax within the tail.
        grad = torch.exp(z - lse).mul_(-g.sum(-1, keepdim=True))
        if ids.shape[-1] < z.shape[-1]:
            q = torch.exp(z - tail_lse)
            grad.add_(q.mul_(g_tail))
            grad.scatter_add_(-1, ids, g_top - q.gather(-1, ids))
        else:  # no tail
            grad.scatter_add_(-1, ids, g_top)
        return grad, None


def sparse_logit_loss(
    student_logits: torch.Tensor,
    top_ids: torch.Tensor,
    top_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor,
    *,
    tail_log_half: torch.Tensor | None = None,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    alpha: float = 0.1,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Logit distillation loss against cached top-k teacher targets.

    student_logits (N, V) (or (..., V)); top_ids (N, k) long, distinct per position;
    top_logprobs (N, k) the teacher's log-probs at temperature 1; tail_logmass (N,) log of
    its mass outside the top k (-inf when k = V); tail_log_half (N,) optional, log of the
    tail's sum of sqrt(p); mask (N,) bool, True = keep. Returns a scalar.

    Both distributions are tempered, then collapsed to k + 1 buckets: the top-k ids and
    one tail bucket. The student's are exact (log_softmax(z / T) at the ids, and its own
    remaining mass). The teacher's top-k entries are lp / T; its tail bucket is
    tail_temper(...) (exact at T = 1 and 2 when tail_log_half is given); then the k + 1
    buckets are renormalised, which also absorbs quantization error. The divergence
    (names and beta / alpha as in losses.logit_distillation_loss) is summed over the
    buckets, times T**2, then averaged over kept positions ("mean") or summed ("sum");
    0 with grad when nothing is kept. With k = V it equals the dense loss.
    """
    if loss not in SPARSE_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(SPARSE_LOSSES)}; got {loss!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be mean or sum; got {reduction!r}")
    temperature = float(temperature)
    if not (temperature > 0.0) or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    for name, val in (("beta", beta), ("alpha", alpha)):
        if not (0.0 <= float(val) <= 1.0):
            raise ValueError(f"{name} must be in [0, 1], got {val}")
    beta, alpha = float(beta), float(alpha)
    if student_logits.dim() < 1:
        raise ValueError("student_logits must have a last (vocab) dimension, got a scalar")
    lead = student_logits.shape[:-1]
    vocab = student_logits.shape[-1]
    k = top_ids.shape[-1]
    if top_ids.shape[:-1] != lead or top_logprobs.shape != top_ids.shape or tail_logmass.shape != lead:
        raise ValueError(f"top_ids and top_logprobs must be {(*lead, k)} and tail_logmass {tuple(lead)}, "
                         f"got {tuple(top_ids.shape)}, {tuple(top_logprobs.shape)}, {tuple(tail_logmass.shape)}")
    if not 1 <= k <= vocab:
        raise ValueError(f"top_ids must hold 1 to {vocab} ids per position, got {k}")
    if tail_log_half is not None and tail_log_half.shape != lead:
        raise ValueError(f"tail_log_half must be {tuple(lead)}, got {tuple(tail_log_half.shape)}")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool
                             or mask.shape != lead):
        raise ValueError(f"mask must be a bool tensor of shape {tuple(lead)} (True = keep)")

    s = student_logits.float() if student_logits.dtype in (torch.float16, torch.bfloat16) else student_logits
    dt = s.dtype
    ids = top_ids.long().reshape(-1, k)
    t_lp = top_logprobs.to(dt).reshape(-1, k)
    t_tail = tail_logmass.to(dt).reshape(-1)
    half = (tail_log_half.to(dt).reshape(-1) if tail_log_half is not None
            else torch.full_like(t_tail, float("nan")))
    s = s.reshape(-1, vocab)
    if mask is not None and not bool(mask.all()):
        keep = mask.reshape(-1)
        s, ids, t_lp, t_tail, half = s[keep], ids[keep], t_lp[keep], t_tail[keep], half[keep]

    # Student: exact tempered log-probs at the ids, and its exact remaining mass. The
    # filler is finite so that a full top-k (k = V) gives no NaN in the gradient.
    logp_s = _StudentBuckets.apply(s / temperature, ids)

    # Teacher: tempered top-k plus the tempered tail estimate, renormalised.
    min_lp = t_lp.min(dim=-1).values if k else torch.zeros_like(t_tail)
    t_tail_T = tail_temper(t_tail, half, min_lp, vocab - k, temperature, k=k)
    logp_t = F.log_softmax(torch.cat([t_lp / temperature, t_tail_T.unsqueeze(-1)], dim=-1), dim=-1)

    per = divergence(logp_s, logp_t, loss, beta=beta, alpha=alpha, kl=_kl_buckets)

    total = per.sum()
    if reduction == "mean":
        total = total / max(per.numel(), 1)
    return total * (temperature ** 2)
