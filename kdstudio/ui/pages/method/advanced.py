"""The Method page's advanced settings, folded away: every weight, the loss details, the teacher.

Each control is tied to one config field by the page's Binder (widgets/binding.py): it
shows the field, writes it and carries the field's help text as its tooltip. Rows the task cannot
use are hidden; rows the current choices do not use are disabled.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.tasks import get_task
from kdstudio.core.terms import modules as term_modules
from kdstudio.ui.dialogs import show_error
from kdstudio.ui.pages.method.text import (
    BALANCE_TEXT,
    CACHE_TEXT,
    DTYPE_TEXT,
    HIDDEN_LOSS_TEXT,
    PLUGIN_WORDS,
    PREPARE_TEXT,
    format_pairs,
    parse_pairs,
    weight_labels,
    weights_trade,
)
from kdstudio.ui.widgets.binding import Binder, field_help
from kdstudio.ui.widgets.common import fit_placeholder, keep_lines

# (section, key) -> (label, minimum, maximum, step, decimals); bounds within the field's own
SPINS = {
    ("method", "logit_weight"): ("Teacher's probabilities", 0.0, 100.0, 0.1, 3),
    ("method", "hard_label_weight"): ("True labels", 0.0, 100.0, 0.1, 3),
    ("method", "hidden_weight"): ("Hidden layers", 0.0, 100.0, 0.1, 3),
    ("method", "embedding_weight"): ("Sentence embeddings", 0.0, 100.0, 0.1, 3),
    ("method", "beta"): ("Jensen-Shannon: lean toward reverse KL", 0.0, 1.0, 0.05, 2),
    ("method", "alpha"): ("Skew KL: share of the other model mixed in", 0.0, 1.0, 0.05, 2),
    ("teacher", "cache_k"): ("Teacher's answers kept per word (top-k, 0 = automatic)", 0.0,
                             65536.0, 64.0, 0),
    ("teacher", "prepare_epochs"): ("Fine-tuning epochs", 0.01, 100.0, 0.5, 2),
    ("teacher", "prepare_learning_rate"): ("Fine-tuning learning rate", 0.0, 1.0, 1e-5, 6),
}
# (section, key) -> (label, the words for each of the field's choices)
COMBOS = {
    ("method", "hidden_loss"): ("Compare hidden layers by", HIDDEN_LOSS_TEXT),
    ("method", "balance"): ("Balance the losses", BALANCE_TEXT),
    ("teacher", "dtype"): ("Teacher precision", DTYPE_TEXT),
    ("teacher", "cache"): ("Teacher cache", CACHE_TEXT),
    ("teacher", "prepare"): ("Fine-tune the teacher first", PREPARE_TEXT),
}


def _plugin_label(term: Any, name: str) -> str:
    """Words for a plug-in term's setting: its weight is named after the term, the others
    after the field with the term's prefix dropped (similarity_loss under "similarity" is
    "Loss")."""
    if term is not None and name == term.weight_key:
        return term.label[:1].upper() + term.label[1:]
    if name in PLUGIN_WORDS:
        return PLUGIN_WORDS[name][0]
    words = name.replace("_", " ")
    if term is not None and words.startswith(term.name + " "):
        words = words[len(term.name) + 1:]
    return words[:1].upper() + words[1:]


def plugin_control(binder: Binder, name: str, tp: type, rules: dict, label: str) -> QWidget:
    """A bound control for one plug-in setting, chosen from its type and rules: a combo box for
    choices, a check box for a switch, a spin box for a number (within min/max)."""
    if rules.get("choices"):
        return binder.combo("method", name, label, PLUGIN_WORDS.get(name, ("", {}))[1])
    if tp is bool:
        return binder.check("method", name, label)
    if tp is int:
        return binder.spin("method", name, label, lo=0, hi=1_000_000)
    return binder.spin("method", name, label, decimals=4, hi=100.0,
                       step=0.05 if (rules.get("max") or 100.0) <= 1.0 else 0.1)


class AdvancedSettings(QWidget):
    """A fold-out button and the three groups of advanced controls under it."""

    def __init__(self, ctx: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.setObjectName("methodAdvanced")
        self.binder = Binder(ctx)
        self.rows: dict[tuple[str, str], tuple[QFormLayout, QWidget]] = {}
        self.row_labels: dict[tuple[str, str], QLabel] = {}
        self._pairs_seen = ""

        self.toggle = QToolButton()
        self.toggle.setObjectName("methodAdvancedToggle")
        self.toggle.setAccessibleName("Show advanced settings")
        self.toggle.setText("Advanced settings: every weight, loss details, the teacher")
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self.toggle.toggled.connect(self.set_open)

        self.body = QWidget()
        self.body.setObjectName("methodAdvancedBody")
        weights = QGroupBox("Loss weights: how much each lesson counts")
        weights.setObjectName("methodWeightsGroup")
        wform = self._form(weights, ["logit_weight", "hard_label_weight", "hidden_weight",
                                     "embedding_weight", "balance"], "method")
        self.trade = QLabel(weights_trade(ctx.config.task))
        keep_lines(self.trade)
        self.trade.setObjectName("methodWeightsNote")
        wform.addRow(self.trade)
        details = QGroupBox("Loss details")
        details.setObjectName("methodDetailsGroup")
        dform = self._form(details, ["beta", "alpha", "hidden_loss"], "method")
        self.pairs = QLineEdit()
        self.pairs.setObjectName("method_layer_pairs")
        self.pairs.setAccessibleName("Hidden layer pairs")
        self.pairs.setMinimumWidth(260)
        fit_placeholder(self.pairs, "automatic (each student layer to its teacher layer)")
        self.pairs.setToolTip(field_help("method", "layer_pairs") + " Type pairs as student:teacher, "
                              "separated by commas, e.g. 1:2, 2:4, 3:6.")
        self.pairs.editingFinished.connect(self._pairs_edited)
        self._add_row(dform, ("method", "layer_pairs"), "Hidden layer pairs", self.pairs)
        teacher = QGroupBox("Teacher")
        teacher.setObjectName("methodTeacherGroup")
        self._form(teacher, ["dtype", "cache", "cache_k", "prepare", "prepare_epochs",
                             "prepare_learning_rate"], "teacher")
        self.plugins = self._plugin_group()

        right = QVBoxLayout()
        right.addWidget(details)
        right.addWidget(teacher)
        right.addStretch(1)
        left = QVBoxLayout()
        left.addWidget(weights)
        if self.plugins is not None:
            left.addWidget(self.plugins)
        left.addStretch(1)
        cols = QHBoxLayout(self.body)
        cols.setContentsMargins(0, 0, 0, 0)
        cols.addLayout(left, 1)
        cols.addLayout(right, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignLeft)
        lay.addWidget(self.body)
        self.set_open(False)

    @property
    def controls(self) -> dict[tuple[str, str], QWidget]:
        """Each field's control."""
        return self.binder.controls

    # -- construction ----------------------------------------------------------------------
    def _form(self, box: QGroupBox, keys: list[str], section: str,
              form: QFormLayout | None = None) -> QFormLayout:
        if form is None:
            form = QFormLayout(box)
            form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        for key in keys:
            field = (section, key)
            if field in SPINS:
                label, lo, hi, step, decimals = SPINS[field]
                w: QWidget = self.binder.spin(section, key, label, lo=lo, hi=hi, step=step,
                                              decimals=decimals)
            else:
                label, texts = COMBOS[field]
                w = self.binder.combo(section, key, label, texts)
            self._add_row(form, field, label, w)
        return form

    def _plugin_group(self) -> QGroupBox | None:
        """Controls for the settings of the loss terms in core/terms, built from their FIELDS:
        a new method module shows up here without any change to the app."""
        self.plugin_terms: dict[tuple[str, str], Any] = {}
        found = [(term, fields) for term, fields in term_modules() if fields]
        if not found:
            return None
        box = QGroupBox("More methods")
        box.setObjectName("methodPluginGroup")
        form = QFormLayout(box)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        for term, fields in found:
            for name, tp, _default, _help, rules in fields:
                field = ("method", name)
                w = plugin_control(self.binder, name, tp, rules, _plugin_label(term, name))
                self.plugin_terms[field] = term
                self._add_row(form, field, _plugin_label(term, name), w)
        return box

    def _add_row(self, form: QFormLayout, field: tuple[str, str], label: str, w: QWidget) -> None:
        name = QLabel(label + ":")
        name.setToolTip(field_help(*field))
        form.addRow(name, w)
        self.rows[field] = (form, w)
        self.row_labels[field] = name

    def set_open(self, open_: bool) -> None:
        self.toggle.blockSignals(True)
        self.toggle.setChecked(open_)
        self.toggle.blockSignals(False)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        self.body.setVisible(open_)

    # -- showing and writing ---------------------------------------------------------------
    def refresh(self) -> None:
        """Show the config's values; hide what the task cannot use, disable what is unused."""
        cfg = self.ctx.config
        self.binder.refresh()
        if not self.pairs.hasFocus():
            self.pairs.setText(format_pairs(cfg.method.layer_pairs))
            self._pairs_seen = self.pairs.text()
        task = get_task(cfg.task)
        self.trade.setText(weights_trade(task))
        for key, words in weight_labels(task).items():  # the task's own answers, in words
            self.row_labels[("method", key)].setText(words + ":")
            self.controls[("method", key)].setAccessibleName(words)
        visible = {f: task.shows_setting(*f) for f in self.rows}
        for field, term in self.plugin_terms.items():
            visible[field] = term is None or term.applies_to(task)
        if self.plugins is not None:
            self.plugins.setVisible(any(visible[f] for f in self.plugin_terms))
        for field, (form, w) in self.rows.items():
            form.setRowVisible(w, visible.get(field, True))
        m = cfg.method
        self.controls[("method", "beta")].setEnabled(m.logit_loss == "jsd")
        skew = m.logit_loss in ("skew_kl", "skew_reverse_kl")
        self.controls[("method", "alpha")].setEnabled(skew)
        self.controls[("method", "hidden_loss")].setEnabled(m.hidden_weight > 0)
        self.pairs.setEnabled(m.hidden_weight > 0)
        for field, term in self.plugin_terms.items():
            # A term's other settings matter only while its weight is on.
            if term is not None and field[1] != term.weight_key:
                self.controls[field].setEnabled(term.weight(m) > 0)
        self.controls[("teacher", "cache_k")].setEnabled(cfg.teacher.cache != "never")
        prepares = cfg.teacher.prepare != "never"
        self.controls[("teacher", "prepare_epochs")].setEnabled(prepares)
        self.controls[("teacher", "prepare_learning_rate")].setEnabled(prepares)

    def _pairs_edited(self) -> None:
        text = self.pairs.text()
        if text == self._pairs_seen:  # Enter and then leaving the field both finish editing
            return
        self._pairs_seen = text
        try:
            pairs = parse_pairs(text)
        except ValueError as exc:
            show_error(self, "Layer pairs not understood",
                       f"'{exc}' is not a pair of layer numbers. Write each pair as "
                       "student:teacher, separated by commas, for example 1:2, 2:4, 3:6 "
                       "(0 is the embeddings, 1 the first layer). Leave it empty to pair the "
                       "layers automatically.")
            return
        self.ctx.set_value("method", "layer_pairs", pairs)
