"""The Tradeoff page's reading of the teacher's shape (its layer count), in a job."""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtCore import QObject, Signal

from kdstudio.ui.context import AppContext
from kdstudio.ui.jobs import LatestJob


class TeacherShape(QObject):
    """The shape of the config's teacher, read once per teacher and task; ``read(shape)`` or
    ``failed(exc)`` answer for the newest one asked."""

    read = Signal(object)
    failed = Signal(object)

    def __init__(self, ctx: AppContext, parent: QObject | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self._shape: tuple[tuple[str, str], Any] | None = None
        self._shape_key: tuple[str, str] | None = None
        self._read = LatestJob(ctx.jobs)

    def refresh(self, config: Any) -> None:
        """Count the teacher's layers from its config files (in a job)."""
        key = (config.teacher.name, config.task)
        if key == self._shape_key:
            return
        self._shape_key = key
        cfg = copy.deepcopy(config)

        def job() -> Any:
            from kdstudio.core.sweep.plan import teacher_shape_for

            return teacher_shape_for(cfg)

        def done(shape: Any) -> None:
            self._shape = (key, shape)
            self.read.emit(shape)

        def failed(exc: BaseException) -> None:
            self._shape = None
            self.failed.emit(exc)

        self._read.submit(job, done, failed)

    def shape_for(self, config: Any) -> Any:
        """The shape read for this config's teacher and task, or None (not read, or failed)."""
        key = (config.teacher.name, config.task)
        return self._shape[1] if self._shape and self._shape[0] == key else None
