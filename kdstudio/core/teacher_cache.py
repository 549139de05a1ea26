"""The teacher-logit cache: the teacher's top-k answers, written once, read by every student.

One teacher pass over the training rows is stored under
``home_dir() / "teacher-cache" / <key>``, where the key is a sha256 over everything that
changes the teacher's answers (see ``cache_key``), so a changed input never reads a stale
cache. A cache is written into a hidden ``.partial-*`` folder and renamed into place only
when complete, so an interrupted pass is never read.

Format (FORMAT_VERSION 1), one fixed-width record per stored position:
  ids        the k token ids, sorted, Elias-Fano coded: k*l low bits plus a
             k + V/2**l bit high-part bitvector, l = floor(log2(V/k)); about
             k * (2 + log2(V/k)) bits, against k * ceil(log2 V) for plain packing.
  log-probs  uint8 per id (in id order): the gap g to the largest log-prob, coded
             q = round(255 * sqrt(g / G)) with G the position's largest gap (capped at
             40 nats), so the likely entries get the finest steps: |error| <=
             sqrt(g*G)/255 + G/255**2/4 nats (0 at the top entry, 0.015 at g=1, G=15),
             plus the float16 rounding of the largest log-prob (<= |value|/2048).
  head       4 x float16: largest log-prob, G, log of the mass outside the top k
             ("tail"), and log of the sum over the tail of sqrt(p) (the tail's mass at
             temperature 2, which makes the default temperature's tail bucket exact).
At V=151,936 and k=64 a record is 178 bytes (DistillKit's recommended format: ~300 at
k=128); at V=2,048 it is 128. ``record_bytes(V, k)`` gives it for any V and k;
benchmarks/teacher_cache_k.py measures what k costs and buys.

Files: ``manifest.json``; per shard ``shard-NNNNN.records.npy`` (positions x record
bytes, memory-mapped when read), ``.masks.npy`` (each row's stored positions as packed
bits) and ``.index.npy`` (row id, first position, positions, sequence length, mask
offset).

``sparse_logit_loss`` is the logit distillation loss on these targets.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F

from .runs import atomic_write_json, home_dir

__all__ = [
    "DEFAULT_K",
    "FORMAT_VERSION",
    "KEY_PARTS",
    "SPARSE_LOSSES",
    "CacheInfo",
    "CachedTargets",
    "TeacherCache",
    "TeacherCacheWriter",
    "cache_dir_for",
    "cache_key",
    "cache_root",
    "decode_records",
    "delete_cache",
    "encode_records",
    "find_cache",
    "list_caches",
    "record_bytes",
    "record_use",
    "remove_partial_caches",
    "sparse_logit_loss",
    "tail_temper",
    "token_ids_fingerprint",
    "tokenizer_fingerprint",
    "topk_targets",
    "weights_fingerprint",
]

FORMAT_VERSION = 1
# Chosen with benchmarks/teacher_cache_k.py: the largest k whose record fits 200 bytes at
# a 151,936 vocabulary; the gradient error still falls with k up to there.
DEFAULT_K = 64
KEY_PARTS = ("teacher", "revision", "weights", "tokenizer", "data", "token_ids",
             "max_length", "pack", "k", "dtype")
SPARSE_LOSSES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl")
_HEAD_BYTES = 8  # 4 x float16
_MAX_GAP = 40.0  # nats below a position's largest log-prob that are stored as they are
_PARTIAL = ".partial-"


# ---------------------------------------------------------------- the key


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def token_ids_fingerprint(rows: Iterable[Sequence[int]]) -> str:
    """sha256 of the exact token ids of the training rows, in order (lengths included)."""
    h = hashlib.sha256()
    for row in rows:
        arr = np.asarray(row, dtype=np.int64)
        h.update(np.int64(arr.size).tobytes())
        h.update(arr.tobytes())
    return h.hexdigest()


_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".gguf"}


def weights_fingerprint(model_dir: str | Path) -> str:
    """sha256 over a model folder's weight files and config.json.

    Each file contributes its name, size and mtime (a retrained file with the same shapes
    has a new mtime), and a safetensors file its header too. Copying the folder changes
    mtimes and so the fingerprint: the cache then misses, which is the safe direction.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"model folder {root} does not exist")
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if not f.is_file() or (f.suffix not in _WEIGHT_SUFFIXES and f.name != "config.json"):
            continue
        st = f.resolve().stat()
        h.update(f"{f.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}|".encode())
        if f.suffix == ".safetensors" and st.st_size >= 8:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                h.update(fh.read(min(n, 100_000_000)))
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of a Hugging Face tokenizer's full definition (or its vocabulary and specials)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        text = backend.to_str()
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    specials = getattr(tokenizer, "special_tokens_map", {})
    return _sha(f"{type(tokenizer).__name__}|{text}|{json.dumps(specials, sort_keys=True, default=str)}"
                .encode())


