"""Run slow work (model loading, downloads, previews, comparisons) off the GUI thread.

``JobRunner.submit(fn, on_done, on_error)`` runs ``fn()`` on a worker thread of a
QThreadPool and calls back on the GUI thread. The window never waits for it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Signals(QObject):
    done = Signal(object)
    error = Signal(object)
    progress = Signal(object)


class _Job(QRunnable):
    def __init__(self, fn: Callable[..., Any], signals: _Signals, cancel: threading.Event,
                 wants_progress: bool):
        super().__init__()
        self.fn, self.signals, self.cancel, self.wants_progress = fn, signals, cancel, wants_progress
        self.setAutoDelete(True)

    def run(self) -> None:
        try:
            if self.wants_progress:
                result = self.fn(self.signals.progress.emit, self.cancel)
            else:
                result = self.fn()
        except BaseException as exc:  # reported to the GUI thread, never lost
            self.signals.error.emit(exc)
        else:
            self.signals.done.emit(result)


class JobHandle:
    """A submitted job: cancel() sets the event a progress-aware job checks."""

    def __init__(self, signals: _Signals, cancel: threading.Event):
        self.signals, self.cancel_event = signals, cancel
        self.finished = False

    def cancel(self) -> None:
        self.cancel_event.set()


class JobRunner(QObject):
    """Keeps jobs (and their signal objects) alive until they report back."""

    busy_changed = Signal(int)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self._active: set[JobHandle] = set()

    def submit(self, fn: Callable[..., Any], on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None, *,
               on_progress: Callable[[Any], None] | None = None) -> JobHandle:
        """With on_progress, fn is called as fn(report, cancel_event)."""
        signals = _Signals()
        cancel = threading.Event()
        handle = JobHandle(signals, cancel)
        self._active.add(handle)

        def finish() -> None:
            handle.finished = True
            self._active.discard(handle)
            self.busy_changed.emit(len(self._active))

        def done(result: Any) -> None:
            finish()
            if on_done:
                on_done(result)

        def error(exc: BaseException) -> None:
            finish()
            if on_error:
                on_error(exc)

        signals.done.connect(done)
        signals.error.connect(error)
        if on_progress:
            signals.progress.connect(on_progress)
        self.pool.start(_Job(fn, signals, cancel, on_progress is not None))
        self.busy_changed.emit(len(self._active))
        return handle

    def active(self) -> int:
        return len(self._active)

    def wait(self, ms: int = 30000) -> bool:
        return self.pool.waitForDone(ms)
