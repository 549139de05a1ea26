"""'Time again' on the Tradeoff page: the teacher and the sweep's finished students timed
together in one session (core.sweep.timed), in a job with a progress bar, so every speed on
the chart comes from one moment of the machine. The page also starts it when a sweep's queue
ends with students the session has not timed.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from kdstudio.core.sweep.store import Sweep
from kdstudio.ui.widgets.common import named


def timing_job(sweep: Sweep, only_if_needed: bool) -> Any:
    """The job: fn(report, cancel) timing the sweep; returns the session, or None when there
    was nothing (new) to time."""
    def job(report: Any, cancel: Any) -> Any:
        from kdstudio.core.events import Progress
        from kdstudio.core.sweep.timed import needs_timing, time_sweep

        if only_if_needed and not needs_timing(sweep):
            return None
        return time_sweep(sweep, lambda e: report(e) if isinstance(e, Progress) else None, cancel)
    return job


class TimingBar(QWidget):
    """'Time again', a progress bar while it runs, and a line on the last session.
    ``timed(session or None)`` when a session ended; ``failed(exc)`` when it could not run."""

    timed = Signal(object)
    failed = Signal(object)

    def __init__(self, ctx: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.sweep: Sweep | None = None
        self._handle: Any = None
        self.button = named(QPushButton("Time again"), "timeAgainButton", "Time again",
                            "Time the teacher and every finished student together, in turns on "
                            "one sample, so the chart's speeds are comparable. Takes a few "
                            "seconds to minutes; the machine should be otherwise idle.")
        self.button.clicked.connect(lambda: self.start())
        self.progress = named(QProgressBar(), "timingProgress", "Timing progress")
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.label = named(QLabel(), "timingLabel", "Timing")
        self.label.setWordWrap(True)
        self.label.setStyleSheet("color: #555555;")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.progress)
        lay.addWidget(self.button)
        self.show_for(None)

    def busy(self) -> bool:
        return self._handle is not None and not self._handle.finished

    def show_for(self, sweep: Sweep | None, *, blocked: bool = False) -> None:
        """The sweep on show; ``blocked`` while a run or the queue uses the machine."""
        self.sweep = sweep
        self.button.setEnabled(sweep is not None and not blocked and not self.busy())
        if self.busy():
            return
        from kdstudio.core.timing import Session

        session = Session.from_dict(sweep.timing) if sweep is not None else None
        if session is None:
            self.label.setText("Speeds come from each run's own timing." if sweep else "")
        else:
            load = session.load.words()
            self.label.setText(f"Timed together on {session.device} at "
                               f"{session.timed_at.replace('T', ' ')}"
                               + (f", {load}." if load else "."))

    def start(self, only_if_needed: bool = False) -> bool:
        """Time the sweep on show in a job; False when one is running or none is on show."""
        if self.sweep is None or self.busy():
            return False
        self.button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.label.setText("Timing the teacher and the students together\u2026")
        self._handle = self.ctx.jobs.submit(timing_job(self.sweep, only_if_needed), self._done,
                                            self._failed, on_progress=self._progress)
        return True

    def cancel(self) -> None:
        if self.busy():
            self._handle.cancel()

    def _progress(self, event: Any) -> None:
        if event.total:
            self.progress.setRange(0, int(event.total))
            self.progress.setValue(int(event.current))
            self.progress.setFormat("round %v of %m")

    def _end(self) -> None:
        self._handle = None
        self.progress.hide()

    def _done(self, session: Any) -> None:
        self._end()
        self.show_for(self.sweep)
        self.timed.emit(session)

    def _failed(self, exc: BaseException) -> None:
        self._end()
        self.show_for(self.sweep)
        self.label.setText(f"The models could not be timed together: {exc}")
        self.failed.emit(exc)
