"""The teacher-logit cache: the teacher's top-k answers, written once, read by every student.

One teacher pass over the training rows is stored under
``home_dir() / "teacher-cache" / <key>``, where the key is a sha256 over everything that
changes the teacher's answers (see ``cache_key``), so a changed input never reads a stale
cache. A cache is written into a hidden ``.partial-*`` folder and renamed into place only
when complete, so an interrupted pass is never read; a stopped one is set aside as
``.stopped-<key>`` and continued by the next writer of that key.

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

import importlib
from typing import Any

# Loaded on first use, so that the decision words (teacher_cache.use) need no torch.
_HOME = {
    "CacheInfo": "manage",
    "CachedTargets": "store",
    "DEFAULT_K": "keys",
    "FORMAT_VERSION": "keys",
    "KEY_PARTS": "keys",
    "SPARSE_LOSSES": "keys",
    "TeacherCache": "store",
    "TeacherCacheWriter": "store",
    "cache_dir_for": "keys",
    "cache_key": "keys",
    "cache_root": "keys",
    "decode_records": "records",
    "delete_cache": "manage",
    "delete_stopped_passes": "manage",
    "encode_records": "records",
    "find_cache": "store",
    "list_caches": "manage",
    "record_bytes": "records",
    "record_use": "manage",
    "remove_partial_caches": "manage",
    "sparse_logit_loss": "sparse",
    "stopped_passes": "manage",
    "tail_temper": "sparse",
    "token_ids_fingerprint": "keys",
    "tokenizer_fingerprint": "keys",
    "topk_targets": "records",
    "weights_fingerprint": "keys",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        # The loss on cached targets is a torch primitive below the cache (core/sparse.py).
        home = "kdstudio.core.sparse" if _HOME[name] == "sparse" else f"{__name__}.{_HOME[name]}"
        return getattr(importlib.import_module(home), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "delete_stopped_passes",
    "encode_records",
    "find_cache",
    "list_caches",
    "record_bytes",
    "record_use",
    "remove_partial_caches",
    "sparse_logit_loss",
    "stopped_passes",
    "tail_temper",
    "token_ids_fingerprint",
    "tokenizer_fingerprint",
    "topk_targets",
    "weights_fingerprint",
]
