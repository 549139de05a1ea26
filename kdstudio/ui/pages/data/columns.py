"""The Data page's form of columns, splits and sizes; the page connects to its widgets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QWidget,
)

from kdstudio.core.tasks import Task, get_task
from kdstudio.ui.widgets.binding import Binder
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
    """Text and label columns, training and evaluation splits, maximum length, row limit.
    The sizes write ``ctx.config.data`` themselves and call ``on_edit`` after each edit."""

    def __init__(self, ctx: Any, on_edit: Callable[[], None] | None = None,
                 parent: QWidget | None = None):
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
        # The four size fields are bound from their metadata (widgets/binding.py).
        self.binder = b = Binder(ctx, on_edit=on_edit)
        self.fraction_spin = b.spin("data", "eval_fraction", "Share held out",
                                    name="evalFractionSpin", decimals=0, step=5, scale=100,
                                    suffix=" %", tracking=True, read=lambda v: round(v / 100, 4),
                                    tip="The share of the training rows kept aside to measure "
                                    "the student on (never trained on).")
        self.length_spin = b.spin("data", "max_length", "Maximum length in tokens",
                                  name="maxLengthSpin", hi=131072, step=16, suffix=" tokens",
                                  tracking=True, tip="Longer texts are cut to this many tokens. "
                                  "Longer means more memory and slower steps.")
        self.limit_spin = b.spin("data", "max_train_samples", "Training rows to use",
                                 name="maxTrainSamplesSpin", hi=100_000_000, step=100,
                                 special="all rows", suffix=" rows", tracking=True,
                                 tip="Use only the first rows for a quick try (0 uses every row).")
        self.pack_check = b.check("data", "pack", "Join short texts",
                                  "Join short texts into full-length blocks", name="packCheck",
                                  tip="Language models: no compute is spent on padding when short "
                                  "texts are joined into blocks.")
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
        self.binder.refresh()
        self.enable_fraction(not d.eval_split)
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
