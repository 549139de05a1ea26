"""The record format: one fixed-width record per stored position (Elias-Fano coded ids,
uint8 log-prob gaps, a float16 head); see the package's docstring.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from kdstudio.core.teacher_cache.keys import _HEAD_BYTES, _MAX_GAP

# ---------------------------------------------------------------- the record format


def _ef_low_bits(vocab_size: int, k: int) -> int:
    return max(0, math.floor(math.log2(vocab_size / k))) if vocab_size > k else 0


def _ef_layout(vocab_size: int, k: int) -> tuple[int, int, int]:
    """(low bits per id, high bitvector length, id bytes) of the Elias-Fano code."""
    low = _ef_low_bits(vocab_size, k)
    high = k + ((vocab_size - 1) >> low) + 1
    return low, high, (k * low + high + 7) // 8


def record_bytes(vocab_size: int, k: int) -> int:
    """Bytes one stored position takes: ids + k quantized log-probs + the 8-byte head."""
    if not 1 <= k <= vocab_size:
        raise ValueError(f"k must be in [1, vocab_size={vocab_size}], got {k}")
    return _ef_layout(vocab_size, k)[2] + k + _HEAD_BYTES


def encode_records(top_ids: torch.Tensor, top_logprobs: torch.Tensor, tail_logmass: torch.Tensor,
                   tail_log_half: torch.Tensor | None, vocab_size: int) -> np.ndarray:
    """Pack P positions into a (P, record_bytes(V, k)) uint8 array.

    top_ids (P, k) distinct ids in [0, V); top_logprobs (P, k) their log-probabilities at
    temperature 1, any order; tail_logmass (P,) log of the mass outside the top k;
    tail_log_half (P,) log of sum over the tail of sqrt(p), or None (stored as NaN).
    """
    ids = top_ids.detach().to("cpu", torch.int64)
    lp = top_logprobs.detach().to("cpu", torch.float32)
    p, k = ids.shape
    if lp.shape != (p, k) or tail_logmass.shape != (p,):
        raise ValueError(f"top_logprobs must be {(p, k)} and tail_logmass {(p,)}, got "
                         f"{tuple(lp.shape)} and {tuple(tail_logmass.shape)}")
    if p and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"top_ids must lie in [0, {vocab_size}), got {int(ids.min())}..{int(ids.max())}")
    low, high, id_bytes = _ef_layout(vocab_size, k)
    ids, order = ids.sort(dim=-1)
    lp = lp.gather(-1, order)
    if p and bool((ids[:, 1:] == ids[:, :-1]).any()):
        raise ValueError("top_ids must be distinct within each position")

    ids_np = ids.numpy()
    bits = np.zeros((p, k * low + high), dtype=np.uint8)
    if low:
        shifts = np.arange(low - 1, -1, -1, dtype=np.int64)
        bits[:, :k * low] = ((ids_np[:, :, None] >> shifts) & 1).reshape(p, k * low)
    hi_pos = (ids_np >> low) + np.arange(k)
    np.put_along_axis(bits[:, k * low:], hi_pos, 1, axis=1)
    id_part = np.packbits(bits, axis=1)
    if id_part.shape[1] < id_bytes:  # p == 0
        id_part = np.zeros((p, id_bytes), dtype=np.uint8)

    top = lp.max(dim=-1).values if k else torch.zeros(p)
    # e**-40 of the top entry is nothing; the cap also keeps -inf (an impossible token
    # in the top k) from spoiling the scale.
    gap = (top[:, None] - lp).nan_to_num(posinf=_MAX_GAP).clamp(0.0, _MAX_GAP)
    big = gap.max(dim=-1).values
    # Rounded to float16 first, so the decoder scales by exactly the stored value.
    big16 = big.to(torch.float16).float()
    scale = torch.where(big16 > 0, big16, torch.ones_like(big16))
    q = torch.round(255.0 * (gap / scale[:, None]).clamp(0.0, 1.0).sqrt()).to(torch.uint8)
    half = tail_log_half if tail_log_half is not None else torch.full((p,), float("nan"))
    head = torch.stack([top, big16, tail_logmass.detach().cpu().float(),
                        half.detach().cpu().float()], dim=-1).to(torch.float16)
    return np.concatenate([id_part, q.numpy(), head.numpy().view(np.uint8)], axis=1)


def decode_records(records: torch.Tensor, vocab_size: int, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unpack (P, record_bytes) uint8 records on their device.

    Returns top_ids (P, k) long in ascending id order, top_logprobs (P, k) float32 in the
    same order, and tail_logmass, tail_log_half (P,) float32.
    """
    low, high, id_bytes = _ef_layout(vocab_size, k)
    p = records.shape[0]
    dev = records.device
    shifts = torch.arange(7, -1, -1, device=dev, dtype=torch.uint8)
    if low:
        # The k low parts are the first k * low bits, most significant bit first: unpack
        # them all at once and weigh each id's `low` bits by their powers of two.
        nbytes = (k * low + 7) // 8
        bits = ((records[:, :nbytes].unsqueeze(-1) >> shifts) & 1).reshape(p, -1)[:, :k * low]
        weights = 1 << torch.arange(low - 1, -1, -1, device=dev, dtype=torch.int32)
        lows = (bits.reshape(p, k, low).to(torch.int32) * weights).sum(-1).long()
    else:
        lows = torch.zeros((p, k), dtype=torch.long, device=dev)
    start = k * low
    hb = records[:, start // 8:id_bytes]
    bits = ((hb.unsqueeze(-1) >> shifts) & 1).reshape(p, -1)[:, start % 8:start % 8 + high]
    ones = torch.nonzero(bits)
    if ones.shape[0] != p * k:
        raise ValueError("teacher cache record is corrupt: wrong number of ids; delete the cache")
    highs = ones[:, 1].reshape(p, k) - torch.arange(k, device=dev)
    ids = (highs << low) | lows

    q = records[:, id_bytes:id_bytes + k].float() * (1.0 / 255.0)
    head = records[:, id_bytes + k:].contiguous().view(torch.float16).float()
    top, big, tail, half = head.unbind(-1)
    lp = top[:, None] - big[:, None] * q * q
    return ids, lp, tail, half


@torch.no_grad()
def topk_targets(logits: torch.Tensor, k: int, *, chunk_elements: int = 1 << 25
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cache's targets from teacher logits (P, V), at temperature 1.

    Returns top_ids (P, k) long, top_logprobs (P, k) float32 (largest first), tail_logmass
    (P,) = log of the mass outside the top k (-inf when k == V) and tail_log_half (P,) =
    log of the tail's sum of sqrt(p). Works in chunks of about chunk_elements logits.
    """
    p, v = logits.shape
    if not 1 <= k <= v:
        raise ValueError(f"k must be in [1, vocab size {v}], got {k}")
    step = max(1, chunk_elements // v)
    outs = []
    for i in range(0, p, step):
        lp = F.log_softmax(logits[i:i + step].float(), dim=-1)
        vals, ids = lp.topk(k, dim=-1)
        # The tail as a log-sum-exp of what is left, not log(1 - sum): exact when it is tiny.
        rest = lp.scatter(-1, ids, float("-inf"))
        tail = torch.logsumexp(rest, dim=-1)
        half = torch.logsumexp(rest * 0.5, dim=-1)
        outs.append((ids, vals, tail, half))
    if not outs:
        e = logits.new_empty((0, k))
        return e.long(), e.float(), e.new_empty(0).float(), e.new_empty(0).float()
    return tuple(torch.cat(x) for x in zip(*outs))  # type: ignore[return-value]
