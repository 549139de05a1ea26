"""Tradeoff sweeps: one teacher, several students, a queue of ordinary runs.

A sweep is a base RunConfig plus a list of students (derived from the teacher with a
number of layers, or other models by name) and an optional second axis (temperatures or
logit losses). It expands into one run per student and axis value. The queue lives in
KDSTUDIO_HOME/sweeps/<id>/sweep.json (written atomically after every change, the base
config beside it as base.toml), so a sweep outlives the process that ran it:
``run_sweep`` runs whatever is unfinished, continuing an interrupted run from its
checkpoint, and can simply be called again after a crash, a Ctrl-C or closing the app.

The figures (table, Pareto front, summary) are in sweep_figures.py; the time estimate
and the budget helper in sweep_plan.py.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdstudio.core.config import LOGIT_LOSSES, RunConfig, config_from_dict, load_config
from kdstudio.core.errors import KDStudioError
from kdstudio.core.events import EventSink, ignore
from kdstudio.core.runs import Run, _pid_alive, atomic_write_json, home_dir

SWEEP_FILE = "sweep.json"
BASE_FILE = "base.toml"
AXES = {"temperature": "temperatures", "method": "logit losses"}
# What an entry can be; 'interrupted' is a 'running' entry whose process died.
STATUSES = ("pending", "running", "finished", "stopped", "interrupted", "failed")
UNFINISHED = ("pending", "running", "stopped", "interrupted")


class SweepError(KDStudioError):
    """A sweep's students, axis or queue file is unusable, or it is already running."""

    title = "Sweep problem"


def sweeps_dir() -> Path:
    return home_dir() / "sweeps"


# -- the spec ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StudentSpec:
    """One student of a sweep: derived from the teacher (layers) or another model (name)."""

    layers: float = 0.0
    name: str = ""

    @property
    def derived(self) -> bool:
        return not self.name

    @property
    def label(self) -> str:
        if self.name:
            return Path(self.name.rstrip("/\\")).name or self.name
        if self.layers >= 1:
            n = int(self.layers)
            return f"{n} layer" + ("" if n == 1 else "s")
        return f"{self.layers:.0%} of the layers"

    def section(self) -> dict[str, Any]:
        """The [student] keys this student sets over the base config."""
        if self.name:
            return {"name": self.name}
        return {"name": "", "layers": float(self.layers), "layer_indices": []}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name} if self.name else {"layers": self.layers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentSpec:
        return cls(layers=float(d.get("layers", 0.0)), name=str(d.get("name", "")))


def derived(*layers: float) -> list[StudentSpec]:
    return [StudentSpec(layers=float(k)) for k in layers]


def axis_label(axis: str, value: Any) -> str:
    """How an axis value is written in labels ('T=2', 'reverse_kl')."""
    if not axis:
        return ""
    return f"T={value:g}" if axis == "temperature" else str(value)


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

    @property
    def spec(self) -> StudentSpec:
        return StudentSpec.from_dict(self.student)

    @property
    def run(self) -> Run | None:
        return Run(Path(self.run_dir)) if self.run_dir else None


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _check_students(students: list[StudentSpec], teacher_layers: int | None) -> list[StudentSpec]:
    if not students:
        raise SweepError("The sweep has no students.",
                         hint="Choose at least one layer count (e.g. 1, 2, 3) or another model.")
    out: list[StudentSpec] = []
    for s in students:
        if s.derived:
            if s.layers <= 0 or (s.layers >= 1 and s.layers != int(s.layers)):
                raise SweepError(f"A derived student has {s.layers:g} layers; give a whole number "
                                 "of layers (e.g. 2) or a fraction below 1 (e.g. 0.5).")
            if teacher_layers and s.layers >= 1 and s.layers > teacher_layers:
                raise SweepError(f"A derived student cannot keep {int(s.layers)} layers: the "
                                 f"teacher has only {teacher_layers}.",
                                 hint=f"Choose counts from 1 to {teacher_layers - 1}.")
        if s not in out:
            out.append(s)
    return out


def _check_axis(base: RunConfig, axis: str, values: list[Any]) -> list[Any]:
    if not axis:
        if values:
            raise SweepError("Values were given for a second axis, but no axis was chosen.",
                             hint="Choose 'temperature' or 'method'.")
        return []
    if axis not in AXES:
        raise SweepError(f"The second axis is {axis!r}; it can be 'temperature' or 'method'.")
    if not values:
        raise SweepError(f"The second axis ({AXES[axis]}) has no values.",
                         hint="Give at least two, e.g. 1, 2, 4." if axis == "temperature" else
                         f"Choose from {', '.join(LOGIT_LOSSES)}.")
    m = base.method
    if m.logit_weight == 0 and m.cross_tokenizer_weight == 0:
        raise SweepError(f"A sweep over {AXES[axis]} changes only the logit loss, but "
                         "method.logit_weight is 0 in this config, so every run would be the same.",
                         hint="Give method.logit_weight a positive weight, or sweep students only.")
    out: list[Any] = []
    for v in values:
        if axis == "temperature":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise SweepError(f"The temperature {v!r} is not a positive number.",
                                 hint="Give temperatures such as 1, 2, 4.")
            v = float(v)
        elif v not in LOGIT_LOSSES:
            raise SweepError(f"The method {v!r} is not a logit loss KD Studio knows.",
                             hint=f"Choose from {', '.join(LOGIT_LOSSES)}.")
        if v not in out:
            out.append(v)
    return out


# -- the queue -----------------------------------------------------------------------------------

class Sweep:
    """A sweep and its queue; ``save()`` writes it, ``Sweep.load(folder)`` reads it back."""

    def __init__(self, folder: Path, base: RunConfig, students: list[StudentSpec], axis: str,
                 axis_values: list[Any], entries: list[SweepEntry], created: str,
                 runner: dict[str, Any] | None = None):
        self.folder = Path(folder)
        self.base = base
        self.students = students
        self.axis = axis
        self.axis_values = axis_values
        self.entries = entries
        self.created = created
        self.runner = runner or {}
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
            sweep_id: str = "") -> Sweep:
        """Plan a sweep (nothing is written until ``save()``); every run config is validated."""
        base = copy.deepcopy(base).validate()
        students = _check_students(list(students), teacher_layers)
        values = _check_axis(base, axis, list(axis_values))
        folder = sweeps_dir() / sweep_id if sweep_id else _new_folder()
        entries: list[SweepEntry] = []
        for s in students:
            for v in (values or [None]):
                suffix = axis_label(axis, v)
                label = s.label + (f", {suffix}" if suffix else "")
                name = f"sweep-{folder.name}-{s.label}" + (f"-{suffix.replace('=', '')}" if suffix else "")
                entries.append(SweepEntry(len(entries), label, name, s.to_dict(), v))
        sweep = cls(folder, base, students, axis, values, entries, _now())
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
        return config_from_dict(d)

    # -- reading and writing -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1, "id": self.id, "created": self.created,
            "task": self.base.task, "teacher": self.base.teacher.name,
            "dataset": self.base.data.dataset, "base_config": BASE_FILE,
            "students": [s.to_dict() for s in self.students],
            "axis": self.axis, "axis_values": self.axis_values,
            "runner": self.runner,
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
                   entries, data.get("created", ""), data.get("runner") or {})

    def copy(self) -> Sweep:
        """A snapshot another thread may read while this one moves the queue on."""
        from dataclasses import replace

        with self._lock:
            return Sweep(self.folder, self.base, list(self.students), self.axis,
                         list(self.axis_values), [replace(e) for e in self.entries],
                         self.created, dict(self.runner))

    def reload(self) -> None:
        """Read the queue file again (another process may have moved it on)."""
        fresh = Sweep.load(self.folder)
        with self._lock:
            self.entries, self.runner = fresh.entries, fresh.runner

    # -- where it stands -----------------------------------------------------------------------
    def runner_alive(self) -> bool:
        """Another live process on this machine holds the queue."""
        pid, host = self.runner.get("pid"), self.runner.get("host")
        return (isinstance(pid, int) and pid != os.getpid() and host == socket.gethostname()
                and _pid_alive(pid))

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


