"""A multi-process run as a child process that the app follows.

``ChildRun`` starts the run through Accelerate's launcher (kdstudio.core.launch, the path
``kdstudio run --processes N`` takes), then reads the run's metrics.jsonl as it grows and
sends each new line as the typed event a run in this process would send, so the Train page
draws it the same way. Pause and Stop write the pause and stop files every process agrees on
each step. When the launch ends badly, the reason (which process died, and why) becomes the
``failed`` signal and the run is marked failed.

Reading the file is a few small reads five times a second on the GUI thread: cheap, and it
keeps the child's events in order with the rest of the window's work.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from kdstudio.core.events import EventFollower

POLL_MS = 200
ENV_GPUS = "KDSTUDIO_GPUS"  # a GPU count that replaces the machine's (tests, CPU trials)


def gpu_count() -> tuple[int, str]:
    """(GPUs a run may use, why not more), read without importing torch: the NVIDIA driver's
    list under /proc, narrowed by CUDA_VISIBLE_DEVICES. KDSTUDIO_GPUS overrides it."""
    forced = os.environ.get(ENV_GPUS, "").strip()
    if forced.isdigit():
        n = int(forced)
    else:
        gpus = Path("/proc/driver/nvidia/gpus")
        n = len(list(gpus.iterdir())) if gpus.is_dir() else 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            n = min(n, len([v for v in visible.split(",") if v.strip()]))
    if n == 0:
        return 0, "no NVIDIA GPU was found on this machine"
    if n == 1:
        return 1, "this machine has one GPU"
    return n, ""


class _FileFlag:
    """The pause or stop of a child run, with the threading.Event calls the controller makes."""

    def __init__(self, path: Path | None = None, on_set: Any = None):
        self.path, self.on_set, self._on = path, on_set, False

    def is_set(self) -> bool:
        return self._on

    def set(self) -> None:
        self._on = True
        if self.path is not None:
            self.path.write_text("1\n", encoding="utf-8")
        if self.on_set is not None:
            self.on_set()

    def clear(self) -> None:
        self._on = False
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class ChildRun(QObject):
    """One launched run: the same signals as the training thread's worker."""

    event = Signal(object)
    failed = Signal(str, str)
    finished = Signal(object)

    def __init__(self, config: Any, resume: Path | None, processes: int,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.config, self.resume, self.processes = config, resume, processes
        self.launch: Any = None
        self.run_dir: Path | None = None
        self._follower: Any = None  # core.events.EventFollower, once the run folder is known
        self._log: Any = None
        self.stop_event = _FileFlag()
        self.pause_event = _FileFlag()
        self.held = _FileFlag()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

    def start(self) -> None:
        from kdstudio.core.launch import start

        folder = Path(tempfile.mkdtemp(prefix="kdstudio-app-run-"))
        if self.resume is not None:
            command = ["resume", str(self.resume)]
        else:
            path = folder / "config.toml"
            path.write_text(self.config.to_toml(), encoding="utf-8")
            command = ["run", str(path)]
        self._log = open(folder / "launch.log", "wb")  # noqa: SIM115 - closed in _end
        self.launch = start(command, self.processes, stdout=self._log, stderr=self._log)
        self.stop_event = _FileFlag(self.launch.stop_file)
        self.pause_event = _FileFlag(self.launch.pause_file)
        self.held = self.pause_event
        self.log_path = folder / "launch.log"
        self._timer.start()

    def _poll(self) -> None:
        if self.run_dir is None and self.launch is not None:
            self.run_dir = self.launch.run_dir()
        if self.run_dir is not None:
            self._read_new()
        if self.launch is not None and self.launch.proc.poll() is not None:
            self._end(self.launch.proc.returncode)

    def _read_new(self) -> None:
        if self._follower is None:
            self._follower = EventFollower(self.run_dir / "metrics.jsonl")
        for e in self._follower.read_new():
            self.event.emit(e)

    def _end(self, rc: int) -> None:
        from kdstudio.core.launch import failure_reason, mark_failed

        self._timer.stop()
        if self.run_dir is None:
            self.run_dir = self.launch.run_dir()
        if self._log is not None:
            self._log.close()
        reason = ""
        if rc != 0:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            reason = failure_reason(text, self.processes) or (
                f"The {self.processes} training processes ended with exit code {rc}; the "
                f"launch's output is in {self.log_path}.")
            mark_failed(self.run_dir, reason)
        if self.run_dir is not None:
            self._read_new()
        summary = _summary(self.run_dir)
        status = summary.get("status", "failed" if rc else "finished")
        if rc != 0 or status == "failed":
            self.failed.emit("Training failed", str(summary.get("error") or reason
                                                    or "The training processes failed."))
            self.finished.emit(None)
            return
        self.finished.emit(SimpleNamespace(status=status, run_dir=self.run_dir, summary=summary))

    def kill(self) -> None:
        if self.launch is not None:
            self.launch.kill()


def _summary(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None:
        return {}
    from kdstudio.core.runs import Run

    return Run(run_dir).summary()
