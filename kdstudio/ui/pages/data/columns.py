"""The Data page's form of columns, splits and sizes; the page connects to its widgets."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QWidget,
)

from kdstudio.core.tasks import Task, get_task
from kdstudio.ui.widgets.common import named as _named

HOLD_OUT = "Part of the training split"
MISSING = "not in this data"


def fill_combo(combo: QComboBox, first: tuple[str, str], names: list[str], current: str) -> None:
    """Items (text, data): ``first``, then ``names``; a ``current`` value not among them is kept,
    marked, so a config's choice is never silently replaced."""
    combo.clear()
    combo.addItem(*first)
    for n in names:
        combo.addItem(n, n)
    if current and combo.findData(current) < 0:
        combo.addItem(f"{current} ({MISSING})", current)
    combo.setCurrentIndex(max(0, combo.findData(current)))


class DataColumnsBox(QGroupBox):
    """Text and label columns, training and evaluation splits, maximum length, row limit."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Columns and splits", parent)
        self.setObjectName("dataColumnsBox")
        form = QFormLayout(self)
        form.setContentsMargins(12, 10, 12, 10)
        form.setVerticalSpacing(8)
        self.text_combo = _named(QComboBox(), "textColumnCombo", "Text column",
                                 "The column that holds the text the models read.")
        self.label_combo = _named(QComboBox(), "labelColumnCombo", "Label column",
                                  "The column that holds each row's class (for classification), "
                                  "or a topic used to measure embeddings.")
        self.split_combo = _named(QComboBox(), "splitCombo", "Training split",
                                  "The part of the data set to train on.")
        self.eval_combo = _named(QComboBox(), "evalSplitCombo", "Evaluation split",
                                 "Where the student is measured: a separate split, or a share "
                                 "of the training split held back from training.")
        self.fraction_spin = _named(QDoubleSpinBox(), "evalFractionSpin", "Share held out",
                                    "The share of the training rows kept aside to measure the "
                                    "student on (never trained on).")
        self.fraction_spin.setRange(0, 90)
        self.fraction_spin.setDecimals(0)
        self.fraction_spin.setSingleStep(5)
        self.fraction_spin.setSuffix(" %")
        self.length_spin = _named(QSpinBox(), "maxLengthSpin", "Maximum length in tokens",
                                  "Longer texts are cut to this many tokens. Longer means more "
                                  "memory and slower steps.")
        self.length_spin.setRange(4, 131072)
        self.length_spin.setSingleStep(16)
        self.length_spin.setSuffix(" tokens")
        self.limit_spin = _named(QSpinBox(), "maxTrainSamplesSpin", "Training rows to use",
                                 "Use only the first rows for a quick try (0 uses every row).")
        self.limit_spin.setRange(0, 100_000_000)
        self.limit_spin.setSingleStep(100)
        self.limit_spin.setSpecialValueText("all rows")
        self.limit_spin.setSuffix(" rows")
        self.pack_check = _named(QCheckBox("Join short texts into full-length blocks"), "packCheck",
                                 "Join short texts", "Language models: no compute is spent on "
                                 "padding when short texts are joined into blocks.")
        self.fraction_label = QLabel("held out:")
        self.fraction_label.setObjectName("evalFractionLabel")
        measure = QHBoxLayout()
        measure.setSpacing(8)
        measure.addWidget(self.eval_combo, 1)
        measure.addWidget(self.fraction_label)
        measure.addWidget(self.fraction_spin)
        form.addRow("Text column:", self.text_combo)
        form.addRow("Label column:", self.label_combo)
        form.addRow("Train on split:", self.split_combo)
        form.addRow("Measure on:", measure)
        form.addRow("Maximum length:", self.length_spin)
        form.addRow("Use at most:", self.limit_spin)
        form.addRow("", self.pack_check)
        self.form = form

    def show_config(self, d: Any, task: str | Task, preview: Any) -> None:
        """Fill every widget from a DataConfig and the latest preview (or None)."""
        self.fill_columns(d, preview)
        self.fill_splits(d, preview)
        self.fraction_spin.setValue(d.eval_fraction * 100)
        self.enable_fraction(not d.eval_split)
        self.length_spin.setValue(d.max_length)
        self.limit_spin.setValue(d.max_train_samples)
        self.pack_check.setChecked(d.pack)
        task = get_task(task)
        self.form.setRowVisible(self.label_combo, task.uses_labels)
        self.form.setRowVisible(self.pack_check, task.packs)

    def fill_columns(self, d: Any, p: Any) -> None:
        columns = p.columns if p else []
        none = " (none found)" if p else ""
        text_auto = f"Detect automatically ({p.text_column})" if p and p.text_column else \
            "Detect automatically" + none
        label_auto = f"Detect automatically ({p.label_column})" if p and p.label_column else \
            "Detect automatically" + none
        fill_combo(self.text_combo, (text_auto, ""), columns, d.text_column)
        fill_combo(self.label_combo, (label_auto, ""), columns, d.label_column)

    def fill_splits(self, d: Any, p: Any) -> None:
        splits = p.splits if p else []
        self.split_combo.clear()
        for s in splits or [d.split]:
            self.split_combo.addItem(s, s)
        if self.split_combo.findData(d.split) < 0:
            self.split_combo.addItem(f"{d.split} ({MISSING})", d.split)
        self.split_combo.setCurrentIndex(self.split_combo.findData(d.split))
        fill_combo(self.eval_combo, (HOLD_OUT, ""), [s for s in splits if s != d.split], d.eval_split)

    def enable_fraction(self, on: bool) -> None:
        self.fraction_spin.setEnabled(on)
        self.fraction_label.setEnabled(on)