def _normalize(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _normalized_parts(parts: Mapping[str, Any]) -> dict[str, Any]:
    missing = [p for p in KEY_PARTS if p not in parts]
    if missing:
        raise ValueError(f"cache key parts are missing {', '.join(missing)}; a cache key needs "
                         f"all of {', '.join(KEY_PARTS)} (None where one does not apply)")
    out = dict(parts)
    if not isinstance(out["token_ids"], str):
        # The rows themselves would make the manifest huge; their digest is as strict.
        out["token_ids"] = token_ids_fingerprint(out["token_ids"])
    k = out["k"]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"cache key part k must be an integer >= 1, got {k!r}")
    out["format"] = FORMAT_VERSION
    return _normalize(out)


def cache_key(parts: Mapping[str, Any]) -> str:
    """sha256 (hex) over every input that changes the teacher's answers.

    parts must hold KEY_PARTS: teacher (name or path), revision, weights
    (weights_fingerprint), tokenizer (tokenizer_fingerprint), data (a fingerprint of the
    data source), token_ids (the training rows' ids, or their token_ids_fingerprint),
    max_length, pack, k, dtype. Extra parts are hashed too. The format version is added.
    """
    canon = json.dumps(_normalized_parts(parts), sort_keys=True, separators=(",", ":"),
                       default=str)
    return _sha(canon.encode())


def cache_root() -> Path:
    return home_dir() / "teacher-cache"


