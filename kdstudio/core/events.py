"""Typed, frozen events the engine reports through ``on_event``.

They know nothing of any window: the command line turns them into a progress bar,
the app into Qt signals, and the run store appends each to metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Event:
    """Base class; ``kind`` names the event in metrics.jsonl."""

    kind: str = field(init=False, default="event")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Log(Event):
    """A sentence for the log pane (level: info, warning)."""

    message: str
    level: str = "info"
    kind: str = field(init=False, default="log")


@dataclass(frozen=True)
class Stage(Event):
    """A preparation stage began: loading models, tokenizing, preparing the teacher, evaluating."""

    name: str
    detail: str = ""
    kind: str = field(init=False, default="stage")


@dataclass(frozen=True)
class Progress(Event):
    """Progress inside a stage (a download, the teacher's fine-tuning, an evaluation)."""

    stage: str
    current: float
    total: float | None
    unit: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    kind: str = field(init=False, default="progress")


@dataclass(frozen=True)
class Started(Event):
    """Training is about to begin."""

    run_dir: str
    task: str
    device: str
    precision: str
    teacher: str
    student: str
    teacher_params: int
    student_params: int
    total_steps: int
    start_step: int
    train_samples: int
    eval_samples: int
    kind: str = field(init=False, default="started")


@dataclass(frozen=True)
class Step(Event):
    """One optimizer step: every loss component, the learning rate, speed and memory."""

    step: int
    total_steps: int
    losses: dict[str, float]
    lr: float
    samples_per_s: float
    tokens_per_s: float
    memory_mb: float
    elapsed_s: float
    eta_s: float
    kind: str = field(init=False, default="step")


@dataclass(frozen=True)
class Eval(Event):
    """An evaluation of the student (and, at step 0, the teacher) on the eval split."""

    step: int
    metrics: dict[str, float]
    teacher_metrics: dict[str, float] = field(default_factory=dict)
    # The pinned inputs' answers: [{"input": ..., "student": ..., "teacher": ...}]
    samples: list[dict[str, str]] = field(default_factory=list)
    # The student's figures on the validation rows, which choose the best student
    # (training.keep = "best"); empty when the run has none.
    validation: dict[str, float] = field(default_factory=dict)
    # 95% intervals of the figures in metrics (and teacher_metrics, prefixed "teacher."):
    # {name: [low, high]}, bootstrapped over the eval rows (intervals.py); empty: none.
    intervals: dict[str, list[float]] = field(default_factory=dict)
    kind: str = field(init=False, default="eval")


@dataclass(frozen=True)
class Checkpoint(Event):
    """A checkpoint was written; training can be resumed from it."""

    step: int
    path: str
    kind: str = field(init=False, default="checkpoint")


@dataclass(frozen=True)
class Resumed(Event):
    """A run continued from the checkpoint taken at ``step``: what metrics.jsonl recorded after
    that step before this line was redone, and readers drop it (drop_redone)."""

    step: int
    checkpoint: str = ""
    kind: str = field(init=False, default="resumed")


# The kinds that belong to a step of training; a resume redoes those after its checkpoint.
_STEP_KINDS = ("step", "eval", "checkpoint")


def drop_redone(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's metrics.jsonl records without the steps a resume redid: at each 'resumed'
    record, the earlier step, eval and checkpoint records past its step are dropped, so each
    step appears once, with the values of the run that carried on."""
    out: list[dict[str, Any]] = []
    for r in records:
        if isinstance(r, dict) and r.get("kind") == "resumed" and isinstance(r.get("step"), int):
            at = r["step"]
            out = [o for o in out if not (isinstance(o, dict) and o.get("kind") in _STEP_KINDS
                                          and isinstance(o.get("step"), int) and o["step"] > at)]
        out.append(r)
    return out


@dataclass(frozen=True)
class Finished(Event):
    """The run ended: status is 'finished' or 'stopped'; summary is what summary.json holds."""

    status: str
    run_dir: str
    summary: dict[str, Any]
    kind: str = field(init=False, default="finished")


@dataclass(frozen=True)
class Failed(Event):
    """The run failed: ``title`` and ``message`` are for people; ``error_type`` for code."""

    error_type: str
    title: str
    message: str
    run_dir: str = ""
    kind: str = field(init=False, default="failed")


@dataclass(frozen=True)
class Health(Event):
    """A run-health alarm (core/health.py watches for them): what was seen, in plain words,
    and what to change. ``setting`` is the config key that changes it ('' for none);
    level 'error' means the run stops."""

    alarm: str
    step: int
    message: str
    advice: str
    setting: str = ""
    level: str = "warning"
    kind: str = field(init=False, default="health")


EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """A sink that drops every event."""


@dataclass(frozen=True)
class SweepProgress(Event):
    """A run of a tradeoff sweep began ('running') or ended (finished, stopped, failed).

    ``index`` counts from 0 among the sweep's ``total`` runs; ``message`` says why it failed
    or that it resumes from a checkpoint.
    """

    sweep_id: str
    index: int
    total: int
    label: str
    status: str
    run_dir: str = ""
    message: str = ""
    kind: str = field(init=False, default="sweep")


@functools.cache
def _classes_by_kind() -> dict[str, type[Event]]:
    out: dict[str, type[Event]] = {}
    todo = [Event]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            kind = next(f.default for f in dataclasses.fields(sub) if f.name == "kind")
            out[str(kind)] = sub
            todo.append(sub)
    return out


def event_from_record(record: dict[str, Any]) -> Event | None:
    """The event a metrics.jsonl line records; None for a kind or a shape this version does not
    know (a line from another version, or a torn one)."""
    cls = _classes_by_kind().get(record.get("kind", "")) if isinstance(record, dict) else None
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    try:
        return cls(**{k: v for k, v in record.items() if k in names})
    except TypeError:  # a field it needs is missing
        return None


class EventFollower:
    """Follows a metrics.jsonl that another process is writing: each ``read_new()`` returns
    the events of the lines completed since the last call (a line still being written waits
    for the next call; a line this version cannot read is passed over)."""

    def __init__(self, path: Any):
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[Event]:
        import json

        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # a line still being written
        out = []
        for line in lines:
            try:
                event = event_from_record(json.loads(line))
            except ValueError:
                continue
            if event is not None:
                out.append(event)
        return out
