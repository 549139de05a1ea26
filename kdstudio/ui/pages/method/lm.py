"""The Method page's language-model methods and the plain-training baseline.

``LanguageModelMethods`` (causal-lm only): sequence-level distillation, on-policy
distillation (its share of batches), the cross-tokenizer loss weight and the [generation]
settings the first two use. ``BaselineBox`` (every task): evaluation.baseline. Each control
is tied to one config field by a Binder (widgets/binding.py) and carries the field's help
text as its tooltip; a plain-language explanation sits beside it.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.pages.method.text import (
    BASELINE,
    CROSS_TOKENIZER,
    GENERATION,
    NO_BASELINE,
    ON_POLICY,
    SEQUENCE_LEVEL,
)
from kdstudio.ui.widgets.binding import Binder, field_help
from kdstudio.ui.widgets.common import fit_placeholder, named, show_value

# key -> (label, minimum, maximum, step, decimals or None for whole numbers, special text at minimum)
GEN_SPINS: dict[str, tuple[str, float, float, float, int | None, str]] = {
    "prompt_tokens": ("Prompt length (tokens)", 1, 4096, 1, None, ""),
    "max_new_tokens": ("New tokens per continuation", 1, 4096, 8, None, ""),
    "temperature": ("Sampling temperature", 0.0, 5.0, 0.1, 2, "0 (greedy)"),
    "top_p": ("Top-p", 0.01, 1.0, 0.05, 2, ""),
    "max_prompts": ("Texts to continue", 0, 10_000_000, 100, None, "all"),
    "batch_size": ("Prompts at once", 1, 4096, 8, None, ""),
}


def _explanation(text: str, name: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    return label


class LanguageModelMethods(QGroupBox):
    """Sequence-level, on-policy and cross-tokenizer distillation, and their [generation]."""

    def __init__(self, ctx: Any, parent: QWidget | None = None):
        super().__init__("Language models: learning from generated text", parent)
        self.setObjectName("methodLmGroup")
        self.ctx = ctx
        self.binder = b = Binder(ctx)

        self.sequence_level = b.check("method", "sequence_level", "Sequence-level distillation",
                                      "Learn from the teacher's own texts (sequence-level)")
        self.on_policy = b.spin("method", "on_policy_share", "Share of batches on the student's "
                                "own texts (on-policy)", step=10, decimals=0, scale=100,
                                suffix=" % of batches", special="0 (off)")
        self.cross_tokenizer = b.spin("method", "cross_tokenizer_weight",
                                      "Cross-tokenizer loss weight", hi=100.0, step=0.1,
                                      decimals=3, special="0 (off)")
        for w in (self.on_policy, self.cross_tokenizer):
            w.setMaximumWidth(140)

        grid = QGridLayout()
        grid.setHorizontalSpacing(16)
        grid.setVerticalSpacing(10)
        grid.setColumnStretch(1, 1)
        rows = [(self.sequence_level, None, SEQUENCE_LEVEL, "methodSequenceLevelText"),
                (self.on_policy, "On-policy: batches on the student's own texts:", ON_POLICY, "methodOnPolicyText"),
                (self.cross_tokenizer, "Cross-tokenizer weight:", CROSS_TOKENIZER,
                 "methodCrossTokenizerText")]
        for r, (w, label, text, name) in enumerate(rows):
            cell = QVBoxLayout()
            cell.setSpacing(2)
            if label:
                title = QLabel(label)
                title.setBuddy(w)
                title.setToolTip(w.toolTip())
                cell.addWidget(title)
            cell.addWidget(w)
            cell.addStretch(1)
            grid.addLayout(cell, r, 0)
            grid.addWidget(_explanation(text, name), r, 1)

        self.gen_box = QGroupBox("Generation: how the continuations are written")
        self.gen_box.setObjectName("methodGenerationGroup")
        form = QFormLayout(self.gen_box)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        gen_text = QLabel(GENERATION)
        gen_text.setObjectName("methodGenerationText")
        gen_text.setWordWrap(True)
        form.addRow(gen_text)
        self.gen_rows: dict[str, QWidget] = {}
        for key, (label, lo, hi, step, decimals, special) in GEN_SPINS.items():
            w = b.spin("generation", key, label, lo=lo, hi=hi, step=step, decimals=decimals,
                       special=special)
            name = QLabel(label + ":")
            name.setToolTip(w.toolTip())
            form.addRow(name, w)
            self.gen_rows[key] = w
        self.reuse = QLineEdit()
        b.bind(self.reuse, "generation", "reuse", self.reuse.editingFinished,
               lambda: self.reuse.text().strip(), lambda v: show_value(self.reuse, v),
               label="Reuse the generations of an earlier run")
        self.reuse.setMinimumWidth(260)
        fit_placeholder(self.reuse, "empty: the teacher writes new continuations")
        self.reuse_button = named(QPushButton("Choose..."), "generation_reuse_choose",
                                  "Choose the generations to reuse",
                                  "Pick the generations.jsonl of an earlier sequence-level run.")
        self.reuse_button.clicked.connect(self._choose_reuse)
        reuse_row = QWidget()
        rl = QHBoxLayout(reuse_row)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.reuse, 1)
        rl.addWidget(self.reuse_button)
        reuse_label = QLabel("Reuse earlier texts:")
        reuse_label.setToolTip(field_help("generation", "reuse"))
        reuse_label.setBuddy(self.reuse)
        form.addRow(reuse_label, reuse_row)

        lay = QVBoxLayout(self)
        lay.addLayout(grid)
        lay.addWidget(self.gen_box)
        self.refresh()

    @property
    def controls(self) -> dict[tuple[str, str], QWidget]:
        """Each field's control."""
        return self.binder.controls

    # -- showing and writing ---------------------------------------------------------------
    def refresh(self) -> None:
        """Show the config's values; disable the generation settings nothing uses."""
        self.binder.refresh()
        m = self.ctx.config.method
        generates = m.sequence_level or m.on_policy_share > 0
        self.gen_box.setEnabled(generates)
        self.gen_box.setToolTip("" if generates else "Used by sequence-level or on-policy "
                                "distillation; switch one of them on first.")
        for key in ("max_prompts",):
            self.gen_rows[key].setEnabled(m.sequence_level)
        self.reuse.setEnabled(m.sequence_level)
        self.reuse_button.setEnabled(m.sequence_level)

    def _choose_reuse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Generations to reuse", self.reuse.text(),
                                              "Generations (generations.jsonl);;JSON lines (*.jsonl);;"
                                              "All files (*)")
        if path:
            self.reuse.setText(path)
            self.binder.write(("generation", "reuse"), path.strip())


