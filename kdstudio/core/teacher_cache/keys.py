"""The cache key: a sha256 over everything that changes the teacher's answers, and where a
cache with that key lives.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdstudio.core.runs import home_dir

FORMAT_VERSION = 2
# Formats this version reads: 1 (with the tail's shape at T = 2 in each record) and 2.
READABLE_FORMATS = (1, 2)
# Chosen with benchmarks/teacher_cache_k.py: the largest k whose record fits 200 bytes at
# a 151,936 vocabulary; the gradient error still falls with k up to there.
DEFAULT_K = 64
KEY_PARTS = ("teacher", "revision", "weights", "tokenizer", "data", "token_ids",
             "max_length", "pack", "k", "dtype")
from kdstudio.core.loss_kinds import SPARSE_LOSSES  # noqa: E402  (re-exported)
_HEAD_BYTES = {1: 8, 2: 6}  # float16s: format 1 stores 4, format 2 stores 3
_MAX_GAP = 40.0  # nats below a position's largest log-prob that are stored as they are
_PARTIAL = ".partial-"
_STOPPED = ".stopped-"  # a pass that was stopped, kept to be continued: .stopped-<key>


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


def _normalized_parts(parts: Mapping[str, Any], fmt: int = FORMAT_VERSION) -> dict[str, Any]:
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
    out["format"] = fmt
    return _normalize(out)


def cache_key(parts: Mapping[str, Any], fmt: int = FORMAT_VERSION) -> str:
    """sha256 (hex) over every input that changes the teacher's answers.

    parts must hold KEY_PARTS: teacher (name or path), revision, weights
    (weights_fingerprint), tokenizer (tokenizer_fingerprint), data (a fingerprint of the
    data source), token_ids (the training rows' ids, or their token_ids_fingerprint),
    max_length, pack, k, dtype. Extra parts are hashed too. The format version (fmt) is added.
    """
    canon = json.dumps(_normalized_parts(parts, fmt), sort_keys=True, separators=(",", ":"),
                       default=str)
    return _sha(canon.encode())


def cache_root() -> Path:
    return home_dir() / "teacher-cache"


def cache_dir_for(parts: Mapping[str, Any], fmt: int = FORMAT_VERSION) -> Path:
    return cache_root() / cache_key(parts, fmt)
