"""What finished runs of the same teacher measured on this machine.

The time estimate and the budget helper prefer these figures to estimates from the models'
shapes. Only the run store is read: no torch.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from kdstudio.core.device import device_type
from kdstudio.core.runs import Run, runs_dir


@dataclass
class PastRun:
    """A finished run's figures and the settings that decide its speed."""

    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    wall_s: float | None = None

    @property
    def device_type(self) -> str:
        return device_type(str(self.summary.get("device", "cpu")))

    @property
    def derived_layers(self) -> int | None:
        student = self.config.get("student", {})
        kept = self.summary.get("kept_layers")
        if student.get("name") or student.get("hidden_size") or not isinstance(kept, list):
            return None
        return len(kept)


def past_runs(task: str | None, teacher: str | None) -> list[PastRun]:
    """Finished runs of this teacher for this task (None: any), in the run store."""
    base = runs_dir()
    if not base.is_dir():
        return []
    out = []
    for p in base.iterdir():
        run = Run(p)
        s = run.summary()
        if s.get("status") != "finished" or (task is not None and s.get("task") != task) \
                or (teacher is not None and s.get("teacher") != teacher):
            continue
        try:
            cfg = tomllib.loads(run.config_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        out.append(PastRun(p, s, cfg, _wall_time(run, s)))
    return out


def _wall_time(run: Run, s: dict[str, Any]) -> float | None:
    """Seconds from the run folder's creation to its last summary write (None if resumed)."""
    try:
        created = _dt.datetime.fromisoformat(s["created"]).timestamp()
        wall = run.summary_path.stat().st_mtime - created
    except (KeyError, ValueError, OSError):
        return None
    duration = s.get("duration_s") or 0
    # Far longer than its training: resumed on another day, not a measure of the run.
    return wall if 0 < wall < duration * 3 + 600 else None


def same_setup(ref: PastRun, config: Any, device_kind: str) -> bool:
    """Whether a past run used this config's data, length and batch on this kind of device."""
    c = ref.config
    data, tr = c.get("data", {}), c.get("training", {})
    return (ref.device_type == device_kind
            and data.get("dataset") == config.data.dataset
            and data.get("max_length") == config.data.max_length
            and tr.get("batch_size") == config.training.batch_size
            and tr.get("grad_accum_steps", 1) == config.training.grad_accum_steps)


@dataclass
class Figures:
    """Measured figures of a teacher and of derived students, by layers kept."""

    teacher: dict[str, float] = field(default_factory=dict)   # params, size_mb, latency_ms
    students: dict[int, dict[str, float]] = field(default_factory=dict)


def known_figures(task: str, teacher: str, device_type: str = "") -> Figures:
    """Medians of what finished runs of this teacher measured (latency only on this device)."""
    fig = Figures()
    runs = past_runs(task, teacher)
    t: dict[str, list[float]] = {}
    per: dict[int, dict[str, list[float]]] = {}
    for r in runs:
        s = r.summary
        same_device = not device_type or r.device_type == device_type
        for key, src in (("params", "teacher_params"), ("size_mb", "teacher_size_mb"),
                         ("latency_ms", "teacher_latency_ms")):
            if isinstance(s.get(src), (int, float)) and (key != "latency_ms" or same_device):
                t.setdefault(key, []).append(float(s[src]))
        k = r.derived_layers
        if k is None:
            continue
        for key, src in (("params", "student_params"), ("size_mb", "student_size_mb"),
                         ("latency_ms", "student_latency_ms"),
                         ("quality_retained", "quality_retained")):
            if isinstance(s.get(src), (int, float)) and (key != "latency_ms" or same_device):
                per.setdefault(k, {}).setdefault(key, []).append(float(s[src]))
    fig.teacher = {k: statistics.median(v) for k, v in t.items()}
    fig.students = {k: {key: statistics.median(v) for key, v in d.items()} for k, d in per.items()}
    return fig


@dataclass
class MachineSpeed:
    """How fast this machine trained, from its finished runs of any teacher and data."""

    flops: float      # parameter-token FLOPs per second: steps x tokens x (2T + 6S) / seconds
    setup_s: float    # seconds around the steps: loading, evaluations, the final measurement
    runs: int


def run_flop_count(summary: dict[str, Any], config: dict[str, Any]) -> float | None:
    """steps x tokens per step x (2 x teacher + 6 x student parameters) of a finished run:
    the teacher's forward and the student's forward and backward (None if not recorded)."""
    tr, data = config.get("training", {}), config.get("data", {})
    steps = summary.get("steps") or summary.get("total_steps")
    t, st = summary.get("teacher_params"), summary.get("student_params")
    if not all(isinstance(x, (int, float)) and x > 0 for x in (steps, t, st)):
        return None
    tokens = (int(tr.get("batch_size") or 1) * int(data.get("max_length") or 1)
              * int(tr.get("grad_accum_steps") or 1))
    return float(steps) * tokens * (2 * float(t) + 6 * float(st))


def machine_speed(device_kind: str, runs: list[PastRun] | None = None) -> MachineSpeed | None:
    """The median speed of this machine's finished runs on this kind of device (None if none).

    The time estimate's rough guess uses it in place of a typical device speed: a machine's
    own runs say far more about it than any table."""
    runs = past_runs(None, None) if runs is None else runs
    speeds, setups = [], []
    for r in runs:
        dur = r.summary.get("duration_s")
        work = run_flop_count(r.summary, r.config)
        if r.device_type != device_kind or not work or not isinstance(dur, (int, float)) \
                or dur <= 0:
            continue
        speeds.append(work / dur)
        if r.wall_s:
            setups.append(max(0.0, r.wall_s - dur))
    if not speeds:
        return None
    return MachineSpeed(statistics.median(speeds),
                        statistics.median(setups) if setups else -1.0, len(speeds))
