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
    QLabel,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.context import AppContext
from kdstudio.ui.widgets.binding import Binder
from kdstudio.ui.widgets.common import named as _named

# The words shown for each value; the values themselves are the config's choices.
PRECISION_TEXT = {"auto": "Automatic", "fp32": "Full (fp32)", "bf16": "Half, bfloat16",
                  "fp16": "Half, float16"}
SCHEDULER_TEXT = {"linear": "Linear decay", "cosine": "Cosine decay", "constant": "Constant",
                  "constant_with_warmup": "Constant after warm-up"}
DEVICES = ["auto", "cpu", "cuda", "mps"]  # suggestions; any device name may be typed
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


class TrainSettings(QWidget):
    """Edits ctx.config.training; ``edited`` after each change the user makes."""

    edited = Signal()

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.binder = b = Binder(ctx, on_edit=self.edited.emit)

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
        self.steps_spin = b.spin("training", "max_steps", "Training steps", name="maxStepsSpin",
                                 tip="How many times the student's weights are updated.", lo=1,
                                 hi=10_000_000, step=50, tracking=True,
                                 show=lambda v: v or max(self.steps_spin.value(), 100))
        self.epochs_spin = b.spin("training", "epochs", "Training epochs", name="epochsSpin",
                                  tip="How many times to go through the whole training data.",
                                  lo=0.01, hi=10_000, decimals=2, step=0.5, tracking=True,
                                  read=lambda v: round(v, 4))
        length = QHBoxLayout()
        length.setSpacing(6)
        length.addWidget(self.steps_spin, 1)
        length.addWidget(self.epochs_spin, 1)
        length.addWidget(self.unit_combo)
        self.batch_spin = b.spin("training", "batch_size", "Batch size", name="batchSizeSpin",
                                 tip="Examples the student sees at once. Larger is faster per "
                                 "example but needs more memory.", hi=65536, tracking=True)
        self.lr_spin = b.spin("training", "learning_rate", "Learning rate", name="learningRateSpin",
                              tip="How big each update is. Too high and training is unstable; too "
                              "low and the student learns slowly. 1e-4 to 5e-4 is usual.",
                              widget=LearningRateSpinBox(), hi=1.0, step=1e-5, tracking=True,
                              read=lambda v: float(f"{v:.6g}"))
        form.addRow("Train for:", length)
        form.addRow("Batch size:", self.batch_spin)
        # What an applied memory suggestion changed (accumulation is folded away below).
        self.suggestion_note = QLabel()
        self.suggestion_note.setObjectName("suggestionNote")
        self.suggestion_note.setAccessibleName("What the memory suggestion changed")
        self.suggestion_note.setWordWrap(True)
        self.suggestion_note.setTextInteractionFlags(
            Qt.TextInteractionFlag.LinksAccessibleByMouse
            | Qt.TextInteractionFlag.LinksAccessibleByKeyboard)
        self.suggestion_note.setVisible(False)
        self.suggestion_note.linkActivated.connect(lambda _link: self.undo_suggestion())
        form.addRow(self.suggestion_note)
        form.addRow("Learning rate:", self.lr_spin)

        adv = QFrame()
        adv.setObjectName("trainAdvancedBody")
        aform = QFormLayout(adv)
        aform.setContentsMargins(12, 4, 12, 8)
        aform.setVerticalSpacing(8)
        self.precision_combo = b.combo("training", "precision", "Precision", PRECISION_TEXT,
                                       name="precisionCombo", tip="Number format for training. "
                                       "Automatic picks half precision (faster, less memory) on "
                                       "GPUs and full precision on the CPU.")
        self.accum_spin = b.spin("training", "grad_accum_steps", "Gradient accumulation",
                                 name="gradAccumSpin", tip="Add up this many batches before each "
                                 "update: a larger effective batch without more memory.",
                                 hi=4096, tracking=True)
        self.scheduler_combo = b.combo("training", "scheduler", "Learning-rate schedule",
                                       SCHEDULER_TEXT, name="schedulerCombo",
                                       tip="How the learning rate changes after the warm-up.")
        self.warmup_spin = b.spin("training", "warmup_ratio", "Warm-up share", name="warmupSpin",
                                  tip="Share of the steps spent raising the learning rate from "
                                  "zero.", decimals=1, scale=100, suffix=" % of steps",
                                  tracking=True, read=lambda v: round(v / 100, 4))
        self.decay_spin = b.spin("training", "weight_decay", "Weight decay", name="weightDecaySpin",
                                 tip="Pulls weights gently towards zero (AdamW's weight decay).",
                                 hi=10, decimals=3, step=0.01, tracking=True,
                                 read=lambda v: round(v, 6))
        self.clip_spin = b.spin("training", "max_grad_norm", "Gradient clipping",
                                name="maxGradNormSpin", tip="Caps the size of each update's "
                                "gradient (0 = no clipping).", hi=1000, decimals=2,
                                special="no clipping", tracking=True, read=lambda v: round(v, 4))
        self.eval_spin = b.spin("training", "eval_every", "Evaluate every", name="evalEverySpin",
                                tip="Measure the student every N steps (0 = only at the end).",
                                hi=10_000_000, suffix=" steps", special="only at the end",
                                step=10, tracking=True)
        self.save_spin = b.spin("training", "save_every", "Checkpoint every", name="saveEverySpin",
                                tip="Save a checkpoint every N steps, to resume from (0 = only at "
                                "the end or on stop).", hi=10_000_000, suffix=" steps",
                                special="only at the end", step=50, tracking=True)
        self.seed_spin = b.spin("training", "seed", "Random seed", name="seedSpin",
                                tip="The same seed and settings give the same run.",
                                lo=-2_147_483_647, hi=2_147_483_647, tracking=True)
        self.device_combo = QComboBox()
        self.device_combo.setEditable(True)
        self.device_combo.addItems(DEVICES)
        self.device_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        b.bind(self.device_combo, "training", "device", self.device_combo.currentTextChanged,
               lambda t: t.strip() or "auto", self._show_device, label="Device", name="deviceCombo",
               tip="Where to train: 'auto' picks the GPU when there is one. You can also type "
               "e.g. cuda:1.")
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
        # After the binder's own write (connected first): keep the examples per step.
        self.batch_spin.valueChanged.connect(self._batch_edited)
        self.accum_spin.valueChanged.connect(lambda _v: self.forget_suggestion())
        ctx.config_changed.connect(self._on_config_changed)
        # The values an applied memory suggestion replaced ({"training.batch_size": 32, ...});
        # None when no suggestion is in force.
        self._before: dict[str, Any] | None = None
        self.refresh()

    # -- the memory suggestion ----------------------------------------------------------------
    # Applying it lowers the batch and raises gradient accumulation so that each step still
    # learns from as many examples. While it is in force the page says so under the batch
    # size, and changing the batch size keeps the examples per step the user had chosen
    # (accumulation follows: 32 examples at batch 8 is 4 accumulation steps); back at the
    # batch size from before the suggestion, accumulation is back to its value from before
    # and the suggestion is gone. Editing accumulation by hand ends it too; "Undo" restores
    # every setting it changed.
    def remember_suggestion(self, before: dict[str, Any]) -> None:
        """A memory suggestion was applied; ``before`` holds the values it replaced."""
        self._before = dict(before) if {"training.batch_size",
                                         "training.grad_accum_steps"} <= set(before) else None
        self._show_suggestion()

    def forget_suggestion(self) -> None:
        self._before = None
        self._show_suggestion()

    def undo_suggestion(self) -> None:
        """Put back every setting the suggestion changed."""
        before, self._before = self._before, None
        for dotted, value in (before or {}).items():
            section, key = dotted.split(".", 1)
            self.ctx.set_value(section, key, value)
        self.refresh()
        self._show_suggestion()

    def _target(self) -> int:
        """The examples per step the user chose before the suggestion."""
        b = self._before or {}
        return int(b.get("training.batch_size", 1)) * int(b.get("training.grad_accum_steps", 1))

    def _batch_edited(self, batch: int) -> None:
        if self._before is None or batch < 1:
            return
        accum = max(1, math.ceil(self._target() / batch))
        self.binder.write(("training", "grad_accum_steps"), accum)
        only_batch = set(self._before) == {"training.batch_size", "training.grad_accum_steps"}
        if only_batch and batch >= self._before["training.batch_size"]:
            self._before = None  # back where the user was: the suggestion is undone
        self.refresh()
        self._show_suggestion()

    def _show_suggestion(self) -> None:
        if self._before is None:
            self.suggestion_note.setVisible(False)
            self.suggestion_note.clear()
            return
        t = self.ctx.config.training
        per_step, target = t.batch_size * t.grad_accum_steps, self._target()
        same = (f"the same {per_step} examples per step as before" if per_step == target else
                f"{per_step} examples per step (you had {target})")
        self.suggestion_note.setText(
            f"Memory suggestion applied: batch {t.batch_size} × {t.grad_accum_steps} "
            f"accumulation steps, {same}. Changing the batch size keeps {target} examples per "
            f"step; gradient accumulation is under Advanced settings. "
            f"<a href='undo'>Undo</a>")
        self.suggestion_note.setToolTip(
            "Gradient accumulation adds up several batches before each update, so a smaller "
            "batch needs less memory at once but learns from as many examples per step.")
        self.suggestion_note.setVisible(True)

    def _show_device(self, device: str) -> None:
        if self.device_combo.currentText() != device:
            self.device_combo.blockSignals(True)
            self.device_combo.setCurrentText(device)
            self.device_combo.blockSignals(False)

    def _on_unit(self, _index: int) -> None:
        epochs = self.unit_combo.currentData() == "epochs"
        self.binder.write(("training", "max_steps"), 0 if epochs else self.steps_spin.value())
        self._show_unit(epochs)

    def _show_unit(self, epochs: bool) -> None:
        self.steps_spin.setVisible(not epochs)
        self.epochs_spin.setVisible(epochs)

    def _on_config_changed(self, section: str) -> None:
        if section == "training":
            self.refresh()  # e.g. the memory suggestion was applied

    def refresh(self) -> None:
        """Show ctx.config.training in every widget."""
        epochs = self.ctx.config.training.max_steps == 0
        self.unit_combo.setCurrentIndex(1 if epochs else 0)
        self._show_unit(epochs)
        self.binder.refresh()
