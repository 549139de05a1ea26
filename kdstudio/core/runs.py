"""The run store: one folder per run under the user data directory.

A run folder holds config.toml, metrics.jsonl (append-only, one event a line),
checkpoints/, student/ (save_pretrained), README.md (a model card) and summary.json.
The base folder is platformdirs' user data directory, or $KDSTUDIO_HOME.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import functools
import importlib.resources
import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdstudio.core.errors import RunError

APP_NAME = "kdstudio"


def home_dir() -> Path:
    """Where KD Studio keeps runs and prepared teachers."""
    env = os.environ.get("KDSTUDIO_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def runs_dir() -> Path:
    return home_dir() / "runs"


def resources_dir() -> Path:
    """The shipped resources: demos, the built-in corpus, the demo teacher, the icon.

    They are the package kdstudio.resources (the top-level resources/ folder, mapped into
    the package by pyproject.toml), so a wheel carries them as package data. A checkout whose
    editable install predates that mapping still finds the folder beside the package.
    """
    try:
        root = importlib.resources.files("kdstudio.resources")
    except ModuleNotFoundError:
        root = None
    if root is None:
        return Path(__file__).resolve().parent.parent.parent / "resources"
    return root if isinstance(root, Path) else _extracted_resources()


@functools.lru_cache(maxsize=1)
def _extracted_resources() -> Path:
    """A real folder for resources that are not plain files (a zipped install), kept until exit."""
    stack = contextlib.ExitStack()
    atexit.register(stack.close)
    root = importlib.resources.files("kdstudio.resources")
    return Path(stack.enter_context(importlib.resources.as_file(root)))


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see either the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "run"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunInfo:
    """A run as listed by 'kdstudio runs' and the app's Runs page."""

    path: Path
    name: str
    created: str
    task: str
    teacher: str
    student: str
    status: str
    headline: str
    headline_value: float | None
    quality_retained: float | None
    speedup: float | None

    @property
    def id(self) -> str:
        return self.path.name


class Run:
    """One run folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def student_dir(self) -> Path:
        return self.path / "student"

    def append_event(self, record: dict[str, Any]) -> None:
        """Append one event as a JSON line; flushed at once so a crash loses at most one line."""
        line = json.dumps(record, default=str, allow_nan=True)
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()

    def events(self) -> list[dict[str, Any]]:
        """Every event recorded so far, each step once (steps a resume redid are dropped:
        events.drop_redone); a torn line (a crash mid-write) is skipped."""
        from kdstudio.core.events import drop_redone

        if not self.metrics_path.exists():
            return []
        out = []
        text = self.metrics_path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return drop_redone(out)

    def summary(self) -> dict[str, Any]:
        try:
            return json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def write_summary(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, data)

    def update_summary(self, **changes: Any) -> dict[str, Any]:
        data = self.summary()
        data.update(changes)
        self.write_summary(data)
        return data

    def status(self) -> str:
        """finished, stopped, failed, running, or interrupted (a run whose process died)."""
        s = self.summary()
        status = s.get("status", "unknown")
        if status == "running":
            pid, host = s.get("pid"), s.get("host")
            if host == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
                return "interrupted"
        return status

    def checkpoints(self) -> list[Path]:
        """Checkpoint folders, oldest first; only complete ones (with their state file)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.iterdir()
                 if p.is_dir() and p.name.startswith("step-") and (p / "trainer_state.json").exists()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def latest_checkpoint(self) -> Path | None:
        cps = self.checkpoints()
        return cps[-1] if cps else None

    def info(self) -> RunInfo:
        s = self.summary()
        return RunInfo(
            path=self.path,
            name=s.get("name", self.path.name),
            created=s.get("created", ""),
            task=s.get("task", ""),
            teacher=s.get("teacher", ""),
            student=s.get("student", ""),
            status=self.status(),
            headline=s.get("headline_metric", ""),
            headline_value=s.get("student_metrics", {}).get(s.get("headline_metric", "")),
            quality_retained=s.get("quality_retained"),
            speedup=s.get("speedup"),
        )


def create_run(config_toml: str, *, name: str, task: str, teacher: str, student: str) -> Run:
    """Make a new run folder with its config and a 'running' summary."""
    now = _dt.datetime.now()
    base = runs_dir()
    base.mkdir(parents=True, exist_ok=True)
    stem = f"{now:%Y%m%d-%H%M%S}-{_slug(name)}"
    path = base / stem
    n = 1
    while path.exists():
        n += 1
        path = base / f"{stem}-{n}"
    path.mkdir(parents=True)
    run = Run(path)
    atomic_write_text(run.config_path, config_toml)
    run.write_summary({
        "name": name, "created": now.isoformat(timespec="seconds"), "task": task,
        "teacher": teacher, "student": student, "status": "running",
        "pid": os.getpid(), "host": socket.gethostname(),
    })
    return run


def list_runs() -> list[RunInfo]:
    """Every run in the store, newest first."""
    base = runs_dir()
    if not base.is_dir():
        return []
    infos = [Run(p).info() for p in base.iterdir() if (p / "config.toml").exists()]
    return sorted(infos, key=lambda i: (i.created, i.path.name), reverse=True)


def find_run(ref: str) -> Run:
    """A run by folder path, folder name, unique prefix of it, or run name."""
    p = Path(ref).expanduser()
    if (p / "config.toml").exists():
        return Run(p)
    infos = list_runs()
    if p.is_dir() and not any(i.path.name == ref or i.name == ref for i in infos):
        raise RunError(f"The folder '{p}' is not a KD Studio run: it has no config.toml.",
                       hint="Give a run folder, or a run's name from 'kdstudio runs'.")
    if p.exists() and not p.is_dir():
        raise RunError(f"'{p}' is a file, not a KD Studio run folder.",
                       hint="Give a run folder, or a run's name from 'kdstudio runs'.")
    exact = [i for i in infos if i.path.name == ref or i.name == ref]
    if len(exact) >= 1:
        return Run(exact[0].path)
    pref = [i for i in infos if i.path.name.startswith(ref)]
    if len(pref) == 1:
        return Run(pref[0].path)
    if len(pref) > 1:
        raise RunError(f"'{ref}' matches {len(pref)} runs ({', '.join(i.id for i in pref[:5])}).",
                       hint="Give more of the run's folder name.")
    raise RunError(f"There is no run called '{ref}' in {runs_dir()}.",
                   hint="'kdstudio runs' lists the runs.")


def delete_run(run: Run) -> None:
    shutil.rmtree(run.path)
