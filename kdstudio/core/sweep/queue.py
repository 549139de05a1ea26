"""Running a tradeoff sweep's queue: one ordinary run per entry, one after another.

``run_sweep`` runs whatever is unfinished, continuing an interrupted run from its
checkpoint, and can simply be called again after a crash, a Ctrl-C or closing the app.
With the sweep's ``quantize_int8`` each finished student is then exported as int8 ONNX
(``export_int8``); a failed export is a note on its entry, never a failed run. At the end
the teacher and every finished student are timed together (``time_together``, timed.py). The
sweep itself (spec, queue file) is in spec.py and store.py; its names stay importable here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from kdstudio.core.errors import KDStudioError, SweepError
from kdstudio.core.events import EventSink, ignore
from kdstudio.core.runs import Run
from kdstudio.core.sweep.spec import (
    AXES,
    INT8_EXPORT,
    StudentSpec,
    axis_label,
    derived,
    int8_export,
)
from kdstudio.core.sweep.store import (
    BASE_FILE,
    STATUSES,
    SWEEP_FILE,
    UNFINISHED,
    Sweep,
    SweepEntry,
    find_sweep,
    list_sweeps,
    stop_note,
    sweeps_dir,
    unfinished_sweeps,
)


def exports_todo(sweep: Sweep, retry_failed: bool = False) -> list[SweepEntry]:
    """Finished entries still without their int8 export (one that failed before only when
    ``retry_failed``); none unless the sweep exports int8."""
    if not sweep.quantize_int8:
        return []
    out = []
    for e in sweep.entries:
        if e.status != "finished" or not e.run_dir or (e.note and not retry_failed):
            continue
        s = Run(e.run_dir).summary()
        if s.get("status") == "finished" and int8_export(s) is None:
            out.append(e)
    return out


def export_int8(sweep: Sweep, entry: SweepEntry, on_event: EventSink | None = None) -> str:
    """Export a finished entry's student as int8 ONNX unless its run already has that export.

    Returns '' when the export is there, else what went wrong, which is also kept as the
    entry's note: a failed export never fails the run or the sweep.
    """
    run = entry.run
    if run is None or int8_export(run.summary()) is not None:
        sweep.set_note(entry, "")
        return ""
    try:
        from kdstudio.core.export import export_run

        export_run(run.path, *INT8_EXPORT, on_event=on_event)
        note = ""
    except KDStudioError as exc:
        note = f"The int8 export failed ({exc.title}): {exc}"
    except Exception as exc:  # noqa: BLE001 - the run is fine; only its export is missing
        note = f"The int8 export failed: {type(exc).__name__}: {exc}"
    sweep.set_note(entry, note)
    return note


@dataclass
class SweepResult:
    status: str  # finished (every run), stopped, or incomplete (some runs failed)
    sweep: Sweep
    failed: list[SweepEntry] = field(default_factory=list)


def run_sweep(sweep: Sweep, on_event: EventSink | None = None, stop: Any = None, *,
              retry_failed: bool = False, processes: int = 1, fsdp: bool = False) -> SweepResult:
    """Run the sweep's unfinished entries one after another; safe to call again at any time.

    Each entry is an ordinary run_training call (its events reach ``on_event`` as usual,
    framed by SweepProgress events). A stopped or interrupted entry continues from its
    checkpoint. ``stop`` stops the current run (keeping a checkpoint) and the queue; a run
    that fails is recorded and the queue goes on with the next student. With the sweep's
    ``quantize_int8``, each finished student is exported as int8 ONNX (framed by 'exporting'
    and 'exported' or 'export failed' SweepProgress events), and so are earlier finished
    students still without that export. With ``processes`` > 1 each run is launched in that
    many processes through Accelerate (``kdstudio run --processes N``'s launcher; FSDP2 with
    ``fsdp``) and followed from here.
    """
    import time

    from kdstudio.core.events import SweepProgress
    from kdstudio.core.sweep.plan import record_planned
    from kdstudio.core.trainer import run_training

    on_event = on_event or ignore
    stop = stop or threading.Event()
    total = len(sweep.entries)

    def tell(e: SweepEntry, status: str, message: str = "") -> None:
        on_event(SweepProgress(sweep_id=sweep.id, index=e.index, total=total, label=e.label,
                               status=status, run_dir=e.run_dir, message=message))

    def export(e: SweepEntry) -> None:
        tell(e, "exporting", "int8 ONNX")
        note = export_int8(sweep, e, on_event)
        tell(e, "export failed" if note else "exported", note)

    stopped = False
    with sweep.claim():
        for entry in exports_todo(sweep, retry_failed):  # finished before, export missing
            if stop.is_set():
                break
            export(entry)
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
                if processes > 1:
                    result = _launched_run(config, resume, processes, fsdp, sink, stop)
                else:
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
            if result.status == "finished":
                record_planned(sweep, entry, wall)
            tell(entry, result.status, stop_note(entry) if result.status == "stopped" else "")
            if result.status != "finished":
                stopped = True
                break
            if sweep.quantize_int8 and not stop.is_set():  # else the next call exports it
                export(entry)
        if stop.is_set() and (sweep.todo(retry_failed) or exports_todo(sweep)):
            stopped = True  # e.g. stopped during an export: resuming does the rest
        if not stopped and not stop.is_set():
            time_together(sweep, on_event, stop)
    failed = [e for e in sweep.entries if e.status == "failed"]
    status = "stopped" if stopped else "incomplete" if failed else "finished"
    return SweepResult(status, sweep, failed)


def time_together(sweep: Sweep, on_event: EventSink | None = None, stop: Any = None) -> None:
    """At the end of a sweep: the teacher and every finished student timed in one session
    (timed.py), unless the sweep's session already timed them all. A failure is a log line,
    never a failed sweep: the runs' own timings still stand."""
    from kdstudio.core.events import Log
    from kdstudio.core.sweep.timed import needs_timing, time_sweep

    if not needs_timing(sweep):
        return
    try:
        time_sweep(sweep, on_event, stop)
    except Exception as exc:  # noqa: BLE001 - the sweep's runs are finished and fine
        (on_event or ignore)(Log(f"The teacher and students could not be timed together "
                                 f"({type(exc).__name__}: {exc}); the chart shows each run's "
                                 "own timing.", level="warning"))


