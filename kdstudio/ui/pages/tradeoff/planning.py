"""Working out a sweep's plan on the Tradeoff page: the job that builds and times it, the
line that shows the plan, and the question asked before it starts."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QLabel, QMessageBox, QWidget

from kdstudio.core.errors import KDStudioError
from kdstudio.core.sweep.queue import Sweep
from kdstudio.ui.jobs import LatestJob
from kdstudio.ui.pages.tradeoff.setup import SweepSetup


def plan_job(setup: SweepSetup, config: Any, shape: Any) -> Callable[[], Any]:
    """What planning needs, gathered now; the job builds the sweep and times it."""
    students = setup.students()
    axis, values = setup.axis()
    int8 = setup.quantize_int8()
    base = copy.deepcopy(config)
    layers = shape.num_layers if shape else setup.teacher_layers

    def job() -> Any:
        from kdstudio.core.sweep.plan import estimate_time

        plan = Sweep.new(base, students, axis, values, teacher_layers=layers,
                         quantize_int8=int8)
        return plan, estimate_time(plan, teacher_shape=shape)

    return job


class PlanLine(QLabel):
    """The number of runs the ticked students make and how long they should take."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Tick some students to see the plan.", parent)
        self.setObjectName("sweepPlanLabel")
        self.setWordWrap(True)
        self.setStyleSheet("font-weight: 600;")
        self._plan = LatestJob()

    def update_plan(self, jobs: Any, students: Callable[[], Any],
                    make_job: Callable[[], Callable[[], Any]]) -> None:
        """The number of runs and their time, on the label (newest answer only)."""
        self._plan.forget()
        if not students():
            self.setText("Tick at least one student (or add another model).")
            return
        try:
            job = make_job()
        except KDStudioError as exc:
            self.setText(f"<span style='color:#c62828'>{exc}</span>")
            return
        self.setText("Working out the plan\u2026")

        self._plan.submit(job, lambda result: self.setText(result[1].text[0].upper() + result[1].text[1:]),
                          lambda exc: self.setText(f"<span style='color:#c62828'>{exc}</span>"),
                          runner=jobs)


def confirm_box(plan: Sweep, est: Any, parent: QWidget) -> QMessageBox:
    """'Start the sweep?' with the runs and their time; its Yes button reads Start."""
    runs = len(plan.entries)
    box = QMessageBox(QMessageBox.Icon.Question, "Start the sweep?",
                      f"<b>{runs} run{'s' if runs != 1 else ''}</b>: "
                      f"{'; '.join(e.label for e in plan.entries)}.<br><br>"
                      f"{est.text[0].upper()}{est.text[1:]}"
                      + (" Each student is then exported as int8 ONNX, which adds a little "
                         "time." if plan.quantize_int8 else "")
                      + "<br><br>They run one after another "
                      "and each appears on the Runs page. You can stop the queue and resume "
                      "it later, even after closing KD Studio.",
                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, parent)
    box.setObjectName("sweepConfirmDialog")
    box.button(QMessageBox.StandardButton.Yes).setText("Start")
    return box
