"""A sweep's queue and where it is kept.

A sweep is a base RunConfig plus a list of students (see spec.py) and an optional second
axis, expanded into one run per student and axis value; with ``quantize_int8`` each finished
student is also exported as int8 ONNX (queue.py). The queue lives in
KDSTUDIO_HOME/sweeps/<id>/sweep.json (written atomically after every change, the base
config beside it as base.toml), so a sweep outlives the process that ran it; queue.py runs
it, figures.py draws its results.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdstudio.core.config import RunConfig, config_from_dict, load_config
from kdstudio.core.errors import KDStudioError, SweepError
from kdstudio.core.runs import Run, atomic_write_json, home_dir, pid_alive
from kdstudio.core.sweep.spec import StudentSpec, axis_label, check_axis, check_students

SWEEP_FILE = "sweep.json"
BASE_FILE = "base.toml"
# What an entry can be; 'interrupted' is a 'running' entry whose process died.
STATUSES = ("pending", "running", "finished", "stopped", "interrupted", "failed")
UNFINISHED = ("pending", "running", "stopped", "interrupted")


def sweeps_dir() -> Path:
    return home_dir() / "sweeps"


@dataclass
class SweepEntry:
    """One run of the queue and where it stands."""

    index: int
    label: str
    name: str                   # the run's name, as shown on the Runs page
    student: dict[str, Any]     # StudentSpec.to_dict()
    axis_value: Any = None
    status: str = "pending"
    run_dir: str = ""
    error: str = ""
    started: str = ""
    ended: str = ""
    wall_s: float | None = None  # whole run (loading included), measured by the queue
    note: str = ""              # e.g. why its int8 export failed (the run itself is fine)

    @property
    def spec(self) -> StudentSpec:
        return StudentSpec.from_dict(self.student)

    @property
    def run(self) -> Run | None:
        return Run(Path(self.run_dir)) if self.run_dir else None


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


class Sweep:
    """A sweep and its queue; ``save()`` writes it, ``Sweep.load(folder)`` reads it back."""

    def __init__(self, folder: Path, base: RunConfig, students: list[StudentSpec], axis: str,
                 axis_values: list[Any], entries: list[SweepEntry], created: str,
                 runner: dict[str, Any] | None = None, quantize_int8: bool = False,
                 timing: dict[str, Any] | None = None):
        self.folder = Path(folder)
        self.base = base
        self.students = students
        self.axis = axis
        self.axis_values = axis_values
        self.entries = entries
        self.created = created
        self.runner = runner or {}
        self.quantize_int8 = quantize_int8  # export each finished student as int8 ONNX too
        # The teacher and the finished students timed together (timing.Session.to_dict,
        # keyed 'teacher' and the runs' folders; sweep/timed.py); {} before the first.
        self.timing = timing or {}
        self._lock = threading.RLock()

    @property
    def id(self) -> str:
        return self.folder.name

    @property
    def path(self) -> Path:
        return self.folder / SWEEP_FILE

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def new(cls, base: RunConfig, students: list[StudentSpec], axis: str = "",
            axis_values: list[Any] | tuple = (), *, teacher_layers: int | None = None,
            sweep_id: str = "", quantize_int8: bool = False) -> Sweep:
        """Plan a sweep (nothing is written until ``save()``); every run config is validated."""
        base = copy.deepcopy(base).validate()
        students = check_students(list(students), teacher_layers)
        values = check_axis(base, axis, list(axis_values))
        folder = sweeps_dir() / sweep_id if sweep_id else _new_folder()
        entries: list[SweepEntry] = []
        for s in students:
            for v in (values or [None]):
                suffix = axis_label(axis, v)
                label = s.label + (f", {suffix}" if suffix else "")
                name = f"sweep-{folder.name}-{s.label}" + (f"-{suffix.replace('=', '')}" if suffix else "")
                entries.append(SweepEntry(len(entries), label, name, s.to_dict(), v))
        sweep = cls(folder, base, students, axis, values, entries, _now(),
                    quantize_int8=bool(quantize_int8))
        for e in entries:
            sweep.config_for(e)  # raises ConfigError naming the key, before anything runs
        return sweep

    def config_for(self, entry: SweepEntry) -> RunConfig:
        """The entry's run config: the base with its student, axis value and name."""
        d = self.base.to_dict()
        d["name"] = entry.name
        d["student"].update(entry.spec.section())
        if self.axis == "temperature":
            d["method"]["temperature"] = float(entry.axis_value)
        elif self.axis == "method":
            d["method"]["logit_loss"] = entry.axis_value
        elif self.axis == "shape":
            d["student"]["shape"] = entry.axis_value
        cfg = config_from_dict(d)
        if cfg.teacher.cache == "auto" and len(self.entries) > 1:
            # The students could share one teacher pass: 'auto' weighs it against them all
            # (teacher_source.cache_pays); the first writes the cache if it pays, the rest read it.
            cfg.teacher.cache_readers = len(self.entries)
        return cfg

    # -- reading and writing -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1, "id": self.id, "created": self.created,
            "task": self.base.task, "teacher": self.base.teacher.name,
            "dataset": self.base.data.dataset, "base_config": BASE_FILE,
            "students": [s.to_dict() for s in self.students],
            "axis": self.axis, "axis_values": self.axis_values,
            "quantize_int8": self.quantize_int8,
            "runner": self.runner,
            "timing": self.timing or None,
            "entries": [asdict(e) for e in self.entries],
        }

    def save(self) -> None:
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            base = self.folder / BASE_FILE
            if not base.exists():
                self.base.save(base)
            atomic_write_json(self.path, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path) -> Sweep:
        folder = Path(folder).expanduser()
        path = folder / SWEEP_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SweepError(f"'{folder}' is not a sweep folder (it has no {SWEEP_FILE}).") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise SweepError(f"The sweep file '{path}' cannot be read: {exc}.",
                             hint="It may be damaged; its runs are still on the Runs page.") from None
        try:
            base = load_config(folder / BASE_FILE)
            entries = [SweepEntry(**e) for e in data["entries"]]
            students = [StudentSpec.from_dict(s) for s in data.get("students", [])]
        except (KeyError, TypeError) as exc:
            raise SweepError(f"The sweep file '{path}' is damaged (missing or odd key {exc}).") from None
        except KDStudioError as exc:
            raise SweepError(f"The sweep '{folder.name}' has an unusable base config: {exc}") from None
        return cls(folder, base, students, data.get("axis", ""), list(data.get("axis_values", [])),
                   entries, data.get("created", ""), data.get("runner") or {},
                   quantize_int8=data.get("quantize_int8") is True,  # off for older sweeps
                   timing=data.get("timing") if isinstance(data.get("timing"), dict) else None)

    def copy(self) -> Sweep:
        """A snapshot another thread may read while this one moves the queue on."""
        from dataclasses import replace

        with self._lock:
            return Sweep(self.folder, self.base, list(self.students), self.axis,
                         list(self.axis_values), [replace(e) for e in self.entries],
                         self.created, dict(self.runner), self.quantize_int8, dict(self.timing))

    def reload(self) -> None:
        """Read the queue file again (another process may have moved it on)."""
        fresh = Sweep.load(self.folder)
        with self._lock:
            self.entries, self.runner = fresh.entries, fresh.runner
            self.quantize_int8 = fresh.quantize_int8
            self.timing = fresh.timing

    # -- where it stands -----------------------------------------------------------------------
    def runner_alive(self) -> bool:
        """Another live process on this machine holds the queue."""
        pid, host = self.runner.get("pid"), self.runner.get("host")
        return (isinstance(pid, int) and pid != os.getpid() and host == socket.gethostname()
                and pid_alive(pid))

    def entry_status(self, entry: SweepEntry) -> str:
        """The entry's status, with 'running' turned 'interrupted' when nobody runs it."""
        if entry.status == "running" and not self.runner_alive() and self.runner.get("pid") != os.getpid():
            return "interrupted"
        return entry.status

    def reconcile(self) -> bool:
        """Bring entries in line with their run folders (a run resumed or deleted elsewhere);
        True when something changed."""
        changed = False
        with self._lock:
            for e in self.entries:
                if not e.run_dir or e.status == "running":
                    continue
                run = Run(Path(e.run_dir))
                if not run.config_path.exists():
                    if e.status in ("finished", "stopped", "interrupted"):
                        # The run was deleted: the student is measured again if resumed.
                        e.status, e.run_dir, e.error = "pending", "", ""
                        changed = True
                elif e.status != "finished" and run.status() == "finished":
                    e.status, e.error = "finished", ""
                    changed = True
        return changed

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for e in self.entries:
            out[self.entry_status(e)] += 1
        return out

    def is_unfinished(self) -> bool:
        return any(self.entry_status(e) in UNFINISHED for e in self.entries)

    def describe(self) -> str:
        """'2 of 4 runs finished, 1 stopped, 1 to run'."""
        c = self.counts()
        parts = [f"{c['finished']} of {len(self.entries)} runs finished"]
        for key, word in (("running", "running"), ("stopped", "stopped"),
                          ("interrupted", "interrupted"), ("failed", "failed"),
                          ("pending", "to run")):
            if c[key]:
                parts.append(f"{c[key]} {word}")
        return ", ".join(parts)

    def todo(self, retry_failed: bool = False) -> list[SweepEntry]:
        wanted = UNFINISHED + (("failed",) if retry_failed else ())
        return [e for e in self.entries if self.entry_status(e) in wanted]

    # -- moving the queue on (run_sweep and the app's queue both use these) ----------------------
    @contextmanager
    def claim(self) -> Iterator[Sweep]:
        """Hold the queue for this process while it runs; refuses a queue another holds."""
        if self.path.exists():
            self.reload()
        if self.runner_alive():
            raise SweepError(f"The sweep '{self.id}' is already running in another process "
                             f"(pid {self.runner['pid']}).",
                             hint="Wait for it to finish, or stop it there first.")
        with self._lock:
            for e in self.entries:  # whoever ran them before is gone
                if e.status == "running":
                    e.status = "interrupted"
            self.runner = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
            self.reconcile()
            self.save()
        try:
            yield self
        finally:
            with self._lock:
                self.runner = {}
                self.save()

    def start_args(self, entry: SweepEntry) -> tuple[RunConfig | None, Path | None]:
        """(config, None) to start the entry afresh, or (None, run folder) to resume it."""
        run = entry.run
        if run is not None and run.config_path.exists() and run.latest_checkpoint() is not None:
            return None, run.path
        if run is not None:
            _discard_unstarted(run, entry.name)
            entry.run_dir = ""
        return self.config_for(entry), None

    def begin(self, entry: SweepEntry) -> None:
        with self._lock:
            entry.status, entry.error, entry.started, entry.ended = "running", "", _now(), ""
            entry.note = ""
            self.save()

    def attach(self, entry: SweepEntry, run_dir: str) -> None:
        """The entry's run folder exists (the engine's Started event)."""
        with self._lock:
            if entry.run_dir != str(run_dir):
                entry.run_dir = str(run_dir)
                self.save()

    def end(self, entry: SweepEntry, status: str, *, run_dir: str | Path | None = None,
            error: str = "", wall_s: float | None = None) -> None:
        with self._lock:
            entry.status, entry.error, entry.ended = status, error, _now()
            if run_dir:
                entry.run_dir = str(run_dir)
            if wall_s is not None and status == "finished" and entry.wall_s is None:
                entry.wall_s = round(wall_s, 2)
            self.save()

    def set_timing(self, session: dict[str, Any]) -> None:
        """Keep a timing session (sweep/timed.py); it replaces the one before. The file is
        read first: another process may have moved the queue on since this copy was loaded."""
        with self._lock:
            if self.path.exists():
                self.reload()
            self.timing = dict(session)
            self.save()

    def set_note(self, entry: SweepEntry, note: str) -> None:
        with self._lock:
            if entry.note != note:
                entry.note = note
                self.save()


