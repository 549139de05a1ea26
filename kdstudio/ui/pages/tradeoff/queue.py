"""The app's side of a sweep's queue: its entries run one after another through the window's
TrainingController, so each is an ordinary run (live on the Train page, listed on the Runs
page) and no other run can start beside it. The bookkeeping is the engine's (Sweep.claim,
begin, attach, end), the same that ``run_sweep`` uses on the command line, so a queue left
by a closed app or a crash is resumed by either. With the sweep's quantize_int8, each finished
student is exported as int8 ONNX in a background job (the engine's ``export_int8``) before the
next run starts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QWidget

from kdstudio.core.errors import KDStudioError
from kdstudio.core.events import Started
from kdstudio.core.sweep.plan import record_planned
from kdstudio.core.sweep.queue import (
    Sweep,
    SweepEntry,
    SweepError,
    export_int8,
    exports_todo,
)
from kdstudio.ui.context import AppContext


class SweepQueue(QObject):
    """Runs one sweep's unfinished entries; ``stop()`` stops the current run and the queue."""

    entry_changed = Signal(object)   # SweepEntry whose status changed
    running_changed = Signal(bool)
    done = Signal(str)               # finished, stopped or incomplete (some runs failed)

    def __init__(self, ctx: AppContext, parent: QObject | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.sweep: Sweep | None = None
        self.entry: SweepEntry | None = None
        self.exporting: SweepEntry | None = None  # the entry whose int8 export is under way
        self._todo: list[SweepEntry] = []
        self._exports: list[SweepEntry] = []  # finished entries still to export as int8
        self._claim: Any = None
        self._stopping = False
        self._error = ""
        self._fresh = True
        self._t0 = 0.0
        ctx.training.event.connect(self._on_event)
        ctx.training.failed.connect(self._on_failed)
        ctx.training.finished.connect(self._on_finished)

    def is_running(self) -> bool:
        return self.sweep is not None

    def start(self, sweep: Sweep, *, retry_failed: bool = False) -> None:
        """Claim the queue and start its first unfinished entry (raises SweepError if it can't)."""
        if self.is_running():
            raise SweepError("A sweep is already running here.",
                             hint="Stop it, or wait for it to finish, before starting another.")
        if self.ctx.training.is_running():
            raise SweepError("A run is already in progress.",
                             hint="Stop it, or wait for it to finish, before starting the sweep.")
        claim = sweep.claim()
        claim.__enter__()  # raises SweepError when another process runs this queue
        self._claim, self.sweep = claim, sweep
        self._todo = sweep.todo(retry_failed)
        self._exports = exports_todo(sweep, retry_failed)  # finished earlier, export missing
        self._stopping = False
        self.running_changed.emit(True)
        self._next()

    def stop(self) -> None:
        """Stop after the current step (the run keeps a checkpoint), or after the int8 export
        under way (it cannot be interrupted); the queue stays resumable."""
        if not self.is_running():
            return
        self._stopping = True
        if self.entry is not None and self.ctx.training.is_running():
            self.ctx.training.stop()
        elif self.entry is None and self.exporting is None:
            self._finish("stopped")

    # -- one entry after another ---------------------------------------------------------------
    def _window_closing(self) -> bool:
        win = self.ctx.parent()
        return isinstance(win, QWidget) and not win.isVisible()

    def _next(self) -> None:
        sweep = self.sweep
        if sweep is None or self.exporting is not None:
            return
        if self._exports and not (self._stopping or self._window_closing()
                                  or self.ctx.training.is_running()):
            self._export(self._exports.pop(0))
            return
        if not self._todo and not self._exports:  # all done, even if a stop came as the last run ended
            failed = any(e.status == "failed" for e in sweep.entries)
            self._finish("incomplete" if failed else "finished")
            return
        if self._stopping or self._window_closing():
            self._finish("stopped")
            return
        if self.ctx.training.is_running():  # another run slipped in between two entries
            self._finish("stopped")
            return
        entry = self._todo.pop(0)
        try:
            config, resume = sweep.start_args(entry)
        except KDStudioError as exc:  # e.g. a base config that no longer validates
            sweep.end(entry, "failed", error=f"{exc.title}: {exc}")
            self.entry_changed.emit(entry)
            QTimer.singleShot(0, self._next)
            return
        sweep.begin(entry)
        self.entry, self._error, self._fresh = entry, "", resume is None
        self._t0 = time.perf_counter()
        self.entry_changed.emit(entry)
        self.ctx.training.start(config, resume)
        self.ctx.run_started.emit()

    def _on_event(self, e: Any) -> None:
        if self.entry is not None and self.sweep is not None and isinstance(e, Started):
            self.sweep.attach(self.entry, e.run_dir)
            self.entry_changed.emit(self.entry)

    def _on_failed(self, title: str, message: str) -> None:
        if self.entry is not None:
            self._error = f"{title}: {message}"

    def _on_finished(self, result: Any) -> None:
        entry, sweep = self.entry, self.sweep
        if entry is None or sweep is None:
            return  # an ordinary run, not one of ours
        self.entry = None
        if result is None:
            sweep.end(entry, "failed", error=self._error or "The run failed.")
        else:
            run_dir = result.run_dir if result.summary else None
            wall = time.perf_counter() - self._t0 if self._fresh else None
            sweep.end(entry, result.status, run_dir=run_dir, wall_s=wall)
            if result.status == "finished":
                record_planned(sweep, entry, wall)
        self.entry_changed.emit(entry)
        if result is not None and result.status != "finished":
            self._finish("stopped")
        else:
            if result is not None and sweep.quantize_int8:
                self._exports.insert(0, entry)  # before the next run
            # After every other listener of this run's end (the window may be closing).
            QTimer.singleShot(0, self._next)

    def _export(self, entry: SweepEntry) -> None:
        """Export the entry's student as int8 ONNX in a job; a failure is a note on the entry."""
        sweep = self.sweep
        self.exporting = entry
        self.entry_changed.emit(entry)

        def done(_note: Any = "") -> None:
            if self.sweep is not sweep:
                return
            self.exporting = None
            self.entry_changed.emit(entry)
            QTimer.singleShot(0, self._next)

        def failed(exc: BaseException) -> None:  # export_int8 keeps its own errors: a last resort
            if sweep is not None:
                sweep.set_note(entry, f"The int8 export failed: {type(exc).__name__}: {exc}")
            done()

        self.ctx.jobs.submit(lambda: export_int8(sweep, entry), done, failed)

    def _finish(self, status: str) -> None:
        claim, self._claim = self._claim, None
        self.sweep, self.entry, self._todo, self._exports = None, None, [], []
        self.exporting = None
        if claim is not None:
            try:
                claim.__exit__(None, None, None)
            except OSError:
                pass  # the queue file could not be rewritten: its runner just looks stale later
        self.running_changed.emit(False)
        self.done.emit(status)


def load_sweep_view(folder: Path, live: Sweep | None) -> tuple[Sweep, list[Any]]:
    """A sweep and its figures (in a job); ``live`` is a snapshot of the queue that runs."""
    from kdstudio.core.sweep.figures import sweep_table

    sweep = live if live is not None else Sweep.load(folder)
    if live is None:
        sweep.reconcile()
    return sweep, sweep_table(sweep)


def show_on_runs_page(window: Any, run_dir: str) -> None:
    """Show the Runs page with this run selected (once the page has read the store)."""
    runs = window.pages["runs"]

    def select() -> None:
        runs.rows_loaded.disconnect(select)
        runs.select_paths([run_dir])
        rows = runs.table.selectionModel().selectedRows()
        if rows:
            runs.table.scrollTo(rows[0])

    runs.rows_loaded.connect(select)
    window.show_page("runs")
    runs.refresh()
