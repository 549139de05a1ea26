"""What the pages share: the config under edit, the settings, the job runner and the run.

Pages never reach into each other or into the trainer. They read and write ``ctx.config``
(the one RunConfig that describes the run), announce edits with ``config_changed``, refresh
their widgets on ``config_replaced``, and start/stop runs through the methods below, which
the main window implements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from kdstudio.core.config import RunConfig
from kdstudio.core.events import Started
from kdstudio.ui.jobs import JobRunner
from kdstudio.ui.settings import Settings
from kdstudio.ui.worker import TrainingController


class AppContext(QObject):
    config_replaced = Signal()        # a whole new config (new, open, clone): refresh every widget
    config_changed = Signal(str)      # one section changed (its name): dependents may refresh
    teacher_info = Signal(object)     # dict from models.model_summary of the loaded teacher, or None
    run_event = Signal(object)        # every engine event of the current run (core.events)
    run_started = Signal()
    run_finished = Signal(object)     # RunResult or None after a failure
    run_opened = Signal(str)          # a past run folder was opened (from Runs or the File menu)
    navigate = Signal(str)            # ask the window to show a page by its key
    show_setting = Signal(str)        # ask the window to show a config key's control ("method.balance")

    def __init__(self, config: RunConfig, settings: Settings, jobs: JobRunner,
                 training: TrainingController, parent: QObject | None = None):
        super().__init__(parent)
        self.config = config
        self.settings = settings
        self.jobs = jobs
        self.training = training
        self.current_run_dir: str = ""
        # Processes (GPUs) the next run uses; more than one runs it as a child process.
        self.processes = 1
        training.event.connect(self._on_event)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Started):
            self.current_run_dir = event.run_dir
        self.run_event.emit(event)

    def replace_config(self, config: RunConfig) -> None:
        self.config = config
        self.config_replaced.emit()

    def set_value(self, section: str, key: str, value: Any) -> None:
        """Write one field of the config (section '' for top-level keys) and announce it."""
        target = self.config if not section else getattr(self.config, section)
        if getattr(target, key) != value:
            setattr(target, key, value)
            self.config_changed.emit(section or key)

    # Implemented by the main window, which owns dialogs and the training controller.
    def start_run(self, resume: Path | None = None) -> None:
        raise NotImplementedError

    def stop_run(self) -> None:
        self.training.stop()

    def pause_run(self) -> None:
        if self.training.is_paused():
            self.training.resume()
        else:
            self.training.pause()

    def open_run(self, path: str) -> None:
        self.settings.push_recent("recent_runs", str(path))
        self.run_opened.emit(str(path))