def _discard_unstarted(run: Run, name: str) -> None:
    """Remove this entry's earlier run folder when it never got to a checkpoint or a student:
    starting afresh makes a new one, and a husk that cannot be resumed only clutters the Runs
    page. Anything else (a folder elsewhere, another run's) is left alone."""
    import shutil

    from kdstudio.core.runs import runs_dir

    try:
        inside = run.path.resolve().parent == runs_dir().resolve()
    except OSError:
        return
    if (inside and run.path.is_dir() and run.summary().get("name") == name
            and run.status() != "running" and not run.checkpoints() and not run.student_dir.exists()):
        shutil.rmtree(run.path, ignore_errors=True)


def stop_note(entry: SweepEntry) -> str:
    """What resuming a stopped entry will do, in words."""
    run = entry.run
    if run is not None and run.latest_checkpoint() is not None:
        return "its checkpoint is kept; resuming continues from it"
    return "it stopped before its first step, so resuming starts it again"


def _new_folder() -> Path:
    base = sweeps_dir()
    stem = f"{_dt.datetime.now():%Y%m%d-%H%M%S}"
    path, n = base / stem, 1
    while path.exists():
        n += 1
        path = base / f"{stem}-{n}"
    return path


def list_sweeps() -> list[Sweep]:
    """Every readable sweep, newest first (damaged ones are skipped)."""
    base = sweeps_dir()
    if not base.is_dir():
        return []
    out = []
    for p in base.iterdir():
        if (p / SWEEP_FILE).exists():
            try:
                out.append(Sweep.load(p))
            except SweepError:
                continue
    return sorted(out, key=lambda s: (s.created, s.id), reverse=True)


def unfinished_sweeps() -> list[Sweep]:
    """Sweeps with runs still to do that no live process is running."""
    return [s for s in list_sweeps() if s.is_unfinished() and not s.runner_alive()]


def find_sweep(ref: str) -> Sweep:
    """A sweep by folder, id, or unique prefix of its id."""
    p = Path(ref).expanduser()
    if (p / SWEEP_FILE).exists():
        return Sweep.load(p)
    if (sweeps_dir() / ref / SWEEP_FILE).exists():
        return Sweep.load(sweeps_dir() / ref)
    ids = [s.id for s in list_sweeps()]
    pref = [i for i in ids if i.startswith(ref)]
    if len(pref) == 1:
        return Sweep.load(sweeps_dir() / pref[0])
    if len(pref) > 1:
        raise SweepError(f"'{ref}' matches {len(pref)} sweeps ({', '.join(pref[:5])}).",
                         hint="Give more of the sweep's id.")
    raise SweepError(f"There is no sweep called '{ref}' in {sweeps_dir()}.",
                     hint="'kdstudio sweep --list' lists the sweeps.")
