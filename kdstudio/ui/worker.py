"""The bridge between the engine's training loop and Qt.

``TrainingController.start(config)`` runs ``run_training`` in a QThread through a worker
QObject. Engine events arrive on the GUI thread as the ``event`` signal; an exception
becomes ``failed(title, message)``; ``finished(result)`` is always emitted last (with None
after a failure). Pause blocks the training thread between steps; stop asks the loop to end
after the current step, leaving a checkpoint.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot


class TrainingWorker(QObject):
    event = Signal(object)
    failed = Signal(str, str)
    finished = Signal(object)

    def __init__(self, config: Any, resume: Path | None = None):
        super().__init__()
        self.config, self.resume = config, resume
        self.stop_event = threading.Event()
        self.pause_event = threading.Event()
        self.held = threading.Event()  # set while the training thread waits, paused

    @Slot()
    def run(self) -> None:
        result = None
        try:
            from kdstudio.core.errors import KDStudioError
            from kdstudio.ui.jobs import import_engine

            import_engine()
            from kdstudio.core.trainer import run_training

            try:
                result = run_training(self.config, self._sink, self.stop_event, resume=self.resume)
            except KDStudioError as exc:
                self.failed.emit(exc.title, str(exc))
        except Exception as exc:  # anything else still reaches the user as a dialog
            if "out of memory" in str(exc).lower():
                self.failed.emit("Out of memory",
                                 "Training ran out of memory. Lower the batch size or the maximum "
                                 "length, or hold the teacher in half precision.")
            else:
                self.failed.emit("Unexpected error",
                                 f"Training stopped on an unexpected error: {type(exc).__name__}: {exc}")
        finally:
            self.finished.emit(result)

    def _sink(self, event: Any) -> None:
        self.event.emit(event)
        # Pausing holds the training thread here, between steps; stop releases it.
        if self.pause_event.is_set() and not self.stop_event.is_set():
            self.held.set()
            while self.pause_event.is_set() and not self.stop_event.is_set():
                self.stop_event.wait(0.05)
            self.held.clear()


class TrainingController(QObject):
    """Owns the training thread; at most one run at a time."""

    event = Signal(object)
    failed = Signal(str, str)
    finished = Signal(object)
    running_changed = Signal(bool)
    paused_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: TrainingWorker | None = None

    def is_running(self) -> bool:
        return self._worker is not None

    def is_paused(self) -> bool:
        return self._worker is not None and self._worker.pause_event.is_set()

    def is_held(self) -> bool:
        """Whether the training thread has stopped between steps and waits for Continue (a
        pause asked for mid-step takes effect when that step reports)."""
        return self._worker is not None and self._worker.held.is_set()

    def start(self, config: Any, resume: Path | None = None, processes: int = 1) -> None:
        """Run in a training thread; with ``processes`` > 1, as a child process (several
        processes through Accelerate) whose metrics.jsonl is followed (ui.child_run)."""
        if self.is_running():
            raise RuntimeError("a run is already in progress")
        if processes > 1:
            from kdstudio.ui.child_run import ChildRun

            child = ChildRun(config, resume, processes, self)
            child.event.connect(self.event)
            child.failed.connect(self.failed)
            child.finished.connect(self._on_finished)
            self._worker = child  # type: ignore[assignment]
            child.start()
            self.running_changed.emit(True)
            return
        thread = QThread()
        thread.setObjectName("kdstudio-training")
        worker = TrainingWorker(config, resume)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.event.connect(self.event)
        worker.failed.connect(self.failed)
        worker.finished.connect(self._on_finished)
        self._thread, self._worker = thread, worker
        thread.start()
        self.running_changed.emit(True)

    def _on_finished(self, result: Any) -> None:
        thread = self._thread
        self._thread, self._worker = None, None
        if thread is not None:
            thread.quit()
            thread.wait()
        self.running_changed.emit(False)
        self.paused_changed.emit(False)
        self.finished.emit(result)

    def pause(self) -> None:
        if self._worker is not None:
            self._worker.pause_event.set()
            self.paused_changed.emit(True)

    def resume(self) -> None:
        if self._worker is not None:
            self._worker.pause_event.clear()
            self.paused_changed.emit(False)

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop_event.set()
            self._worker.pause_event.clear()