def cache_dir_for(parts: Mapping[str, Any]) -> Path:
    return cache_root() / cache_key(parts)


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
    if low:
        # Eight ids' low parts fill exactly `low` bytes, so id j of every group of eight
        # starts at the same byte and bit: read it for all groups with one strided slice
        # per byte. A low part lies within 4 bytes (low <= 25 for any real vocabulary);
        # bytes read past it are shifted away, and padding covers the last group.
        groups = (k + 7) // 8
        src = records if k % 8 == 0 else F.pad(records, (0, low + 4))
        parts = []
        for j in range(8):
            first, shift = divmod(j * low, 8)
            word = torch.zeros((p, groups), dtype=torch.long, device=dev)
            for i in range(4):
                word = (word << 8) | src[:, first + i:first + i + groups * low:low].long()
            parts.append((word >> (32 - low - shift)) & ((1 << low) - 1))
        lows = torch.stack(parts, dim=-1).reshape(p, groups * 8)[:, :k]
    else:
        lows = torch.zeros((p, k), dtype=torch.long, device=dev)
    start = k * low
    hb = records[:, start // 8:id_bytes]
    shifts = torch.arange(7, -1, -1, device=dev, dtype=torch.uint8)
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


# ---------------------------------------------------------------- writing


def _row_list(row_ids: Any) -> list[int]:
    if isinstance(row_ids, torch.Tensor):
        return [int(x) for x in row_ids.reshape(-1).tolist()]
    return [int(x) for x in row_ids]


class TeacherCacheWriter:
    """Appends the teacher's answers for batches of rows; publishes the cache when finished.

    Use as a context manager: a clean exit calls finish(), an exception abort(). Rows are
    identified by their index in the training rows; a row added twice keeps its first
    answer. If expected_rows is given, finish() requires rows 0..expected_rows-1, all.
    """

    def __init__(self, parts: Mapping[str, Any], vocab_size: int, *, expected_rows: int | None = None,
                 shard_tokens: int = 1 << 18, root: Path | None = None):
        self.key = cache_key(parts)
        self.parts = _normalized_parts(parts)
        self.k = int(self.parts["k"])
        self.vocab_size = int(vocab_size)
        record_bytes(self.vocab_size, self.k)  # validates k against V
        self.expected_rows = expected_rows
        self.shard_tokens = int(shard_tokens)
        self.root = Path(root) if root is not None else cache_root()
        self.final_dir = self.root / self.key
        self.tmp_dir = self.root / f"{_PARTIAL}{self.key[:16]}-{os.getpid()}-{secrets.token_hex(4)}"
        self.tmp_dir.mkdir(parents=True)
        self._seen: set[int] = set()
        self._shards: list[dict[str, int | str]] = []
        self._records: list[np.ndarray] = []
        self._index: list[tuple[int, int, int, int, int]] = []
        self._masks: list[np.ndarray] = []
        self._buffered = 0
        self._mask_bytes = 0
        self._tokens = 0
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def has(self, row_id: int) -> bool:
        return int(row_id) in self._seen

    def add(self, row_ids: Sequence[int] | torch.Tensor, mask: torch.Tensor,
            logits: torch.Tensor | None = None, *, top_ids: torch.Tensor | None = None,
            top_logprobs: torch.Tensor | None = None, tail_logmass: torch.Tensor | None = None,
            tail_log_half: torch.Tensor | None = None) -> None:
        """Store a batch of n rows.

        mask (n, seq) bool: the positions to store. Either logits (n, seq, V), or the
        top k already chosen: top_ids (n, seq, k), top_logprobs (n, seq, k) at temperature
        1, tail_logmass (n, seq) (computed as log(1 - sum) if omitted) and optionally
        tail_log_half (n, seq).
        """
        if self._closed:
            raise RuntimeError("this teacher cache writer is already finished or aborted")
        rows = _row_list(row_ids)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 2 \
                or mask.shape[0] != len(rows):
            raise ValueError(f"mask must be a bool (rows, seq) tensor with {len(rows)} rows")
        if not rows:
            return
        mask = mask.detach().cpu()
        if logits is not None:
            if logits.shape[:2] != mask.shape or logits.shape[-1] != self.vocab_size:
                raise ValueError(f"logits must be {(*mask.shape, self.vocab_size)}, got {tuple(logits.shape)}")
            # Row by row: selecting all kept positions at once would copy the whole batch
            # of logits (gigabytes at a 151k vocabulary).
            dev_mask = mask.to(logits.device)
            ids, lp, tail, half = (torch.cat(x) for x in zip(*(
                topk_targets(logits[r].detach()[dev_mask[r]], self.k) for r in range(len(rows)))))
        else:
            if top_ids is None or top_logprobs is None:
                raise ValueError("give either logits or top_ids and top_logprobs")
            want = (*mask.shape, self.k)
            if top_ids.shape != want or top_logprobs.shape != want:
                raise ValueError(f"top_ids and top_logprobs must be {want}, got "
                                 f"{tuple(top_ids.shape)} and {tuple(top_logprobs.shape)}")
            sel = mask.to(top_ids.device)
            ids, lp = top_ids.detach()[sel], top_logprobs.detach().float()[sel]
            if tail_logmass is None:
                tail = torch.log1p(-lp.exp().sum(-1).clamp(max=1.0))
            else:
                tail = tail_logmass.detach().float()[sel]
            half = None if tail_log_half is None else tail_log_half.detach().float()[sel]
        if half is None:
            half = torch.full(tail.shape, float("nan"))
        records = encode_records(ids, lp, tail.cpu(), half.cpu(), self.vocab_size)

        start = 0
        keep_rec = []
        for r, row in enumerate(rows):
            m = mask[r]
            n = int(m.sum())
            if row in self._seen:
                start += n
                continue
            self._seen.add(row)
            seq_len = int(m.nonzero().max()) + 1 if n else 0
            bits = np.packbits(m[:seq_len].numpy())
            self._index.append((row, self._buffered, n, seq_len, self._mask_bytes))
            self._masks.append(bits)
            self._mask_bytes += bits.size
            keep_rec.append(records[start:start + n])
            self._buffered += n
            start += n
        self._records.extend(keep_rec)
        if self._buffered >= self.shard_tokens:
            self._flush()

    def _flush(self) -> None:
        if not self._index:
            return
        name = f"shard-{len(self._shards):05d}"
        width = record_bytes(self.vocab_size, self.k)
        recs = np.concatenate(self._records) if self._records else np.zeros((0, width), np.uint8)
        masks = np.concatenate(self._masks) if self._masks else np.zeros(0, np.uint8)
        np.save(self.tmp_dir / f"{name}.records.npy", recs)
        np.save(self.tmp_dir / f"{name}.masks.npy", masks)
        np.save(self.tmp_dir / f"{name}.index.npy", np.asarray(self._index, dtype=np.int64).reshape(-1, 5))
        self._shards.append({"name": name, "rows": len(self._index), "tokens": int(recs.shape[0])})
        self._tokens += int(recs.shape[0])
        self._records, self._masks, self._index = [], [], []
        self._buffered = self._mask_bytes = 0

    def finish(self) -> Path:
        """Write the manifest and publish the folder; returns the cache folder."""
        if self._closed:
            raise RuntimeError("this teacher cache writer is already finished or aborted")
        if self.expected_rows is not None:
            want = set(range(self.expected_rows))
            if self._seen != want:
                missing = len(want - self._seen)
                extra = len(self._seen - want)
                self.abort()
                raise ValueError(f"teacher cache is incomplete: {missing} of {self.expected_rows} "
                                 f"rows missing, {extra} outside the range; nothing was published")
        self._flush()
        self._closed = True
        size = sum(f.stat().st_size for f in self.tmp_dir.iterdir())
        manifest = {
            "format": FORMAT_VERSION, "key": self.key, "key_parts": self.parts, "k": self.k,
            "vocab_size": self.vocab_size, "record_bytes": record_bytes(self.vocab_size, self.k),
            "rows": len(self._seen), "tokens": self._tokens, "bytes": size,
            "bytes_per_token": round(size / max(self._tokens, 1), 2),
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "used_by": [], "shards": self._shards, "complete": True,
        }
        atomic_write_json(self.tmp_dir / "manifest.json", manifest)
        try:
            os.rename(self.tmp_dir, self.final_dir)
        except OSError:
            if not (self.final_dir / "manifest.json").is_file():
                raise
            # Another writer published the same key first: its answers are the same.
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        return self.final_dir

    def abort(self) -> None:
        """Discard everything written; nothing is published."""
        self._closed = True
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


# ---------------------------------------------------------------- reading


@dataclass
class CachedTargets:
    """A batch's teacher targets, padded to (B, L); mask marks the stored positions."""

    top_ids: torch.Tensor        # (B, L, k) long, ascending ids
    top_logprobs: torch.Tensor   # (B, L, k) float32, matching top_ids
    tail_logmass: torch.Tensor   # (B, L) float32
    tail_log_half: torch.Tensor  # (B, L) float32, NaN when the writer had no logits
    mask: torch.Tensor           # (B, L) bool


def _read_manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text(encoding="utf-8"))


