"""Writing a cache (published only when complete) and reading it (memory-mapped); manage.py
lists and deletes caches.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from kdstudio.core.runs import atomic_write_json
from kdstudio.core.teacher_cache.keys import (
    _PARTIAL,
    _STOPPED,
    FORMAT_VERSION,
    READABLE_FORMATS,
    _normalized_parts,
    cache_dir_for,
    cache_key,
    cache_root,
)
from kdstudio.core.teacher_cache.records import (
    decode_records,
    encode_records,
    lp_bits_for,
    record_bytes,
    topk_targets,
)

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

    keep() instead of abort() sets the rows written so far aside; a later writer for the
    same key (``resume=True``) takes them over and has() says which rows it still needs.
    """

    def __init__(self, parts: Mapping[str, Any], vocab_size: int, *, expected_rows: int | None = None,
                 shard_tokens: int = 1 << 18, root: Path | None = None, resume: bool = False,
                 fmt: int = FORMAT_VERSION):
        if fmt not in READABLE_FORMATS:
            raise ValueError(f"fmt must be one of {READABLE_FORMATS}, got {fmt}")
        self.format = fmt  # an older format only to test that such caches are still read
        self.key = cache_key(parts, fmt)
        self.parts = _normalized_parts(parts, fmt)
        self.k = int(self.parts["k"])
        self.vocab_size = int(vocab_size)
        record_bytes(self.vocab_size, self.k)  # validates k against V
        self.lp_bits = lp_bits_for(self.k) if fmt == 2 else 8
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
        self.extra: dict[str, Any] = {}  # more manifest keys (e.g. the teacher's own figures)
        self.resumed_rows = self._take_over() if resume else 0

    @property
    def stopped_dir(self) -> Path:
        """Where keep() sets a stopped pass aside for a later writer of the same key."""
        return self.root / f"{_STOPPED}{self.key}"

    def _take_over(self) -> int:
        """Continue a pass that keep() set aside: its shards move into this writer's folder
        (one rename, so two writers never share them). Returns how many rows it held."""
        try:
            progress = json.loads((self.stopped_dir / "progress.json").read_text(encoding="utf-8"))
            if progress.get("key") != self.key or progress.get("format") != self.format:
                return 0
            self.tmp_dir.rmdir()
            os.rename(self.stopped_dir, self.tmp_dir)
        except (OSError, ValueError):  # none, another writer took it, or unreadable
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            return 0
        (self.tmp_dir / "progress.json").unlink(missing_ok=True)
        self._shards = list(progress["shards"])
        self._tokens = int(progress["tokens"])
        for shard in self._shards:
            index = np.load(self.tmp_dir / f"{shard['name']}.index.npy")
            self._seen.update(int(r) for r in index[:, 0])
        return len(self._seen)

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
        records = encode_records(ids, lp, tail.cpu(), half.cpu(), self.vocab_size,
                                 fmt=self.format, lp_bits=self.lp_bits)

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
        width = record_bytes(self.vocab_size, self.k, self.format, self.lp_bits)
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
            "format": self.format, "key": self.key, "key_parts": self.parts, "k": self.k,
            "vocab_size": self.vocab_size, "lp_bits": self.lp_bits,
            "record_bytes": record_bytes(self.vocab_size, self.k, self.format, self.lp_bits),
            "rows": len(self._seen), "tokens": self._tokens, "bytes": size,
            "bytes_per_token": round(size / max(self._tokens, 1), 2),
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "used_by": [], "shards": self._shards, "complete": True,
        }
        manifest.update({k: v for k, v in self.extra.items() if k not in manifest})
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

    def keep(self) -> int:
        """Stop here but keep the rows written so far, unpublished, for a later writer of the
        same key to continue (``resume=True``). Returns how many rows were kept."""
        if self._closed:
            raise RuntimeError("this teacher cache writer is already finished or aborted")
        self._flush()
        self._closed = True
        if not self._seen:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            return 0
        atomic_write_json(self.tmp_dir / "progress.json", {
            "format": self.format, "key": self.key, "shards": self._shards,
            "tokens": self._tokens, "rows": len(self._seen)})
        shutil.rmtree(self.stopped_dir, ignore_errors=True)  # an older stopped pass
        os.rename(self.tmp_dir, self.stopped_dir)
        return len(self._seen)


# ---------------------------------------------------------------- reading


@dataclass
class CachedTargets:
    """A batch's teacher targets, padded to (B, L); mask marks the stored positions."""

    top_ids: torch.Tensor        # (B, L, k) long, ascending ids
    top_logprobs: torch.Tensor   # (B, L, k) float32, matching top_ids
    tail_logmass: torch.Tensor   # (B, L) float32
    tail_log_half: torch.Tensor  # (B, L) float32, NaN when the writer had no logits
    mask: torch.Tensor           # (B, L) bool


def read_manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text(encoding="utf-8"))


class TeacherCache:
    """A complete cache folder, opened read-only; records are memory-mapped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.name.startswith(_PARTIAL) or not (self.path / "manifest.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a complete teacher cache (no manifest.json)")
        self.manifest = read_manifest(self.path)
        self.format = self.manifest.get("format")
        if self.format not in READABLE_FORMATS or not self.manifest.get("complete"):
            raise ValueError(
                f"{self.path} holds teacher cache format {self.format}, which this version of KD "
                f"Studio does not read (it reads {', '.join(map(str, READABLE_FORMATS))}). Delete "
                f"it with 'kdstudio cache delete {self.path.name[:12]}'; the next run that needs "
                "it writes it again with one teacher pass.")
        self.k = int(self.manifest["k"])
        self.vocab_size = int(self.manifest["vocab_size"])
        self.lp_bits = int(self.manifest.get("lp_bits", 8))
        self._records: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        self._where: dict[int, tuple[int, int, int, int, int]] = {}
        width = self.record_bytes
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
    def record_bytes(self) -> int:
        return record_bytes(self.vocab_size, self.k, self.format, self.lp_bits)

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
        recs = np.concatenate(chunks) if chunks else np.zeros((0, self.record_bytes), np.uint8)
        dev = torch.device(device)
        rec_t = torch.from_numpy(np.ascontiguousarray(recs)).to(dev)
        ids, lp, tail, half = decode_records(rec_t, self.vocab_size, self.k, fmt=self.format,
                                             lp_bits=self.lp_bits)
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
    """The complete cache for these key parts, or None: in this version's format, else one an
    earlier version wrote (format 1, still read)."""
    for fmt in (FORMAT_VERSION, *(f for f in READABLE_FORMATS if f != FORMAT_VERSION)):
        path = cache_dir_for(parts, fmt)
        if (path / "manifest.json").is_file():
            return TeacherCache(path)
    return None
