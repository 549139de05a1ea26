"""Run slow work (model loading, downloads, previews, comparisons) off the GUI thread.

``JobRunner.submit(fn, on_done, on_error)`` runs ``fn()`` on a worker thread of a
QThreadPool and calls back on the GUI thread. The window never waits for it.
``LatestJob`` is the one way to ask the same question again: only the newest answer arrives.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from kdstudio.ui.native import preload_torch

_IMPORT_LOCK = threading.Lock()


def import_engine() -> None:
    """Import torch and transformers once, under a lock.

    Their first import is not thread-safe: two jobs importing them at the same moment can
    fail inside torch. Every background thread calls this before it touches the engine.
    """
    with _IMPORT_LOCK:
        preload_torch()  # its shared libraries first, without holding the interpreter's lock
        import torch  # noqa: F401
        import transformers  # noqa: F401


def _alive(callback: Callable[..., Any] | None) -> bool:
    """False when the callback is a method of a Qt object that has been deleted (a closed page)."""
    owner = getattr(callback, "__self__", None)
    return callback is not None and (not isinstance(owner, QObject) or shiboken6.isValid(owner))


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
            import_engine()
            if self.wants_progress:
                result = self.fn(self.signals.progress.emit, self.cancel)
            else:
                result = self.fn()
        except BaseException as exc:  # reported to the GUI thread, never lost
            self._deliver(self.signals.error, exc)
        else:
            self._deliver(self.signals.done, result)

    @staticmethod
    def _deliver(signal: Any, value: Any) -> None:
        try:
            signal.emit(value)
        except RuntimeError:
            # The window (and the signals' owner) closed while the job ran: no one is left
            # to tell, which is not an error.
            pass


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

        def finish() -> bool:
            """Book-keeping; False when the runner (its window) is gone and nobody is listening."""
            handle.finished = True
            if not shiboken6.isValid(self):
                return False
            self._active.discard(handle)
            self.busy_changed.emit(len(self._active))
            return True

        def done(result: Any) -> None:
            if finish() and _alive(on_done):
                on_done(result)

        def error(exc: BaseException) -> None:
            if finish() and _alive(on_error):
                on_error(exc)

        signals.done.connect(done)
        signals.error.connect(error)
        if on_progress:
            signals.progress.connect(lambda value: on_progress(value) if _alive(on_progress) else None)
        self.pool.start(_Job(fn, signals, cancel, on_progress is not None))
        self.busy_changed.emit(len(self._active))
        return handle

    def active(self) -> int:
        return len(self._active)

    def wait(self, ms: int = 30000) -> bool:
        return self.pool.waitForDone(ms)


class LatestJob:
    """Latest request wins: each ``submit`` makes the jobs this object submitted before stale,
    and a stale job's result, error and progress are dropped.

        self._preview = LatestJob(ctx.jobs)
        self._preview.submit(job, on_done, on_error)   # an older preview never lands
        self._preview.forget()                         # the running one is stale too
    """

    def __init__(self, runner: JobRunner | None = None):
        self.runner = runner
        self.handle: JobHandle | None = None
        self._number = 0

    def submit(self, fn: Callable[..., Any], on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None, *,
               on_progress: Callable[[Any], None] | None = None,
               runner: JobRunner | None = None) -> JobHandle:
        """``JobRunner.submit`` through ``runner`` (or the one given at construction)."""
        self._number += 1
        number = self._number

        def latest(callback: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
            if callback is None:
                return None

            def call(value: Any) -> None:
                if number == self._number and _alive(callback):
                    callback(value)
            return call

        runner = runner or self.runner
        assert runner is not None, "LatestJob needs a JobRunner"
        self.handle = runner.submit(fn, latest(on_done), latest(on_error),
                                    on_progress=latest(on_progress))
        return self.handle

    def forget(self) -> None:
        """Whatever the running job returns is stale."""
        self._number += 1

    def busy(self) -> bool:
        """The newest job is still running (and was not cancelled)."""
        return self.handle is not None and not self.handle.finished

    def cancel(self) -> bool:
        """Set the running job's cancel event and drop its answer; True when one was running."""
        if not self.busy():
            return False
        self.handle.cancel()
        self.handle = None
        self.forget()
        return True
