"""The derived student's size control: a target size and how to cut, or the sizes by hand.

Every control is tied to one ``student`` field by a Binder (widgets/binding.py). A non-coder
sets "Target size" (a share of the teacher's parameters, shown as %) and "How to cut"
(fewer layers, narrower layers, or both); "By hand" unfolds the attention heads, MLP neurons,
vocabulary and which layers to keep (the width is the layer picker's "Width" row).
The figures line shows the student these fields describe, from
``core.plan.pruned.pruned_estimate`` (meta-device models: counted in a job, latest wins);
a shape this teacher cannot take shows ``pruning.check_student_fields``'s message, in the
app's words, under the controls.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QToolButton, QWidget

from kdstudio.core.plan.speedup import ESTIMATE_HOW, speedup_text
from kdstudio.ui.jobs import LatestJob
from kdstudio.ui.pages.models.card import fmt_count, fmt_mb
from kdstudio.ui.widgets.binding import Binder

SHAPE_TEXT = {"layers": "Fewer layers (the teacher's width)",
              "width": "Narrower layers (every layer kept)",
              "both": "Both: fewer and narrower layers"}
VOCAB_TEXT = {"teacher": "The teacher's whole vocabulary",
              "data": "Only the tokens the training data uses"}
CHOICE_TEXT = {"even": "Evenly spaced",
               "importance": "The most important (measured on the data)"}
# The app's words for the fields, for messages the engine writes in config terms.
LABELS = {"target_size": "Target size", "shape": "How to cut", "attention_heads": "Attention heads",
          "intermediate_size": "MLP neurons", "hidden_size": "Width", "vocabulary": "Vocabulary",
          "layer_choice": "Which layers", "layers": "Layers to keep",
          "layer_indices": "Teacher layers"}
WORDS = {"vocabulary": VOCAB_TEXT, "shape": SHAPE_TEXT, "layer_choice": CHOICE_TEXT}


def in_app_words(message: str) -> str:
    """An engine message about ``student.*`` fields, with the names and words the page shows."""
    def label(key: str) -> str:
        return f"\u201c{LABELS.get(key, key.replace('_', ' '))}\u201d"

    def word(key: str, value: str) -> str:
        return WORDS.get(key, {}).get(value, value)

    # 'Set student.vocabulary = "teacher" (allowed: teacher, data).'
    message = re.sub(r"""[Ss]et student\.(\w+) = "?([\w.]+)"?(?: \(allowed: [^)]*\))?""",
                     lambda m: f"Choose \u201c{word(m[1], m[2])}\u201d for {label(m[1])}",
                     message)
    # "student.vocabulary is 'data'"
    message = re.sub(r"student\.(\w+) is '([\w.]+)'",
                     lambda m: f"{label(m[1])} is \u201c{word(m[1], m[2])}\u201d", message)
    message = re.sub(r"student\.(\w+)", lambda m: label(m[1]), message)
    # "(0 keeps the teacher's 12)": 0 is shown as "The teacher's" in the spin boxes.
    return re.sub(r"\(0 keeps the teacher's( \d+)?\)",
                  lambda m: f"(or \u201cThe teacher's\u201d{',' + m[1] if m[1] else ''})", message)


class SizeControl(QGroupBox):
    """Emits ``edited()`` after the user changed a size field. ``teacher()`` gives the loaded
    teacher's inspection (core.plan.shapes.ModelInspection) or None."""

    edited = Signal()

    def __init__(self, ctx: Any, teacher: Callable[[], Any], parent: QWidget | None = None):
        super().__init__("Derived student: how small", parent)
        self.ctx = ctx
        self.teacher = teacher
        self.setObjectName("sizeControl")
        self.estimate: dict[str, Any] | None = None
        self._job = LatestJob(ctx.jobs)
        self._dims: tuple[int, int] | None = None
        b = self.binder = Binder(ctx, on_edit=self.edited.emit)

        form = self.form = QFormLayout(self)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.target = b.spin("student", "target_size", "Target size", name="studentTargetSize",
                             decimals=0, step=5, scale=100, suffix=" % of the teacher",
                             special="Off (the layers above decide)",
                             tip="How big the student is, as a share of the teacher's "
                                 "parameters. KD Studio picks the layers, heads, neurons and "
                                 "width to match. Off: the layers above (and By hand) decide.")
        form.addRow("Target size:", self.target)
        self.shape = b.combo("student", "shape", "How to cut", SHAPE_TEXT, name="studentShape",
                             tip="Fewer layers keeps the teacher's width; narrower layers keep "
                                 "every layer with fewer heads, neurons and channels; both "
                                 "does some of each.")
        form.addRow("How to cut:", self.shape)

        self.hand_button = QToolButton()
        self.hand_button.setObjectName("sizeByHandButton")
        self.hand_button.setText("By hand")
        self.hand_button.setAccessibleName("Choose the student's sizes by hand")
        self.hand_button.setCheckable(True)
        self.hand_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.hand_button.setArrowType(Qt.ArrowType.RightArrow)
        self.hand_button.setAutoRaise(True)
        self.hand_button.toggled.connect(self._fold)
        form.addRow(self.hand_button)
        self.hand = QWidget()
        self.hand.setObjectName("sizeByHand")
        hand = QFormLayout(self.hand)
        hand.setContentsMargins(16, 0, 0, 0)
        hand.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.heads = b.spin("student", "attention_heads", "Attention heads per layer",
                            name="studentHeads", special="The teacher's")
        hand.addRow("Attention heads:", self.heads)
        self.inter = b.spin("student", "intermediate_size", "MLP neurons per layer",
                            name="studentMlpWidth", step=64, special="The teacher's")
        hand.addRow("MLP neurons:", self.inter)
        self.vocab = b.combo("student", "vocabulary", "Vocabulary", VOCAB_TEXT,
                             name="studentVocabulary")
        hand.addRow("Vocabulary:", self.vocab)
        self.choice = b.combo("student", "layer_choice", "Which layers to keep", CHOICE_TEXT,
                              name="studentLayerChoice")
        hand.addRow("Which layers:", self.choice)
        form.addRow(self.hand)
        self.hand.hide()

        self.message = QLabel()
        self.message.setObjectName("sizeMessage")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #d0342c;")
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.message)
        self.figures = QLabel()
        self.figures.setObjectName("sizeFigures")
        self.figures.setWordWrap(True)
        self.figures.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.figures)

        ctx.config_replaced.connect(self.refresh)
        ctx.config_changed.connect(lambda section: section in ("student", "task")
                                   and self.refresh())
        ctx.teacher_info.connect(lambda _info: self.refresh())
        self.refresh()

    def _fold(self, open_: bool) -> None:
        self.hand.setVisible(open_)
        self.hand_button.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)

    def busy(self) -> bool:
        return self._job.busy()

    # -- showing -----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Show the config's size fields, check them against the teacher, count the student."""
        s = self.ctx.config.student
        self.setVisible(not s.name)
        self.binder.refresh()
        self._job.forget()
        self.estimate = None
        target = bool(s.target_size)
        for w in (self.heads, self.inter):
            w.setEnabled(not target)  # the planner picks them for a target size
        self.shape.setEnabled(target)
        if s.name:
            return
        insp = self.teacher()
        if insp is None:
            self._say("", "Load the teacher to see the student's size.")
            return
        from kdstudio.core.errors import ConfigError
        from kdstudio.core.pruning import check_student_fields, dims_of, family_of

        config = insp.config
        if family_of(config) is None:
            self._say("", "KD Studio cannot cut this teacher's family narrower; only whole layers "
                          "can be dropped, with the layer picker above.")
            for w in self.binder.controls.values():
                w.setEnabled(False)
            return
        for w in (self.target, self.vocab, self.choice):
            w.setEnabled(True)
        d = dims_of(config)
        if self._dims != (d.heads, d.inter):
            self._dims = (d.heads, d.inter)
            self.heads.setSpecialValueText(f"The teacher's ({d.heads})")
            self.inter.setSpecialValueText(f"The teacher's ({d.inter})")
        try:
            check_student_fields(s, config)
        except ConfigError as exc:
            self._say(in_app_words(str(exc)), "")
            return
        self._say("", "Working out the student's size...")
        student, task = copy.deepcopy(s), insp.info["task"]

        def job() -> dict[str, Any]:
            from kdstudio.core.plan.pruned import pruned_estimate

            return pruned_estimate(student, config, task)

        self._job.submit(job, self._show, lambda exc: self._say(in_app_words(str(exc)), ""))

    def _say(self, message: str, figures: str) -> None:
        self.message.setText(message)
        self.message.setVisible(bool(message))
        self.figures.setText(figures)
        self.figures.setVisible(bool(figures))

    def _show(self, est: dict[str, Any]) -> None:
        self.estimate = est
        insp = self.teacher()
        n_teacher = insp.info["layers"] if insp is not None else len(est["layers"])
        kept = ", ".join(map(str, est["layers"]))
        line = (f"<b>{fmt_count(est['parameters'])} parameters</b> "
                f"({est['share_of_teacher']:.0%} of the teacher) \u00b7 "
                f"{fmt_mb(est['weights_mb'])} on disk \u00b7 "
                f"{speedup_text(est['speedup'], est.get('speedup_how', ESTIMATE_HOW))}<br>"
                f"Shape: {len(est['layers'])} of {n_teacher} layers ({kept}), "
                f"{est['heads']} heads, width {est['hidden_size']}, "
                f"{est['intermediate_size']:,} MLP neurons, "
                f"{est['vocab_size']:,} tokens")
        if self.ctx.config.student.vocabulary == "data":
            line += " (before the cut to the data's tokens)"
        if est.get("note"):
            line += f"<br><span style='color: #555555'>{est['note']}</span>"
        self._say("", line)
