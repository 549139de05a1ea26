"""The model card (size, shape, memory) and the compatibility light of the Models page."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt

from kdstudio.core.plan.speedup import ESTIMATE_HOW, speedup_text
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QWidget,
)

ROWS = (
    ("architecture", "Architecture", "The model's design (its transformers class)."),
    ("parameters", "Parameters", "How many numbers the model learned. Fewer parameters: "
                                 "less memory and usually faster answers."),
    ("layers", "Layers", "Transformer blocks, stacked. Each one refines the text's "
                         "representation; most of the compute is spent in them."),
    ("hidden_size", "Hidden size", "The width of every layer: how many numbers describe "
                                   "each token inside the model."),
    ("vocab_size", "Vocabulary", "Tokens (word pieces) the tokenizer knows. Logit "
                                 "distillation needs teacher and student to share it."),
    ("weights_mb", "Memory for the weights", "Memory the weights take in 32-bit floats "
                                             "(half of it in 16-bit precision)."),
    ("train_memory_mb", "Memory to train it", "Weights, gradients and the optimizer's two "
                                              "running averages: about 16 bytes a parameter, "
                                              "before activations."),
    ("speedup", "Expected speed-up", "An estimate: the teacher's layer compute divided by "
                                     "the student's (a layer's work grows with its "
                                     "parameters), never more than the parameters or the "
                                     "layers shrink. Embeddings, the output head and attention "
                                     "over long texts are not counted; the Compare page "
                                     "measures the real figure."),
)


def fmt_count(n: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{int(n)}"


def fmt_mb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.1f} MB" if mb < 10 else f"{mb:.0f} MB"


class ModelCard(QGroupBox):
    """A form of the model's figures; empty rows are hidden."""

    def __init__(self, title: str, object_name: str, parent: QWidget | None = None):
        super().__init__(title, parent)
        self.setObjectName(object_name)
        self.form = QFormLayout(self)
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.form.setHorizontalSpacing(16)
        self.placeholder = QLabel()
        self.placeholder.setObjectName(f"{object_name}Placeholder")
        self.placeholder.setWordWrap(True)
        self.placeholder.setStyleSheet("color: palette(placeholder-text);")
        self.form.addRow(self.placeholder)
        self.values: dict[str, QLabel] = {}
        for key, label, tip in ROWS:
            value = QLabel()
            value.setObjectName(f"{object_name}_{key}")
            value.setAccessibleName(label)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setToolTip(tip)
            name = QLabel(label + ":")
            name.setToolTip(tip)
            self.form.addRow(name, value)
            self.values[key] = value
        self.notes = QLabel()
        self.notes.setObjectName(f"{object_name}Notes")
        self.notes.setWordWrap(True)
        self.form.addRow(self.notes)
        self.show_message("")

    def _show_rows(self, keys: set[str]) -> None:
        for i, (key, _, _) in enumerate(ROWS):
            self.form.setRowVisible(i + 1, key in keys)

    def show_message(self, text: str) -> None:
        """No figures (nothing loaded yet, or loading): one sentence instead."""
        self._show_rows(set())
        self.placeholder.setText(text)
        self.form.setRowVisible(0, bool(text))
        self.notes.setText("")
        self.form.setRowVisible(len(ROWS) + 1, False)

    def show_info(self, info: dict[str, Any], *, training: bool = False) -> None:
        """A loaded model (model_summary's dict with inspect_model's extra keys)."""
        v = self.values
        v["architecture"].setText(f"{info['architecture']} ({info.get('model_type', '')})")
        v["parameters"].setText(f"{fmt_count(info['parameters'])} ({info['parameters']:,})")
        v["layers"].setText(str(info["layers"]))
        v["hidden_size"].setText(str(info["hidden_size"]))
        v["vocab_size"].setText(f"{info['vocab_size']:,} tokens")
        v["weights_mb"].setText(f"{fmt_mb(info['weights_mb'])} "
                                f"({fmt_mb(info['weights_mb'] / 2)} in half precision)")
        v["train_memory_mb"].setText(fmt_mb(info["train_memory_mb"]))
        keys = {"architecture", "parameters", "layers", "hidden_size", "vocab_size", "weights_mb"}
        self._show_rows(keys | ({"train_memory_mb"} if training else set()))
        self.form.setRowVisible(0, False)
        self.set_notes(info.get("notes", []))

    def show_derived(self, est: dict[str, Any], teacher: dict[str, Any]) -> None:
        """A student derived from the teacher: derived_estimate's figures against the teacher."""
        v = self.values
        v["architecture"].setText(f"{teacher['architecture']}, derived from the teacher")
        share = est["share_of_teacher"]
        v["parameters"].setText(f"{fmt_count(est['parameters'])} ({est['parameters']:,}): "
                                f"{share:.0%} of the teacher, "
                                f"{fmt_count(est['removed_parameters'])} fewer")
        kept = ", ".join(map(str, est["kept_layers"]))
        v["layers"].setText(f"{est['layers']} of {teacher['layers']} (teacher layers {kept})")
        width = est.get("hidden_size") or teacher["hidden_size"]
        if est.get("fresh_init"):
            how = "  (narrower: fresh start)"
        elif width != teacher["hidden_size"]:
            how = "  (narrower: initialised from the teacher's most important channels)"
        else:
            how = ""
        v["hidden_size"].setText(f"{width}{how}")
        v["vocab_size"].setText(f"{teacher['vocab_size']:,} tokens (the teacher's tokenizer)")
        v["weights_mb"].setText(fmt_mb(est["weights_mb"]))
        v["train_memory_mb"].setText(fmt_mb(est["train_memory_mb"]))
        v["speedup"].setText(speedup_text(est["speedup"], est.get("speedup_how", ESTIMATE_HOW)))
        self._show_rows({k for k, _, _ in ROWS})
        self.form.setRowVisible(0, False)
        notes = []
        if share > 0.6 and teacher.get("other_params", 0) > teacher["parameters"] / 3:
            notes.append(f"Most of what remains is the vocabulary embeddings "
                         f"({fmt_count(teacher['other_params'])} parameters outside the layers), "
                         "which every student keeps: fewer layers save less size than you might "
                         "expect, but still save time.")
        self.set_notes(notes)

    def set_notes(self, notes: list[str]) -> None:
        self.notes.setText(" ".join(notes))
        self.form.setRowVisible(len(ROWS) + 1, bool(notes))


