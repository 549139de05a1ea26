"""Logit losses over a large vocabulary without ever holding (positions, vocab) logits.

A causal LM's head turns hidden states (N, H) into logits (N, V); with V = 151,936 one
fp32 row costs ~0.6 MB, and the loss and its backward need several such tensors. Here the
head runs on chunks of positions: each chunk's logits are made, scored, differentiated
and dropped before the next, and only the gradients w.r.t. the hidden states (N, H) and
the head (V, H) are kept (the idea of Liger-Kernel's fused linear cross-entropy and TRL's
chunked JSD). The maths is losses.py's: the chunk sums below are its means times the
number of positions they averaged, so the total equals the unchunked loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .chunk_size import auto_chunk_size
from .losses import cross_tokenizer_loss, hard_label_loss, logit_distillation_loss

__all__ = [
    "ChunkedLoss",
    "chunked_distillation_loss",
    "chunked_head_loss",
    "cross_tokenizer_sum",
    "hard_label_sum",
    "logit_distillation_sum",
    "loss_dtype",
    "matmul_dtype",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# (student logits of the chunk (n, V) in fp32 or fp64, rows of the chunk) -> {term: sum}
ChunkLossFn = Callable[[torch.Tensor, slice], Mapping[str, torch.Tensor]]


# -- sums over kept positions ------------------------------------------------------------------
# losses.py returns means over kept positions; a chunk's share of the full mean is its sum, so
# each is the mean times its count (one rounding away from the sum, well inside 1e-6 relative).

def logit_distillation_sum(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    alpha: float = 0.1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over kept positions of losses.logit_distillation_loss's divergence (x T^2).

    student_logits, teacher_logits: (..., V); mask: bool (...), True = keep. Divided by
    the number of kept positions it equals logit_distillation_loss with the same arguments.
    """
    mean = logit_distillation_loss(student_logits, teacher_logits, loss=loss,
                                   temperature=temperature, beta=beta, alpha=alpha, mask=mask)
    n = mask.sum() if mask is not None else student_logits[..., 0].numel()
    return mean * n


def hard_label_sum(logits: torch.Tensor, labels: torch.Tensor, *,
                   ignore_index: int = -100) -> torch.Tensor:
    """Summed cross-entropy of logits (..., V) against labels (...), ignore_index skipped."""
    return hard_label_loss(logits, labels, ignore_index=ignore_index) * (labels != ignore_index).sum()


def cross_tokenizer_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                        temperature: float = 1.0,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over kept rows of losses.cross_tokenizer_loss (x T^2).

    student_logits (n, V_s), teacher_logits (n, V_t), rows aligned; mask: bool (n,).
    """
    if mask is not None:
        student_logits, teacher_logits = student_logits[mask], teacher_logits[mask]
    mean = cross_tokenizer_loss(student_logits, teacher_logits, temperature=temperature)
    return mean * student_logits.shape[0]


# -- the chunked head + loss -------------------------------------------------------------------

def _autocast_dtype(dev: str) -> torch.dtype | None:
    """The dtype autocast is casting to on this device type, or None when it is off."""
    try:
        return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
    except TypeError:  # torch < 2.4 knows only the CPU and the GPU flavours
        if dev == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul would run in, autocast included."""
    both = (hidden.dtype, weight.dtype)
    cast = _autocast_dtype(hidden.device.type)
    if cast is not None and torch.float64 not in both:  # autocast leaves float64 alone
        return cast
    return torch.promote_types(*both)