class TeacherCache:
    """A complete cache folder, opened read-only; records are memory-mapped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.name.startswith(_PARTIAL) or not (self.path / "manifest.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a complete teacher cache (no manifest.json)")
        self.manifest = _read_manifest(self.path)
        if self.manifest.get("format") != FORMAT_VERSION or not self.manifest.get("complete"):
            raise ValueError(f"{self.path} holds teacher cache format {self.manifest.get('format')}, "
                             f"this version reads {FORMAT_VERSION}; delete the cache to rebuild it")
        self.k = int(self.manifest["k"])
        self.vocab_size = int(self.manifest["vocab_size"])
        self._records: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        self._where: dict[int, tuple[int, int, int, int, int]] = {}
        width = record_bytes(self.vocab_size, self.k)
        for s, shard in enumerate(self.manifest["shards"]):
            name = shard["name"]
            recs = np.load(self.path / f"{name}.records.npy", mmap_mode="r") if shard["tokens"] \
                else np.zeros((0, width), np.uint8)
            if recs.shape != (shard["tokens"], width):
                raise ValueError(f"{self.path / name} does not match its manifest; delete the cache")
            self._records.append(recs)
            self._masks.append(np.load(self.path / f"{name}.masks.npy"))
            for row, first, n, seq_len, moff in np.load(self.path / f"{name}.index.npy").tolist():
                self._where[row] = (s, first, n, seq_len, moff)

    @property
    def key(self) -> str:
        return str(self.manifest["key"])

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, row_id: int) -> bool:
        return int(row_id) in self._where

    def get(self, row_ids: Sequence[int] | torch.Tensor, device: str | torch.device = "cpu",
            seq_len: int | None = None) -> CachedTargets:
        """The targets of these rows on device, padded to seq_len (default: the longest row).

        Padding is ids 0 with a uniform distribution over the k + 1 buckets; mask is False
        there, so losses that take the mask never see it.
        """
        rows = _row_list(row_ids)
        where = []
        for r in rows:
            if r not in self._where:
                raise KeyError(f"row {r} is not in the teacher cache {self.path.name}")
            where.append(self._where[r])
        longest = max((w[3] for w in where), default=0)
        width = longest if seq_len is None else int(seq_len)
        if width < longest:
            raise ValueError(f"seq_len {seq_len} is shorter than a cached row ({longest} positions)")
        mask = np.zeros((len(rows), width), dtype=bool)
        chunks = []
        for i, (s, first, n, slen, moff) in enumerate(where):
            if slen:
                nbytes = (slen + 7) // 8
                mask[i, :slen] = np.unpackbits(self._masks[s][moff:moff + nbytes])[:slen].astype(bool)
            chunks.append(self._records[s][first:first + n])
        recs = np.concatenate(chunks) if chunks else np.zeros((0, record_bytes(self.vocab_size, self.k)),
                                                               np.uint8)
        dev = torch.device(device)
        rec_t = torch.from_numpy(np.ascontiguousarray(recs)).to(dev)
        ids, lp, tail, half = decode_records(rec_t, self.vocab_size, self.k)
        m = torch.from_numpy(mask).to(dev)
        b, k = len(rows), self.k
        uniform = -math.log(k + 1)
        out_ids = torch.zeros((b, width, k), dtype=torch.long, device=dev)
        out_lp = torch.full((b, width, k), uniform, dtype=torch.float32, device=dev)
        out_tail = torch.full((b, width), uniform, dtype=torch.float32, device=dev)
        out_half = torch.full((b, width), uniform, dtype=torch.float32, device=dev)
        out_ids[m], out_lp[m], out_tail[m], out_half[m] = ids, lp, tail, half
        return CachedTargets(out_ids, out_lp, out_tail, out_half, m)


def find_cache(parts: Mapping[str, Any]) -> TeacherCache | None:
    """The complete cache for these key parts, or None."""
    path = cache_dir_for(parts)
    return TeacherCache(path) if (path / "manifest.json").is_file() else None


# ---------------------------------------------------------------- managing


@dataclass
class CacheInfo:
    """A cache as listed by the app's cache manager."""

    key: str
    path: Path
    teacher: str
    k: int
    rows: int
    tokens: int
    size_bytes: int
    bytes_per_token: float
    created: str
    used_by: list[str]