def _launched_run(config: Any, resume: Any, processes: int, fsdp: bool, sink: EventSink,
                  stop: Any) -> Any:
    """One entry of the queue in ``processes`` processes: what run_training returns, read
    from the run the launch wrote. A launch that failed raises RunError with its reason."""
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    from kdstudio.core.errors import RunError
    from kdstudio.core.launch import run_launched

    if resume is not None:
        command = ["resume", str(resume)]
    else:
        path = Path(tempfile.mkdtemp(prefix="kdstudio-sweep-run-")) / "config.toml"
        path.write_text(config.to_toml(), encoding="utf-8")
        command = ["run", str(path)]
    rc, run_dir, reason = run_launched(command, processes, sink, stop, fsdp=fsdp)
    summary = Run(run_dir).summary() if run_dir is not None else {}
    status = summary.get("status") or ("stopped" if rc == 0 and stop.is_set() else "failed")
    if rc != 0 or status == "failed":
        raise RunError(str(summary.get("error") or reason
                           or f"The {processes} training processes failed."))
    return SimpleNamespace(status=status, run_dir=run_dir or Path(), summary=summary)


__all__ = ["AXES", "BASE_FILE", "STATUSES", "SWEEP_FILE", "UNFINISHED", "StudentSpec", "Sweep",
           "SweepEntry", "SweepError", "SweepResult", "axis_label", "derived", "export_int8",
           "exports_todo", "find_sweep", "list_sweeps", "run_sweep", "stop_note", "sweeps_dir",
           "time_together",
           "unfinished_sweeps"]
