"""File work behind the Runs page's actions (no Qt; the slow parts run in ctx.jobs)."""

from __future__ import annotations

import shutil
from pathlib import Path


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same folder ('' never matches)."""
    if not a or not b:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def export_clashes(src: Path, dest: Path) -> list[str] | None:
    """None when dest is missing or empty (safe to copy into); otherwise the names in dest that
    the student's files would replace (possibly none)."""
    if not dest.is_dir() or not any(dest.iterdir()):
        return None
    return sorted(p.name for p in src.iterdir() if (dest / p.name).exists())


def copy_student(src: Path, dest: Path) -> Path:
    """Copy a run's student folder (save_pretrained form) into dest."""
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"the run has no student model in {src}")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest, dirs_exist_ok=True)
    return dest


def delete_runs(paths: list[Path]) -> list[str]:
    """Delete run folders (through the run store); returns the folders deleted."""
    from kdstudio.core.runs import Run, delete_run

    done = []
    for p in paths:
        delete_run(Run(p))
        done.append(str(p))
    return done