def loss_dtype(dtype: torch.dtype) -> torch.dtype:
    # Softmax and sums in half precision lose too much; float64 stays float64.
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _run_chunks(hidden, weight, bias, chunk_loss, names, scales, chunk_size, need):
    """Loops over chunks; returns (total, per-term sums, grad_hidden, grad_weight, grad_bias).

    need: which of (hidden, weight, bias) want a gradient; the grads for the others are None.
    """
    n_rows = hidden.shape[0]
    mm = matmul_dtype(hidden, weight)
    acc = torch.float64 if mm == torch.float64 else torch.float32
    dev = hidden.device.type
    # One cast of the head for all chunks (a no-op when the dtypes already agree).
    w = weight.detach().to(mm)
    b = bias.detach().to(mm) if bias is not None else None
    grad_h = torch.zeros_like(hidden) if need[0] else None
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need[1] else None
    grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need[2] else None
    # float64 so many chunks add up without drift (MPS has no float64).
    sum_dtype = torch.float32 if hidden.device.type == "mps" else torch.float64
    sums = torch.zeros(len(names), dtype=sum_dtype, device=hidden.device)
    any_grad = any(need)

    for start in range(0, n_rows, chunk_size):
        rows = slice(start, min(start + chunk_size, n_rows))
        h = hidden[rows].detach().to(mm)
        # Our own matmuls run in `mm` exactly; the callback keeps the caller's autocast.
        with torch.autocast(dev, enabled=False):
            z = F.linear(h, w, b).to(loss_dtype(mm))
        with torch.set_grad_enabled(any_grad):
            z.requires_grad_(any_grad)
            parts = chunk_loss(z, rows)
            missing = [k for k in names if k not in parts]
            if missing:
                raise KeyError(f"the chunk loss returned no value for {', '.join(missing)}")
            vals = [parts[k] for k in names]
            sums += torch.stack([v.detach().to(sum_dtype) for v in vals])
            g = None
            if any_grad:
                objective = sum(s * v for s, v in zip(scales, vals))
                (g,) = torch.autograd.grad(objective, z, allow_unused=True)
                del objective
        # Drop this chunk's (n, V) tensors now, not when the next chunk's replace them:
        # otherwise two chunks' worth are alive at the peak.
        del z, parts, vals
        if g is None:  # no grads wanted, or nothing here depends on the student (all masked)
            continue
        g = g.to(mm)
        with torch.autocast(dev, enabled=False):
            if grad_h is not None:
                grad_h[rows] = (g @ w).to(grad_h.dtype)
            if grad_w is not None:
                if mm == acc:
                    grad_w.addmm_(g.T, h)  # in place: no (V, H) temporary per chunk
                else:
                    grad_w += (g.T @ h).to(acc)
            if grad_b is not None:
                grad_b += g.sum(0).to(acc)
        del g

    total = (sums * torch.tensor(scales, dtype=sum_dtype, device=sums.device)).sum()
    if grad_w is not None:
        grad_w = grad_w.to(weight.dtype)
    if grad_b is not None:
        grad_b = grad_b.to(bias.dtype)
    return total, sums, grad_h, grad_w, grad_b