def record_use(cache_dir: str | Path, run_id: str) -> None:
    """Add run_id to the cache's used_by list (once)."""
    path = Path(cache_dir)
    manifest = _read_manifest(path)
    used = list(manifest.get("used_by", []))
    if run_id not in used:
        used.append(run_id)
        manifest["used_by"] = used
        atomic_write_json(path / "manifest.json", manifest)


def list_caches() -> list[CacheInfo]:
    """Complete caches under cache_root(), newest first; partial folders are not listed."""
    root = cache_root()
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.name.startswith(".") or not (d / "manifest.json").is_file():
            continue
        try:
            m = _read_manifest(d)
        except (OSError, ValueError):
            continue
        try:
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        except OSError:  # deleted meanwhile
            continue
        out.append(CacheInfo(
            key=d.name, path=d, teacher=str(m.get("key_parts", {}).get("teacher", "")),
            k=int(m.get("k", 0)), rows=int(m.get("rows", 0)), tokens=int(m.get("tokens", 0)),
            size_bytes=size, bytes_per_token=float(m.get("bytes_per_token", 0.0)),
            created=str(m.get("created", "")), used_by=list(m.get("used_by", []))))
    return sorted(out, key=lambda c: c.created, reverse=True)


def delete_cache(key_or_path: str | Path) -> None:
    """Delete one cache folder, given its key or its path (which must lie in cache_root())."""
    root = cache_root().resolve()
    path = Path(key_or_path)
    target = (path if path.is_absolute() or len(path.parts) > 1 else root / str(key_or_path)).resolve()
    if target.parent != root or target.name.startswith("."):
        raise ValueError(f"{key_or_path} is not a teacher cache in {root}")
    if not target.is_dir():
        raise FileNotFoundError(f"no teacher cache {target.name} in {root}")
    shutil.rmtree(target)


