"""'Fit my budget': a limit (size on disk, latency per sample, or memory to distill), and the
derived student sizes worth trying under it. The figures come from core.sweep_plan.fit_budget
(measured where earlier runs measured them, else estimated), computed by the page in a job."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.widgets.common import named

KINDS = [("size", "Size on disk", "MB", 100.0), ("latency", "Latency per sample", "ms", 20.0),
         ("memory", "Memory to distill it", "MB", 8000.0)]


class BudgetBox(QGroupBox):
    """``propose_requested(kind, limit)`` asks the page for advice; ``use_layers(list)`` ticks
    the proposed layer counts."""

    propose_requested = Signal(str, float)
    use_layers = Signal(list)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Fit my budget", parent)
        self.setObjectName("budgetBox")
        self.proposed: list[int] = []
        self.kind_combo = named(QComboBox(), "budgetKindCombo", "Budget kind",
                                "What must stay within the limit: the student's size on disk, "
                                "its time per sample, or the memory needed to distill it here.")
        for key, text, _unit, _default in KINDS:
            self.kind_combo.addItem(text, key)
        self.limit = named(QDoubleSpinBox(), "budgetLimitSpin", "Budget limit",
                           "The most the student may take.")
        self.limit.setRange(0.001, 10_000_000)
        self.limit.setDecimals(3)
        self.limit.setValue(KINDS[0][3])
        self.limit.setSuffix(" MB")
        self.kind_combo.currentIndexChanged.connect(self._kind_changed)
        self.propose_button = named(QPushButton("Propose sizes"), "budgetProposeButton",
                                    "Propose student sizes", "List the student layer counts "
                                    "worth trying within this limit.")
        self.propose_button.clicked.connect(
            lambda: self.propose_requested.emit(self.kind_combo.currentData(), self.limit.value()))
        row = QHBoxLayout()
        row.addWidget(self.kind_combo, 1)
        row.addWidget(self.limit)
        row.addWidget(self.propose_button)
        self.result = QLabel("Give a limit and press Propose sizes: the sizes worth trying are "
                             "worked out from what earlier runs measured, or estimated.")
        self.result.setObjectName("budgetResult")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.use_button = named(QPushButton("Tick these sizes"), "budgetUseButton",
                                "Tick the proposed sizes", "Tick exactly the proposed layer "
                                "counts among the students.")
        self.use_button.setVisible(False)
        self.use_button.clicked.connect(lambda: self.use_layers.emit(list(self.proposed)))
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.result)
        lay.addWidget(self.use_button, 0, Qt.AlignmentFlag.AlignRight)

    def _kind_changed(self) -> None:
        i = self.kind_combo.currentIndex()
        self.limit.setSuffix(f" {KINDS[i][2]}")
        self.limit.setValue(KINDS[i][3])

    def set_busy(self) -> None:
        self.result.setText("Working it out\u2026")
        self.use_button.setVisible(False)

    def set_error(self, text: str) -> None:
        self.result.setText(text)
        self.proposed = []
        self.use_button.setVisible(False)

    def set_advice(self, advice: Any) -> None:
        self.proposed = list(advice.proposed)
        self.result.setText(advice.text)
        self.use_button.setVisible(bool(self.proposed))


def advise(config: Any, shape: Any, kind: str, limit: float, layers: list[int] | None) -> Any:
    """The budget advice for the config's teacher (in a job: it may read the teacher and runs)."""
    from kdstudio.core.device import resolve_device_name as resolve_device
    from kdstudio.core.sweep.plan import fit_budget, known_figures, teacher_shape_for

    device = resolve_device(config.training.device)
    figs = known_figures(config.task, config.teacher.name, device.split(":")[0])
    return fit_budget(kind, limit, shape or teacher_shape_for(config), figures=figs,
                      config=config, device=device, layer_options=layers)