class BaselineBox(QGroupBox):
    """evaluation.baseline: train the same student without the teacher, for comparison."""

    def __init__(self, ctx: Any, parent: QWidget | None = None):
        super().__init__("Compare with plain training", parent)
        self.setObjectName("methodBaselineGroup")
        self.ctx = ctx
        self.binder = Binder(ctx)
        self.check = self.binder.check("evaluation", "baseline",
                                       "Also train the same student without the teacher",
                                       "Also train the same student without the teacher")
        lay = QHBoxLayout(self)
        lay.setSpacing(16)
        lay.addWidget(self.check, 0, Qt.AlignmentFlag.AlignTop)
        lay.addWidget(_explanation(BASELINE, "methodBaselineText"), 1)
        self.refresh()

    def refresh(self) -> None:
        """Off, and unavailable, for a task whose student cannot learn without a teacher."""
        from kdstudio.core.objective import has_plain_loss

        possible = has_plain_loss(self.ctx.config.task)
        if not possible and self.ctx.config.evaluation.baseline:
            self.ctx.set_value("evaluation", "baseline", False)  # e.g. the task just changed
        self.binder.refresh()
        self.check.setEnabled(possible)
        self.check.setToolTip(field_help("evaluation", "baseline") if possible else NO_BASELINE)