def remove_partial_caches() -> int:
    """Delete partial folders left by writers whose process has ended; returns how many."""
    root = cache_root()
    removed = 0
    for d in root.glob(f"{_PARTIAL}*") if root.is_dir() else []:
        try:
            pid = int(d.name.split("-")[-2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


# ---------------------------------------------------------------- the sparse loss


def tail_temper(tail_logmass: torch.Tensor, tail_log_half: torch.Tensor, min_logprob: torch.Tensor,
                n_tail: int, temperature: float) -> torch.Tensor:
    """Estimate log(sum over the tail of p**(1/T)) for the teacher's tail bucket: (N,) -> (N,).

    f(a) = log sum p**a is convex in a and known at a = 0 (log n_tail), a = 1/2
    (tail_log_half) and a = 1 (tail_logmass): exact at T = 1, 2 and infinity, linear in a
    between them (an upper bound), and for T < 1 the chord through a = 1/2 and 1 carried
    on, capped by every tail p being at most the smallest kept one (min_logprob). A NaN
    tail_log_half (not stored) is replaced by the middle of its bounds,
    [tail - min_logprob/2, (log n_tail + tail)/2].
    """
    a = 1.0 / temperature
    m = tail_logmass
    if n_tail <= 0:
        return torch.full_like(m, float("-inf"))
    log_n = math.log(n_tail)
    finite = torch.isfinite(m)
    # Work on finite stand-ins so that no -inf meets a zero weight (0 * inf = NaN).
    m_f = torch.where(finite, m, torch.zeros_like(m))
    guess = 0.5 * ((m_f - 0.5 * min_logprob) + 0.5 * (log_n + m_f))
    h = torch.where(torch.isnan(tail_log_half) | ~finite, guess, tail_log_half)
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
    return torch.where(finite, est, m)


def _kl_buckets(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim; 0 * log(0 / q) counts as 0: (..., B) -> (...)."""
    p = logp.exp()
    diff = torch.where(p > 0, logp - logq, torch.zeros_like(logp))
    return (p * diff).sum(dim=-1)


def _log_mix(logp: torch.Tensor, logq: torch.Tensor, weight: float) -> torch.Tensor:
    if weight == 1.0:
        return logp
    if weight == 0.0:
        return logq
    return torch.logsumexp(torch.stack([logp + math.log(weight), logq + math.log1p(-weight)]), dim=0)


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
    z = s / temperature
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    s_top = z.gather(-1, ids) - lse
    s_tail = torch.logsumexp(z.scatter(-1, ids, torch.finfo(dt).min), dim=-1, keepdim=True) - lse
    logp_s = torch.cat([s_top, s_tail], dim=-1)

    # Teacher: tempered top-k plus the tempered tail estimate, renormalised.
    min_lp = t_lp.min(dim=-1).values if k else torch.zeros_like(t_tail)
    t_tail_T = tail_temper(t_tail, half, min_lp, vocab - k, temperature)
    logp_t = F.log_softmax(torch.cat([t_lp / temperature, t_tail_T.unsqueeze(-1)], dim=-1), dim=-1)

    if loss == "forward_kl":
        per = _kl_buckets(logp_t, logp_s)
    elif loss == "reverse_kl":
        per = _kl_buckets(logp_s, logp_t)
    elif loss == "jsd":
        if beta == 0.0:
            per = _kl_buckets(logp_t, logp_s)
        elif beta == 1.0:
            per = _kl_buckets(logp_s, logp_t)
        else:
            log_m = _log_mix(logp_t, logp_s, beta)
            per = beta * _kl_buckets(logp_t, log_m) + (1.0 - beta) * _kl_buckets(logp_s, log_m)
    elif loss == "skew_kl":
        per = _kl_buckets(logp_t, _log_mix(logp_t, logp_s, alpha))
    else:
        per = _kl_buckets(logp_s, _log_mix(logp_s, logp_t, alpha))

    total = per.sum()
    if reduction == "mean":
        total = total / max(per.numel(), 1)
    return total * (temperature ** 2)
