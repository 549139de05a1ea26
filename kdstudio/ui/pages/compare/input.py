"""The user's input on the Compare page: the text box, examples, generation settings, buttons."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.tasks import Task

EXAMPLE_W = 125  # the least room, in pixels, for an example's text


def _labelled(text: str, widget: QWidget, tip: str) -> QWidget:
    box = QWidget()
    lay = QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(4)
    label = QLabel(text)
    label.setBuddy(widget)
    widget.setToolTip(tip)
    label.setToolTip(tip)
    lay.addWidget(label)
    lay.addWidget(widget)
    return box


class InputPanel(QGroupBox):
    """Emits compare_requested, pin_requested and example_chosen(text)."""

    compare_requested = Signal()
    pin_requested = Signal()
    example_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Your input", parent)
        self.setObjectName("compareInputPanel")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 12, 12, 12)
        lay.setSpacing(8)
        self.input = QPlainTextEdit()
        self.input.setObjectName("compareInput")
        self.input.setAccessibleName("Your input")
        self.input.setTabChangesFocus(True)
        self.input.setFixedHeight(64)
        lay.addWidget(self.input)
        QShortcut(QKeySequence("Ctrl+Return"), self.input, activated=self.compare_requested)

        ex_row = QHBoxLayout()
        ex_row.setSpacing(6)
        ex_label = QLabel("Try:")
        ex_label.setToolTip("Click an example to compare the two models on it.")
        ex_row.addWidget(ex_label)
        self.example_buttons: list[QPushButton] = []
        for i in range(3):
            b = QPushButton()
            b.setObjectName(f"compareExample{i + 1}")
            b.setAccessibleName(f"Example input {i + 1}")
            b.setFlat(True)
            b.setMinimumWidth(EXAMPLE_W + 30)  # so a long example never widens the page
            b.setCursor(Qt.CursorShape.PointingHandCursor)
            b.setStyleSheet("QPushButton { color: palette(link); text-align: left; padding: 2px 4px; }")
            b.clicked.connect(lambda _=False, btn=b: self.example_chosen.emit(btn.toolTip()))
            self.example_buttons.append(b)
            ex_row.addWidget(b)
        ex_row.addStretch(1)
        lay.addLayout(ex_row)

        self.gen_box = QWidget()
        gen = QHBoxLayout(self.gen_box)
        gen.setContentsMargins(0, 0, 0, 0)
        gen.setSpacing(6)
        self.max_tokens = QSpinBox()
        self.max_tokens.setObjectName("genMaxNewTokens")
        self.max_tokens.setAccessibleName("Maximum new tokens")
        self.max_tokens.setRange(1, 1024)
        self.max_tokens.setValue(40)
        self.temperature = QDoubleSpinBox()
        self.temperature.setObjectName("genTemperature")
        self.temperature.setAccessibleName("Temperature")
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        self.temperature.setSpecialValueText("0 (greedy)")
        self.top_p = QDoubleSpinBox()
        self.top_p.setObjectName("genTopP")
        self.top_p.setAccessibleName("Top-p")
        self.top_p.setRange(0.05, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(1.0)
        self.seed = QSpinBox()
        self.seed.setObjectName("genSeed")
        self.seed.setAccessibleName("Seed")
        self.seed.setRange(0, 99999)
        gen.addWidget(_labelled("New tokens", self.max_tokens,
                                "The most tokens each model may add to your text."))
        gen.addWidget(_labelled("Temperature", self.temperature,
                                "0 always picks the most likely next token (greedy); higher "
                                "values sample more freely."))
        gen.addWidget(_labelled("Top-p", self.top_p,
                                "When sampling, pick only among the most likely tokens that "
                                "together hold this much probability."))
        gen.addWidget(_labelled("Seed", self.seed,
                                "The same seed gives both models the same random draws, so a "
                                "sampled comparison can be repeated."))
        gen.addStretch(1)
        self.temperature.valueChanged.connect(lambda v: self.top_p.setEnabled(v > 0))
        self.top_p.setEnabled(False)
        lay.addWidget(self.gen_box)

        buttons = QHBoxLayout()
        self.busy = QProgressBar()
        self.busy.setObjectName("compareBusy")
        self.busy.setAccessibleName("Working")
        self.busy.setRange(0, 0)
        self.busy.setFixedWidth(90)
        self.busy.setTextVisible(False)
        self.busy.hide()
        self.status = QLabel()
        self.status.setObjectName("compareStatus")
        self.status.setWordWrap(True)
        self.pin_button = QPushButton("Pin this input")
        self.pin_button.setObjectName("pinInputButton")
        self.pin_button.setAccessibleName("Pin this input")
        self.pin_button.setToolTip("Add this input to the pinned inputs: the student of the next "
                                   "run answers it at every evaluation.")
        self.pin_button.clicked.connect(self.pin_requested)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setObjectName("compareButton")
        self.compare_button.setAccessibleName("Compare teacher and student")
        self.compare_button.setToolTip("Ask both models to answer your input (Ctrl+Enter).")
        self.compare_button.setDefault(True)
        self.compare_button.setMinimumWidth(120)
        self.compare_button.clicked.connect(self.compare_requested)
        buttons.addWidget(self.busy)
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.pin_button)
        buttons.addWidget(self.compare_button)
        lay.addLayout(buttons)

    def text(self) -> str:
        return self.input.toPlainText()

    def set_task(self, task: Task | None) -> None:
        """The run's task family (None for one this version does not know): its hint and
        examples, and the generation settings for a model that writes text."""
        self.input.setPlaceholderText(task.compare_hint if task else "Type an input.")
        for b, text in zip(self.example_buttons, task.examples if task else ()):
            b.setToolTip(text)
            b.setAccessibleName(f"Example: {text}")
        self._elide_examples()
        self.gen_box.setVisible(task is not None and task.generation_applies)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._elide_examples()

    def _elide_examples(self) -> None:
        """Show as much of each example as the row has room for (the tooltip holds all)."""
        room = max(EXAMPLE_W, min(260, (self.width() - 110) // 3 - 24))
        for b in self.example_buttons:
            shown = b.fontMetrics().elidedText(b.toolTip(), Qt.TextElideMode.ElideRight, room)
            b.setText(f"“{shown}”")

    def generation(self) -> dict[str, Any]:
        """Keyword arguments for core.compare.GenerationSettings."""
        return {"max_new_tokens": self.max_tokens.value(), "temperature": self.temperature.value(),
                "top_p": self.top_p.value(), "seed": self.seed.value()}

    def set_busy(self, busy: bool, label: str = "Compare", status: str = "") -> None:
        self.compare_button.setEnabled(not busy)
        self.compare_button.setText(label)
        for b in self.example_buttons:
            b.setEnabled(not busy)
        self.busy.setVisible(busy)
        self.status.setText(status)