# -- running -------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    status: str  # finished (every run), stopped, or incomplete (some runs failed)
    sweep: Sweep
    failed: list[SweepEntry] = field(default_factory=list)


def run_sweep(sweep: Sweep, on_event: EventSink | None = None, stop: Any = None, *,
              retry_failed: bool = False) -> SweepResult:
    """Run the sweep's unfinished entries one after another; safe to call again at any time.

    Each entry is an ordinary run_training call (its events reach ``on_event`` as usual,
    framed by SweepProgress events). A stopped or interrupted entry continues from its
    checkpoint. ``stop`` stops the current run (keeping a checkpoint) and the queue; a run
    that fails is recorded and the queue goes on with the next student.
    """
    import time

    from kdstudio.core.events import SweepProgress
    from kdstudio.core.trainer import run_training

    on_event = on_event or ignore
    stop = stop or threading.Event()
    total = len(sweep.entries)

    def tell(e: SweepEntry, status: str, message: str = "") -> None:
        on_event(SweepProgress(sweep_id=sweep.id, index=e.index, total=total, label=e.label,
                               status=status, run_dir=e.run_dir, message=message))

    stopped = False
    with sweep.claim():
        for entry in sweep.todo(retry_failed):
            if stop.is_set():
                stopped = True
                break
            config, resume = sweep.start_args(entry)
            sweep.begin(entry)
            tell(entry, "running", "resuming from its checkpoint" if resume else "")

            def sink(event: Any, entry: SweepEntry = entry) -> None:
                if getattr(event, "kind", "") == "started":
                    sweep.attach(entry, event.run_dir)
                on_event(event)

            t0 = time.perf_counter()
            try:
                result = run_training(config, sink, stop, resume=resume)
            except KDStudioError as exc:
                sweep.end(entry, "failed", error=f"{exc.title}: {exc}")
                tell(entry, "failed", entry.error)
                continue
            except Exception as exc:  # noqa: BLE001 - one broken student must not sink the queue
                sweep.end(entry, "failed", error=f"Unexpected error: {type(exc).__name__}: {exc}")
                tell(entry, "failed", entry.error)
                continue
            run_dir = result.run_dir if result.summary else None
            # A resumed run's wall time covers only its last part: not a measure of the whole.
            wall = time.perf_counter() - t0 if resume is None else None
            sweep.end(entry, result.status, run_dir=run_dir, wall_s=wall)
            tell(entry, result.status, stop_note(entry) if result.status == "stopped" else "")
            if result.status != "finished":
                stopped = True
                break
    failed = [e for e in sweep.entries if e.status == "failed"]
    status = "stopped" if stopped else "incomplete" if failed else "finished"
    return SweepResult(status, sweep, failed)