class _ChunkedHead(torch.autograd.Function):
    """Forward does all the work (values and grads, chunk by chunk); backward only scales."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, chunk_loss, names, scales, chunk_size):
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                bias is not None and ctx.needs_input_grad[2])
        total, sums, gh, gw, gb = _run_chunks(hidden, weight, bias, chunk_loss, names, scales,
                                              chunk_size, need)
        ctx.save_for_backward(gh, gw, gb)
        ctx.mark_non_differentiable(sums)
        return total.to(loss_dtype(matmul_dtype(hidden, weight))), sums

    @staticmethod
    def backward(ctx, grad_total, _grad_sums):
        def scale(g):
            return None if g is None else g * grad_total.to(g.dtype)

        gh, gw, gb = ctx.saved_tensors
        return scale(gh), scale(gw), scale(gb), None, None, None, None


class ChunkedLoss(NamedTuple):
    """total: scalar with grad, sum of weight x term; terms: each term's detached mean."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def chunked_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    chunk_loss: ChunkLossFn,
    *,
    weights: Mapping[str, float],
    normalizer: float | torch.Tensor | Mapping[str, float | torch.Tensor],
    chunk_size: int | None = None,
) -> ChunkedLoss:
    """Weighted sum of loss terms on logits = hidden @ weight.T + bias, one chunk at a time.

    hidden (N, H) are the student's final hidden states (positions flattened); weight (V, H)
    and bias (V,) or None are its output head. chunk_loss(logits, rows) receives a chunk's
    logits (n, V), fp32 (fp64 if the inputs are), and the slice of the N rows they belong
    to, and returns {term: SUM over the chunk's kept positions}; compute teacher logits
    inside it under torch.no_grad(). Each term is divided by its normalizer (one number for
    all, or one per term: the number of kept positions, so the result is losses.py's mean;
    0 counts as 1). Returns ChunkedLoss(total = sum_k weights[k] * sum_k / normalizer_k,
    terms = {k: sum_k / normalizer_k}). Gradients w.r.t. hidden, weight and bias equal
    the unchunked computation's; no (N, V) tensor is made. chunk_size None picks one
    from free memory (auto_chunk_size).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden must be (N, H) and weight (V, H), got {tuple(hidden.shape)} "
                         f"and {tuple(weight.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    if not weights:
        raise ValueError("weights must name at least one term")
    names = tuple(weights)
    norms = normalizer if isinstance(normalizer, Mapping) else {k: normalizer for k in names}
    missing = [k for k in names if k not in norms]
    if missing:
        raise ValueError(f"normalizer has no entry for {', '.join(missing)}")
    # One host sync per call for the counts, none per chunk.
    scales = tuple(float(weights[k]) / max(float(norms[k]), 1.0) for k in names)
    chunk_size = auto_chunk_size(weight.shape[0], weight.shape[1], device=hidden.device,
                                 override=chunk_size)

    params = (hidden, weight) + ((bias,) if bias is not None else ())
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        total, sums = _ChunkedHead.apply(hidden, weight, bias, chunk_loss, names, scales,
                                         chunk_size)
    else:  # evaluation: the same values without computing any gradient
        total, sums, *_ = _run_chunks(hidden, weight, bias, chunk_loss, names, scales,
                                      chunk_size, (False, False, False))
        total = total.to(loss_dtype(matmul_dtype(hidden, weight)))
    terms = {k: (sums[i] / max(float(norms[k]), 1.0)).to(total.dtype)
             for i, k in enumerate(names)}
    return ChunkedLoss(total, terms)


def chunked_distillation_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    teacher_logits: Callable[[torch.Tensor], torch.Tensor] | None,
    *,
    weights: Mapping[str, float],
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    alpha: float = 0.1,
    chunk_size: int | None = None,
    teacher_sparse: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
) -> ChunkedLoss:
    """The causal-LM objective's logit terms, chunked: "logit", "hard_label", "cross_tokenizer".

    hidden (N, H), weight (V, H), bias (V,) or None: the student's final hidden states and
    head. teacher_logits(positions) returns the teacher's logits (n, V_t) for a LongTensor
    of positions (n,) into the N rows (e.g. its hidden rows through its head, or rows of a
    top-k cache with -inf elsewhere); it runs under no_grad. labels (N,) with -100 ignored
    feed "hard_label"; mask bool (N,) (default labels != -100, else all) selects the
    positions of "logit" and "cross_tokenizer". Each term is the mean over its own kept
    positions, as losses.py computes it; positions no term keeps never reach the head.
    teacher_sparse(positions), instead of teacher_logits, gives the teacher cache's top-k
    answers there (top_ids, top_logprobs, tail_logmass, tail_log_half), and "logit" is then
    teacher_cache.sparse_logit_loss.
    """
    unknown = [k for k in weights if k not in ("logit", "hard_label", "cross_tokenizer")]
    if unknown:
        raise ValueError(f"unknown term {unknown[0]!r}; the terms are logit, hard_label, "
                         "cross_tokenizer")
    n_rows = hidden.shape[0]
    if "hard_label" in weights and labels is None:
        raise ValueError("the hard_label term needs labels")
    if labels is not None and labels.shape != (n_rows,):
        raise ValueError(f"labels must be ({n_rows},), got {tuple(labels.shape)}")
    if mask is None:
        mask = (labels != -100) if labels is not None else torch.ones(
            n_rows, dtype=torch.bool, device=hidden.device)
    if mask.dtype != torch.bool or mask.shape != (n_rows,):
        raise ValueError(f"mask must be a bool tensor of shape ({n_rows},)")
    if teacher_sparse is not None and "cross_tokenizer" in weights:
        raise ValueError("the cross_tokenizer term needs live teacher_logits, not the cache")
    if ("logit" in weights or "cross_tokenizer" in weights) and teacher_logits is None \
            and teacher_sparse is None:
        raise ValueError("the logit and cross_tokenizer terms need teacher_logits")

    label_keep = labels != -100 if labels is not None else None
    keep = torch.zeros_like(mask)
    if "logit" in weights or "cross_tokenizer" in weights:
        keep |= mask
    if "hard_label" in weights:
        keep |= label_keep
    positions = torch.arange(n_rows, device=hidden.device)
    if not bool(keep.all()):
        # Padding and ignored positions cost no head matmul at all.
        positions = positions[keep]
        hidden = hidden[keep]
    sub_mask = mask[positions]
    sub_labels = labels[positions] if labels is not None else None
    normalizer = {"logit": mask.sum(), "cross_tokenizer": mask.sum(),
                  "hard_label": label_keep.sum() if label_keep is not None else 0}
    need_teacher = "logit" in weights or "cross_tokenizer" in weights

    def chunk_loss(z: torch.Tensor, rows: slice) -> dict[str, torch.Tensor]:
        m = sub_mask[rows]
        t = None
        if teacher_sparse is not None:
            from kdstudio.core.sparse import sparse_logit_loss

            out = {}
            if "logit" in weights:
                ids, lp, tail, half = teacher_sparse(positions[rows])
                out["logit"] = sparse_logit_loss(z, ids, lp, tail, tail_log_half=half, loss=loss,
                                                 temperature=temperature, beta=beta, alpha=alpha,
                                                 mask=m, reduction="sum")
            if "hard_label" in weights:
                out["hard_label"] = hard_label_sum(z, sub_labels[rows])
            return out
        if need_teacher:
            with torch.no_grad():
                t = teacher_logits(positions[rows])
        out = {}
        if "logit" in weights:
            out["logit"] = logit_distillation_sum(z, t, loss=loss, temperature=temperature,
                                                  beta=beta, alpha=alpha, mask=m)
        if "hard_label" in weights:
            out["hard_label"] = hard_label_sum(z, sub_labels[rows])
        if "cross_tokenizer" in weights:
            out["cross_tokenizer"] = cross_tokenizer_sum(z, t, temperature=temperature, mask=m)
        return out

    return chunked_head_loss(hidden, weight, bias, chunk_loss, weights=weights,
                             normalizer={k: normalizer[k] for k in weights},
                             chunk_size=chunk_size)
