"""Managing the caches on disk: listing them with the runs that used each, recording a use,
deleting them, and the stopped passes and abandoned partial folders beside them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kdstudio.core.runs import atomic_write_json
from kdstudio.core.teacher_cache.keys import _PARTIAL, _STOPPED, cache_root
from kdstudio.core.teacher_cache.store import read_manifest


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
    manifest = read_manifest(path)
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
            m = read_manifest(d)
        except (OSError, ValueError):
            continue
        try:  # rglob: its evaluation part (the teacher's figures) is a subfolder of it
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
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


@dataclass
class StoppedPass:
    """A teacher pass that was stopped, set aside for the next writer of its key."""

    key: str
    path: Path
    rows: int
    size_bytes: int


def stopped_passes() -> list[StoppedPass]:
    """The stopped passes waiting under cache_root() to be continued."""
    root = cache_root()
    out = []
    for d in sorted(root.glob(f"{_STOPPED}*")) if root.is_dir() else []:
        try:
            progress = json.loads((d / "progress.json").read_text(encoding="utf-8"))
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        except (OSError, ValueError):  # taken over meanwhile, or unreadable
            continue
        out.append(StoppedPass(d.name[len(_STOPPED):], d, int(progress.get("rows", 0)), size))
    return out


def delete_stopped_passes() -> int:
    """Delete every stopped pass; returns the bytes freed."""
    freed = 0
    for p in stopped_passes():
        shutil.rmtree(p.path, ignore_errors=True)
        freed += p.size_bytes
    return freed


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
