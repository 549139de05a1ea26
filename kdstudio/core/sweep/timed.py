"""A sweep's timing session: the teacher and every finished student (and, on the CPU, their
int8 exports) loaded together and timed in turns on one sample (timing.py), so that every
speed ratio on the chart comes from one moment of the machine. Each run timed its own pair
at its own moment, on a machine that may have been busy in between; those figures stay in
the runs, but the chart reads this session's when the sweep has one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdstudio.core.events import EventSink, Progress, Stage, ignore
from kdstudio.core.runs import Run
from kdstudio.core.sweep.spec import int8_export
from kdstudio.core.sweep.store import Sweep, SweepEntry
from kdstudio.core.timing import Session, summary_latency

DASH = "\u2013"
STAGE = "time the teacher and the students together"
TEACHER = "teacher"


def int8_key(run_dir: str) -> str:
    """The session's name of a run's int8 export (the same as its chart row's key)."""
    return f"{run_dir}#int8"


def timed_entries(sweep: Sweep) -> list[SweepEntry]:
    """Finished entries whose run has a saved student: what a session times."""
    out = []
    for e in sweep.entries:
        run = e.run
        if (e.status == "finished" and run is not None and run.summary().get("status") == "finished"
                and (run.student_dir / "config.json").exists()):
            out.append(e)
    return out


def needs_timing(sweep: Sweep) -> bool:
    """The sweep has finished students that its session (if any) did not time."""
    entries = timed_entries(sweep)
    if not entries:
        return False
    session = Session.from_dict(sweep.timing)
    return session is None or not {e.run_dir for e in entries} <= set(session.samples)


def time_sweep(sweep: Sweep, on_event: EventSink | None = None, stop: Any = None,
               repeats: int | None = None) -> Session | None:
    """Time the teacher and the sweep's finished students together and keep the session in
    the sweep's file; None when no student has finished. Progress arrives as a Stage, then
    Progress events counting the rounds."""
    import torch

    from kdstudio.core.data import load_text_data
    from kdstudio.core.device import autocast_for, resolve_device, resolve_precision, teacher_dtype
    from kdstudio.core.evaluation import EvalSet, latency_sample, time_forwards
    from kdstudio.core.models import load_model, resolve_model_source
    from kdstudio.core.tasks import get_task

    emit = on_event or ignore
    entries = timed_entries(sweep)
    if not entries:
        return None
    cfg, task = sweep.base, get_task(sweep.base.task)
    emit(Stage(STAGE, f"the teacher and {len(entries)} student{'s' * (len(entries) > 1)}, "
                      "in turns on one sample"))
    first = entries[0].run.summary()
    labels = first.get("label_names")
    dev = resolve_device(cfg.training.device)
    precision = resolve_precision(cfg.training.precision, dev)
    t_src = first.get("teacher_source") or resolve_model_source(cfg.teacher.name, role="teacher")
    int8 = cfg.teacher.dtype == "int8"
    teacher = load_model(t_src, task, trust_remote_code=cfg.teacher.trust_remote_code,
                         label_names=labels, role="teacher",
                         dtype=None if int8 else teacher_dtype(cfg.teacher.dtype, dev, precision),
                         int8_device=dev if int8 else None)
    if not int8:
        teacher.model.to(dev)
    data = load_text_data(cfg.data, cfg.task, seed=cfg.training.seed)
    es = EvalSet(cfg.task, data.eval_texts, data.eval_labels,
                 max_samples=cfg.evaluation.max_samples, max_length=cfg.data.max_length,
                 pack=cfg.data.pack, batch_size=cfg.evaluation.batch_size)
    models: dict[str, tuple[torch.nn.Module, dict]] = {
        TEACHER: (teacher.model, latency_sample(es, teacher.tokenizer))}
    exports: dict[str, Any] = {}
    trust = cfg.student.trust_remote_code if cfg.student.name else cfg.teacher.trust_remote_code
    for e in entries:
        student = load_model(str(e.run.student_dir), task, trust_remote_code=trust,
                             label_names=labels, role="student")
        sample = latency_sample(es, student.tokenizer)
        models[e.run_dir] = (student.model.to(dev), sample)
        ort = _int8_model(e.run, dev) if sweep.quantize_int8 else None
        if ort is not None:
            exports[int8_key(e.run_dir)] = (ort, sample)
    total = [0]

    def rounds(done: int, n: int) -> None:
        total[0] = n
        emit(Progress(STAGE, done, n, "rounds"))

    session = time_forwards(models, task, device=dev, autocast=autocast_for(dev, precision),
                            repeats=repeats or cfg.evaluation.latency_repeats, on_round=rounds,
                            stop=stop, extra=exports)
    sweep.set_timing(session.to_dict())
    return session


def _int8_model(run: Run, dev: Any) -> Any:
    """The run's int8 ONNX export ready to be timed, or None (not on a GPU, where the
    PyTorch models run elsewhere than onnxruntime's CPU session; none there; unreadable)."""
    if dev.type != "cpu":
        return None
    export = int8_export(run.summary())
    if export is None:
        return None
    path = Path(str(export.get("path", "")))
    folder = path if path.is_absolute() else run.path / path
    try:
        from kdstudio.core.export.onnx_export import OrtModel

        return OrtModel(folder / "model.onnx")
    except Exception:  # noqa: BLE001 - the export is then left out of the session, not fatal
        return None


# -- the chart's rows (figures.TableRow) -----------------------------------------------------------

def run_timing(row: Any, summary: dict[str, Any]) -> None:
    """A run's own timing (the teacher and this student in turns, at the run's end): the
    latency's spread and the speed-up's, when the run recorded them."""
    lat = summary_latency(summary, "student")
    if lat is not None and lat.has_spread:
        row.latency_p10, row.latency_p90, row.load = lat.p10_ms, lat.p90_ms, lat.load.words()
    spread = summary.get("speedup_spread")
    if isinstance(spread, list) and len(spread) == 2 and all(_finite(v) for v in spread):
        row.speedup_low, row.speedup_high = float(spread[0]), float(spread[1])
    rounds = summary.get("speedup_rounds")
    if isinstance(rounds, int) and not isinstance(rounds, bool) and rounds > 0:
        row.speed_rounds = rounds


def apply_session(rows: Sequence[Any], session: Session | None) -> None:
    """The rows the sweep's session timed take their latency and speed-up from it: every
    ratio then comes from the same rounds on the same sample at one moment."""
    if session is None or "teacher" not in session.samples:
        return
    for r in rows:
        name = "teacher" if r.is_teacher else r.key
        if name not in session.samples:
            continue
        lat, ratio = session.latency(name), session.ratio("teacher", name)
        r.latency_ms, r.latency_p10, r.latency_p90 = lat.median_ms, lat.p10_ms, lat.p90_ms
        if ratio is not None:
            r.speedup, r.speed_rounds = ratio.value, ratio.rounds
            r.speedup_low, r.speedup_high = (ratio.low, ratio.high) if ratio.sure else (None, None)
        r.timed_together, r.load = True, session.load.words()


def timing_sentence(rows: Sequence[Any]) -> str:
    """Where the chart's speeds come from: one session, or separate runs (not comparable),
    and the load a session was taken under."""
    students = [r for r in rows if not r.is_teacher and r.latency_ms is not None]
    if not students:
        return ""
    if all(r.timed_together for r in students):
        load = next((r.load for r in students if r.load), "")
        return f"All speeds were timed together, in turns{', ' + load if load else ''}."
    return ("The speeds come from separate runs, timed at different moments of the machine, "
            "so they are not comparable between students until they are timed together.")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def latency_cell(row: Any) -> str:
    """'4.1 (3.9-4.5)': the median and the p10-p90 spread in ms; the median alone without it."""
    if row.latency_ms is None:
        return DASH
    text = f"{row.latency_ms:.3g}"
    if row.latency_p10 is not None and row.latency_p90 is not None:
        text += f" ({row.latency_p10:.3g}{DASH}{row.latency_p90:.3g})"
    return text


def speedup_cell(row: Any) -> str:
    if row.speedup is None:
        return DASH
    text = f"{row.speedup:.2f}x"
    if row.speedup_low is not None and row.speedup_high is not None and not row.is_teacher:
        text += f" ({row.speedup_low:.2f}{DASH}{row.speedup_high:.2f})"
    return text
