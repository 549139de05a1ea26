"""The Train page's line that says where the teacher's answers come from: live or the cache."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QLabel, QWidget


class TeacherLine(QLabel):
    """Live teacher or teacher cache, and why (teacher.cache on the Method page)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("teacherSourceLine")
        self.setAccessibleName("Where the teacher's answers come from")
        self.setWordWrap(True)
        self.setToolTip(
            "A teacher-logit cache holds the teacher's top-k next-token answers for the "
            "training data, written by one teacher pass. Runs, resumes and the students of a "
            "sweep on the same teacher, data and length read it instead of running the "
            "teacher at every step. Set it on the Method page (advanced settings, Teacher).")

    def show_plan(self, config: Any) -> None:
        from kdstudio.core.teacher_source import plan_teacher  # no torch

        try:
            self.setText(plan_teacher(config).line + ".")
        except Exception as exc:  # noqa: BLE001 - a config mid-edit must not break the page
            self.setText(f"Teacher: not decided yet ({exc}).")