COLORS = {"ok": "#2e9d4f", "warn": "#d99a00", "error": "#d0342c", "unknown": "#9a9a9a"}
LEVEL_WORDS = {"ok": "Compatible", "warn": "Compatible, with a note", "error": "Not compatible",
               "unknown": "Not checked yet"}


class CompatLight(QFrame):
    """A green / amber / red light with one plain sentence: why, and what to do."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("compatLight")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 8, 12, 8)
        lay.setSpacing(12)
        self.dot = QLabel()
        self.dot.setObjectName("compatDot")
        self.dot.setFixedSize(18, 18)
        self.title = QLabel()
        self.title.setObjectName("compatTitle")
        self.title.setStyleSheet("font-weight: bold;")
        self.message = QLabel()
        self.message.setObjectName("compatMessage")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.dot, 0, Qt.AlignmentFlag.AlignTop)
        lay.addWidget(self.title, 0, Qt.AlignmentFlag.AlignTop)
        lay.addWidget(self.message, 1)
        self.level = "unknown"
        self.set_state("unknown", "Load a teacher and choose a student to check that they fit "
                                  "together.")

    def set_state(self, level: str, message: str) -> None:
        self.level = level
        self.dot.setStyleSheet(f"background: {COLORS[level]}; border-radius: 9px;")
        self.title.setText(LEVEL_WORDS[level] + ":")
        self.message.setText(message)
        self.setAccessibleName(f"Compatibility: {LEVEL_WORDS[level]}. {message}")
