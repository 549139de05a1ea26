"""The Train page's settings: the basic hyperparameters in view, the rest folded away."""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.context import AppContext
from kdstudio.ui.widgets.common import named as _named

PRECISIONS = [("auto", "Automatic"), ("fp32", "Full (fp32)"), ("bf16", "Half, bfloat16"),
              ("fp16", "Half, float16")]
SCHEDULERS = [("linear", "Linear decay"), ("cosine", "Cosine decay"), ("constant", "Constant"),
              ("constant_with_warmup", "Constant after warm-up")]
DEVICES = ["auto", "cpu", "cuda", "mps"]
LR_MANTISSAS = (1.0, 2.0, 3.0, 5.0)  # the values people actually pick: 1e-4, 2e-4, 3e-4, 5e-4


class LearningRateSpinBox(QDoubleSpinBox):
    """Shows 3e-04 rather than 0.0003; the arrows walk 1, 2, 3, 5 in each power of ten."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setDecimals(12)
        self.setRange(0.0, 1.0)
        self.lineEdit().setObjectName("learningRateEdit")  # Qt's editor inside, named for tests

    def textFromValue(self, value: float) -> str:
        if value == 0:
            return "0"
        if value >= 0.01:
            return f"{value:.4g}"
        exp = math.floor(math.log10(value) + 1e-9)
        return f"{value / 10 ** exp:.4g}e{exp}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> Any:
        from PySide6.QtGui import QValidator

        stripped = text.strip().lower()
        if not stripped or stripped in ("-", ".") or stripped.endswith(("e", "e-", "e+")):
            return QValidator.State.Intermediate, text, pos
        try:
            v = float(stripped)
        except ValueError:
            return QValidator.State.Invalid, text, pos
        ok = self.minimum() <= v <= self.maximum()
        return (QValidator.State.Acceptable if ok else QValidator.State.Intermediate), text, pos

    def stepBy(self, steps: int) -> None:
        v = self.value()
        if v <= 0:
            self.setValue(1e-5 if steps > 0 else 0.0)
            return
        exp = math.floor(math.log10(v) + 1e-9)
        mant = v / 10 ** exp
        idx = min(range(len(LR_MANTISSAS)), key=lambda i: abs(LR_MANTISSAS[i] - mant))
        pos = exp * len(LR_MANTISSAS) + idx + steps
        e, i = divmod(pos, len(LR_MANTISSAS))
        self.setValue(min(self.maximum(), LR_MANTISSAS[i] * 10 ** e))


class Collapsible(QWidget):
    """A header button that shows and hides a body (closed at first)."""

    def __init__(self, title: str, body: QWidget, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.toggle = _named(QToolButton(), name, title, f"Show or hide the {title.lower()}.")
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setAutoRaise(True)
        self.toggle.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        font = self.toggle.font()
        font.setBold(True)
        self.toggle.setFont(font)
        self.body = body
        body.setVisible(False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.toggle)
        lay.addWidget(body)
        self.toggle.toggled.connect(self.set_open)

    def set_open(self, on: bool) -> None:
        self.toggle.setChecked(on)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.body.setVisible(on)


def _spin(name: str, accessible: str, tip: str, lo: int, hi: int, *, suffix: str = "",
          special: str = "", step: int = 1) -> QSpinBox:
    s = _named(QSpinBox(), name, accessible, tip)
    s.setRange(lo, hi)
    s.setSingleStep(step)
    if suffix:
        s.setSuffix(suffix)
    if special:
        s.setSpecialValueText(special)
    return s


class TrainSettings(QWidget):
    """Edits ctx.config.training; ``edited`` after each change the user makes."""

    edited = Signal()

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self._updating = False

        basic = QGroupBox("How long and how fast")
        basic.setObjectName("trainBasicBox")
        form = QFormLayout(basic)
        form.setContentsMargins(12, 10, 12, 10)
        form.setVerticalSpacing(8)
        self.unit_combo = _named(QComboBox(), "trainUnitCombo", "Train for steps or epochs",
                                 "Count training in optimizer steps, or in passes over the data "
                                 "(epochs).")
        self.unit_combo.addItem("steps", "steps")
        self.unit_combo.addItem("epochs", "epochs")
        self.steps_spin = _spin("maxStepsSpin", "Training steps", "How many times the student's "
                                "weights are updated.", 1, 10_000_000, step=50)
        self.epochs_spin = _named(QDoubleSpinBox(), "epochsSpin", "Training epochs",
                                  "How many times to go through the whole training data.")
        self.epochs_spin.setRange(0.01, 10_000)
        self.epochs_spin.setDecimals(2)
        self.epochs_spin.setSingleStep(0.5)
        length = QHBoxLayout()
        length.setSpacing(6)
        length.addWidget(self.steps_spin, 1)
        length.addWidget(self.epochs_spin, 1)
        length.addWidget(self.unit_combo)
        self.batch_spin = _spin("batchSizeSpin", "Batch size", "Examples the student sees at once. "
                                "Larger is faster per example but needs more memory.", 1, 65536)
        self.lr_spin = _named(LearningRateSpinBox(), "learningRateSpin", "Learning rate",
                              "How big each update is. Too high and training is unstable; too "
                              "low and the student learns slowly. 1e-4 to 5e-4 is usual.")
        form.addRow("Train for:", length)
        form.addRow("Batch size:", self.batch_spin)
        form.addRow("Learning rate:", self.lr_spin)

        adv = QFrame()
        adv.setObjectName("trainAdvancedBody")
        aform = QFormLayout(adv)
        aform.setContentsMargins(12, 4, 12, 8)
        aform.setVerticalSpacing(8)
        self.precision_combo = _named(QComboBox(), "precisionCombo", "Precision",
                                      "Number format for training. Automatic picks half precision "
                                      "(faster, less memory) on GPUs and full precision on the "
                                      "CPU.")
        for key, text in PRECISIONS:
            self.precision_combo.addItem(text, key)
        self.accum_spin = _spin("gradAccumSpin", "Gradient accumulation", "Add up this many "
                                "batches before each update: a larger effective batch without "
                                "more memory.", 1, 4096)
        self.scheduler_combo = _named(QComboBox(), "schedulerCombo", "Learning-rate schedule",
                                      "How the learning rate changes after the warm-up.")
        for key, text in SCHEDULERS:
            self.scheduler_combo.addItem(text, key)
        self.warmup_spin = _named(QDoubleSpinBox(), "warmupSpin", "Warm-up share",
                                  "Share of the steps spent raising the learning rate from zero.")
        self.warmup_spin.setRange(0, 100)
        self.warmup_spin.setDecimals(1)
        self.warmup_spin.setSuffix(" % of steps")
        self.decay_spin = _named(QDoubleSpinBox(), "weightDecaySpin", "Weight decay",
                                 "Pulls weights gently towards zero (AdamW's weight decay).")
        self.decay_spin.setRange(0, 10)
        self.decay_spin.setDecimals(3)
        self.decay_spin.setSingleStep(0.01)
        self.clip_spin = _named(QDoubleSpinBox(), "maxGradNormSpin", "Gradient clipping",
                                "Caps the size of each update's gradient (0 = no clipping).")
        self.clip_spin.setRange(0, 1000)
        self.clip_spin.setDecimals(2)
        self.clip_spin.setSpecialValueText("no clipping")
        self.eval_spin = _spin("evalEverySpin", "Evaluate every", "Measure the student every N "
                               "steps (0 = only at the end).", 0, 10_000_000, suffix=" steps",
                               special="only at the end", step=10)
        self.save_spin = _spin("saveEverySpin", "Checkpoint every", "Save a checkpoint every N "
                               "steps, to resume from (0 = only at the end or on stop).",
                               0, 10_000_000, suffix=" steps", special="only at the end", step=50)
        self.seed_spin = _spin("seedSpin", "Random seed", "The same seed and settings give the "
                               "same run.", -2_147_483_647, 2_147_483_647)
        self.device_combo = _named(QComboBox(), "deviceCombo", "Device",
                                   "Where to train: 'auto' picks the GPU when there is one. "
                                   "You can also type e.g. cuda:1.")
        self.device_combo.setEditable(True)
        self.device_combo.addItems(DEVICES)
        self.device_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        aform.addRow("Device:", self.device_combo)
        aform.addRow("Precision:", self.precision_combo)
        aform.addRow("Gradient accumulation:", self.accum_spin)
        aform.addRow("Schedule:", self.scheduler_combo)
        aform.addRow("Warm-up:", self.warmup_spin)
        aform.addRow("Weight decay:", self.decay_spin)
        aform.addRow("Clip gradients at:", self.clip_spin)
        aform.addRow("Evaluate every:", self.eval_spin)
        aform.addRow("Checkpoint every:", self.save_spin)
        aform.addRow("Seed:", self.seed_spin)
        self.advanced = Collapsible("Advanced settings", adv, "advancedToggle")

        for combo in (self.unit_combo, self.precision_combo, self.scheduler_combo, self.device_combo):
            # Long item texts must not widen the whole column.
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(6)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(6)
        lay.addWidget(basic)
        lay.addWidget(self.advanced)

        self.unit_combo.activated.connect(self._on_unit)
        self.steps_spin.valueChanged.connect(lambda v: self._write("max_steps", v))
        self.epochs_spin.valueChanged.connect(lambda v: self._write("epochs", round(v, 4)))
        self.batch_spin.valueChanged.connect(lambda v: self._write("batch_size", v))
        self.lr_spin.valueChanged.connect(lambda v: self._write("learning_rate", float(f"{v:.6g}")))
        self.precision_combo.activated.connect(
            lambda _i: self._write("precision", self.precision_combo.currentData()))
        self.accum_spin.valueChanged.connect(lambda v: self._write("grad_accum_steps", v))
        self.scheduler_combo.activated.connect(
            lambda _i: self._write("scheduler", self.scheduler_combo.currentData()))
        self.warmup_spin.valueChanged.connect(lambda v: self._write("warmup_ratio", round(v / 100, 4)))
        self.decay_spin.valueChanged.connect(lambda v: self._write("weight_decay", round(v, 6)))
        self.clip_spin.valueChanged.connect(lambda v: self._write("max_grad_norm", round(v, 4)))
        self.eval_spin.valueChanged.connect(lambda v: self._write("eval_every", v))
        self.save_spin.valueChanged.connect(lambda v: self._write("save_every", v))
        self.seed_spin.valueChanged.connect(lambda v: self._write("seed", v))
        self.device_combo.currentTextChanged.connect(
            lambda t: self._write("device", t.strip() or "auto"))
        ctx.config_changed.connect(self._on_config_changed)
        self.refresh()

    def _write(self, key: str, value: Any) -> None:
        if self._updating:
            return
        self._updating = True  # our own write must not refresh the widget being typed in
        try:
            self.ctx.set_value("training", key, value)
        finally:
            self._updating = False
        self.edited.emit()

    def _on_unit(self, _index: int) -> None:
        epochs = self.unit_combo.currentData() == "epochs"
        if epochs:
            self._write("max_steps", 0)
        else:
            self._write("max_steps", self.steps_spin.value())
        self._show_unit(epochs)

    def _show_unit(self, epochs: bool) -> None:
        self.steps_spin.setVisible(not epochs)
        self.epochs_spin.setVisible(epochs)

    def _on_config_changed(self, section: str) -> None:
        if section == "training" and not self._updating:
            self.refresh()  # e.g. the memory suggestion was applied

    def refresh(self) -> None:
        """Show ctx.config.training in every widget."""
        t = self.ctx.config.training
        self._updating = True
        try:
            epochs = t.max_steps == 0
            self.unit_combo.setCurrentIndex(1 if epochs else 0)
            self._show_unit(epochs)
            self.steps_spin.setValue(t.max_steps or max(self.steps_spin.value(), 100))
            self.epochs_spin.setValue(t.epochs)
            self.batch_spin.setValue(t.batch_size)
            self.lr_spin.setValue(t.learning_rate)
            self.precision_combo.setCurrentIndex(max(0, self.precision_combo.findData(t.precision)))
            self.accum_spin.setValue(t.grad_accum_steps)
            self.scheduler_combo.setCurrentIndex(max(0, self.scheduler_combo.findData(t.scheduler)))
            self.warmup_spin.setValue(t.warmup_ratio * 100)
            self.decay_spin.setValue(t.weight_decay)
            self.clip_spin.setValue(t.max_grad_norm)
            self.eval_spin.setValue(t.eval_every)
            self.save_spin.setValue(t.save_every)
            self.seed_spin.setValue(t.seed)
            if self.device_combo.currentText() != t.device:
                self.device_combo.setCurrentText(t.device)
        finally:
            self._updating = False
