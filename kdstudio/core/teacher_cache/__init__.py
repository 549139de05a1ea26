"""The teacher-logit cache: the teacher's top-k answers, written once, read by every student.

One teacher pass over the training rows is stored under
``home_dir() / "teacher-cache" / <key>``, where the key is a sha256 over everything that
changes the teacher's answers (see ``cache_key``), so a changed input never reads a stale
cache. A cache is written into a hidden ``.partial-*`` folder and renamed into place only
when complete, so an interrupted pass is never read; a stopped one is set aside as
``.stopped-<key>`` and continued by the next writer of that key.

Format (FORMAT_VERSION 2; the README's "The cache's format" is the reference), one
fixed-width record per stored position:
  ids        the k token ids, sorted, Elias-Fano coded: k*l low bits plus a
             k + V/2**l bit high-part bitvector, l = floor(log2(V/k)).
  log-probs  b bits per id (in id order; b = lp_bits_for(k): 8 up to k = 64, else 4),
             MSB first: the gap g to the largest log-prob, q = round(L * sqrt(g / G)),
             L = 2**b - 1, G the position's largest gap (capped at 40 nats).
  head       3 x float16, little-endian: largest log-prob, G, log of the mass outside the
             top k. The tail's shape is not stored: the loss models it as a power law in rank
             that continues the smallest kept entry and holds that mass (sparse.tail_power_law),
             which a served teacher's answers give as well as a local pass.
Format 1 (still read) had 8-bit codes and a fourth float16, the log of the tail's sum of
sqrt(p). At V=151,936 and k=64 a record is 176 bytes; at V=2,048 and k=256, 294.

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
    "lp_bits_for": "records",
    "READABLE_FORMATS": "keys",
    "import_topk_jsonl": "imports",
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
    "lp_bits_for",
    "READABLE_FORMATS",
    "import_topk_jsonl",
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
