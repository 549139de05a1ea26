"""The record format: one fixed-width record per stored position (Elias-Fano coded ids,
bit-packed log-prob gaps, a float16 head); see the package's docstring and the README.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from kdstudio.core.teacher_cache.keys import _HEAD_BYTES, _MAX_GAP, FORMAT_VERSION

# ---------------------------------------------------------------- the record format


def lp_bits_for(k: int) -> int:
    """Bits per stored log-probability in format 2: 8 up to k = 64, then 4 (a larger k buys
    more than finer steps do; benchmarks/teacher_cache_k.py measures both)."""
    return 8 if k <= 64 else 4


def _ef_low_bits(vocab_size: int, k: int) -> int:
    return max(0, math.floor(math.log2(vocab_size / k))) if vocab_size > k else 0


def _ef_layout(vocab_size: int, k: int) -> tuple[int, int, int]:
    """(low bits per id, high bitvector length, id bytes) of the Elias-Fano code."""
    low = _ef_low_bits(vocab_size, k)
    high = k + ((vocab_size - 1) >> low) + 1
    return low, high, (k * low + high + 7) // 8


def _layout(vocab_size: int, k: int, fmt: int, lp_bits: int | None) -> tuple[int, int, int, int]:
    """(low bits, high bits, id bytes, log-prob bits) of a record."""
    if fmt not in _HEAD_BYTES:
        raise ValueError(f"teacher cache format must be one of {sorted(_HEAD_BYTES)}, got {fmt}")
    bits = 8 if fmt == 1 else (lp_bits_for(k) if lp_bits is None else int(lp_bits))
    if not 1 <= bits <= 8:
        raise ValueError(f"lp_bits must be in [1, 8], got {bits}")
    return (*_ef_layout(vocab_size, k), bits)


def record_bytes(vocab_size: int, k: int, fmt: int = FORMAT_VERSION, lp_bits: int | None = None) -> int:
    """Bytes one stored position takes: ids + k quantized log-probs + the float16 head."""
    if not 1 <= k <= vocab_size:
        raise ValueError(f"k must be in [1, vocab_size={vocab_size}], got {k}")
    _, _, id_bytes, bits = _layout(vocab_size, k, fmt, lp_bits)
    return id_bytes + (k * bits + 7) // 8 + _HEAD_BYTES[fmt]


def _pack(values: np.ndarray, width: int) -> np.ndarray:
    """(P, n) unsigned ints of `width` bits -> (P, ceil(n * width / 8)) bytes, MSB first."""
    p, n = values.shape
    if width == 8:
        return values.astype(np.uint8)
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    bits = ((values.astype(np.int64)[:, :, None] >> shifts) & 1).reshape(p, n * width)
    out = np.packbits(bits.astype(np.uint8), axis=1)
    return out if out.shape[1] else np.zeros((p, (n * width + 7) // 8), np.uint8)


def _unpack(data: torch.Tensor, n: int, width: int, skip: int = 0) -> torch.Tensor:
    """The inverse of _pack on a (P, bytes) uint8 tensor, starting `skip` bits in: (P, n) long."""
    p = data.shape[0]
    if width == 8 and skip == 0:
        return data[:, :n].long()
    shifts = torch.arange(7, -1, -1, device=data.device, dtype=torch.uint8)
    bits = ((data.unsqueeze(-1) >> shifts) & 1).reshape(p, -1)[:, skip:skip + n * width]
    weights = 1 << torch.arange(width - 1, -1, -1, device=data.device, dtype=torch.int32)
    return (bits.reshape(p, n, width).to(torch.int32) * weights).sum(-1).long()


def encode_records(top_ids: torch.Tensor, top_logprobs: torch.Tensor, tail_logmass: torch.Tensor,
                   tail_log_half: torch.Tensor | None, vocab_size: int, *,
                   fmt: int = FORMAT_VERSION, lp_bits: int | None = None) -> np.ndarray:
    """Pack P positions into a (P, record_bytes(V, k, fmt, lp_bits)) uint8 array.

    top_ids (P, k) distinct ids in [0, V); top_logprobs (P, k) their log-probabilities at
    temperature 1, any order; tail_logmass (P,) log of the mass outside the top k;
    tail_log_half (P,) log of sum over the tail of sqrt(p), or None (format 1 only; stored
    as NaN; format 2 does not store it).
    """
    ids = top_ids.detach().to("cpu", torch.int64)
    lp = top_logprobs.detach().to("cpu", torch.float32)
    p, k = ids.shape
    if lp.shape != (p, k) or tail_logmass.shape != (p,):
        raise ValueError(f"top_logprobs must be {(p, k)} and tail_logmass {(p,)}, got "
                         f"{tuple(lp.shape)} and {tuple(tail_logmass.shape)}")
    if p and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"top_ids must lie in [0, {vocab_size}), got {int(ids.min())}..{int(ids.max())}")
    low, high, id_bytes, bits = _layout(vocab_size, k, fmt, lp_bits)
    ids, order = ids.sort(dim=-1)
    lp = lp.gather(-1, order)
    if p and bool((ids[:, 1:] == ids[:, :-1]).any()):
        raise ValueError("top_ids must be distinct within each position")

    ids_np = ids.numpy()
    ef = np.zeros((p, k * low + high), dtype=np.uint8)
    if low:
        shifts = np.arange(low - 1, -1, -1, dtype=np.int64)
        ef[:, :k * low] = ((ids_np[:, :, None] >> shifts) & 1).reshape(p, k * low)
    hi_pos = (ids_np >> low) + np.arange(k)
    np.put_along_axis(ef[:, k * low:], hi_pos, 1, axis=1)
    id_part = np.packbits(ef, axis=1)
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
    levels = (1 << bits) - 1
    q = torch.round(levels * (gap / scale[:, None]).clamp(0.0, 1.0).sqrt()).to(torch.int64)
    head = [top, big16, tail_logmass.detach().cpu().float()]
    if fmt == 1:
        head.append(tail_log_half.detach().cpu().float() if tail_log_half is not None
                    else torch.full((p,), float("nan")))
    head_np = torch.stack(head, dim=-1).to(torch.float16).numpy().astype("<f2").view(np.uint8)
    return np.concatenate([id_part, _pack(q.numpy(), bits), head_np], axis=1)


def decode_records(records: torch.Tensor, vocab_size: int, k: int, *, fmt: int = FORMAT_VERSION,
                   lp_bits: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unpack (P, record_bytes) uint8 records on their device.

    Returns top_ids (P, k) long in ascending id order, top_logprobs (P, k) float32 in the
    same order, tail_logmass (P,) float32 and tail_log_half (P,) float32 (NaN in format 2,
    which leaves the tail's shape to the loss's model, sparse.tail_temper).
    """
    low, high, id_bytes, bits = _layout(vocab_size, k, fmt, lp_bits)
    p = records.shape[0]
    dev = records.device
    lows = (_unpack(records[:, :(k * low + 7) // 8], k, low) if low
            else torch.zeros((p, k), dtype=torch.long, device=dev))
    start = k * low
    shifts = torch.arange(7, -1, -1, device=dev, dtype=torch.uint8)
    hb = records[:, start // 8:id_bytes]
    ef = ((hb.unsqueeze(-1) >> shifts) & 1).reshape(p, -1)[:, start % 8:start % 8 + high]
    ones = torch.nonzero(ef)
    if ones.shape[0] != p * k:
        raise ValueError("teacher cache record is corrupt: wrong number of ids; delete the cache")
    highs = ones[:, 1].reshape(p, k) - torch.arange(k, device=dev)
    ids = (highs << low) | lows

    q_bytes = (k * bits + 7) // 8
    q = _unpack(records[:, id_bytes:id_bytes + q_bytes], k, bits).float() * (1.0 / ((1 << bits) - 1))
    # The head is little-endian float16 in the file; viewed in place on the device, as every
    # platform torch runs on is little-endian.
    head = records[:, id_bytes + q_bytes:].contiguous().view(torch.float16).float()
    top, big, tail = head[:, 0], head[:, 1], head[:, 2]
    half = head[:, 3] if fmt == 1 else torch.full_like(tail, float("nan"))
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
