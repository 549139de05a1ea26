"""The app's one glossary: each technical term has one plain sentence, shown on hover.

``TERMS`` holds the sentences; ``terms_in(text)`` finds the terms a text uses. ``watch(stack)``
keeps a page stack's widgets explained: each time a page is shown its labels, buttons, group
titles, combo items, table headers and chart axes get the sentences of the terms they show,
after their own tooltip; a widget hovered later (its text changed, or it is new) is explained
at that moment. ``attach(widget)`` does the same for one widget tree (a dialog).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QComboBox,
    QGroupBox,
    QLabel,
    QTableWidget,
    QTabWidget,
    QToolTip,
    QWidget,
)


@dataclass(frozen=True)
class Term:
    name: str
    sentence: str
    pattern: re.Pattern


def _t(name: str, sentence: str, pattern: str, *, case: bool = False) -> Term:
    return Term(name, sentence, re.compile(pattern, 0 if case else re.IGNORECASE))


# One plain sentence per term. They carry the product's points: what distilling is, why a
# student is cheaper, what the student learns from, and what it costs.
TERMS: tuple[Term, ...] = (
    _t("Distillation", "A big teacher model's knowledge is concentrated into a small student "
       "model, which is trained to imitate the teacher's answers; it is cheaper than training "
       "the small model from scratch.", r"\bdistil"),
    _t("Logits", "A model's raw scores for every possible answer, before they are turned into "
       "probabilities; the student learns from how likely the teacher finds every answer, not "
       "only the right one.", r"\blogits?\b"),
    _t("Temperature", "Softens the probabilities: above 1 the unlikely answers count for more, "
       "so the student sees more of what the teacher thinks; 0 when writing text always picks "
       "the likeliest word.", r"\btemperatures?\b"),
    _t("KL", "KL divergence: how far the student's probabilities are from the teacher's; 0 "
       "means they are the same.", r"\bKL\b|Kullback", case=True),
    _t("Jensen-Shannon", "A measure of the difference between two sets of probabilities that "
       "lies between forward and reverse KL and treats both models alike.",
       r"Jensen-Shannon|\bjsd\b"),
    _t("Skew", "Skew KL compares the student with a mix of its own and the teacher's "
       "probabilities, which keeps the first training steps steady.", r"\bskew"),
    _t("Top-k", "Only the k answers the teacher finds most likely are kept; the rest are too "
       "unlikely to matter, and keeping them would cost memory and disk.", r"\btop-k\b"),
    _t("Top-p", "When writing text, words are drawn only from the likeliest ones whose "
       "probabilities add up to p; lower values write more predictably.", r"\btop-p\b"),
    _t("Quantization", "Storing a model's weights as small whole numbers instead of full "
       "decimals: the file gets about four times smaller and often faster, at a small cost "
       "in quality.", r"\bquanti[sz]"),
    _t("int8", "Numbers stored in 8 bits (a quarter of the usual 32): a quantized model, "
       "smaller and usually a little less accurate.", r"\bint8\b"),
    _t("Precision", "How many bits each number of the model uses: full precision (32) is "
       "exact, half precision (16) halves the memory with hardly any loss.",
       r"\b(b?float(16|32)|fp(16|32)|bf16)\b|\bprecision\b"),
    _t("ONNX", "A standard file format for models: many programs, phones and devices run it "
       "without Python or PyTorch.", r"\bONNX\b", case=True),
    _t("PyTorch", "The library KD Studio trains with; a PyTorch folder is what Hugging Face "
       "transformers loads again.", r"\bPyTorch\b", case=True),
    _t("Perplexity", "How surprised a language model is by real text: lower is better, and 1 "
       "would mean it always guessed the next word.", r"\bperplexity"),
    _t("Cosine similarity", "How alike two sentence vectors are in direction: 1 means the same "
       "meaning, below about 0.5 the sentences are unrelated.", r"\bcosines?\b"),
    _t("Neighbour agreement", "How often the student finds the same closest sentence as the "
       "teacher does.", r"\bneighbou?r agreement\b"),
    _t("Mean squared error", "The average of the squared differences between two lists of "
       "numbers; 0 means they are equal.", r"\bMSE\b|\bmean squared error\b"),
    _t("On-policy", "The student writes its own texts and the teacher scores every word, so "
       "the student learns from its own mistakes.", r"\bon-policy\b"),
    _t("Sequence-level", "The teacher first writes texts of its own, and the student learns "
       "from those instead of the originals.", r"\bsequence-level\b"),
    _t("Cross-tokenizer", "Distillation between models that split text into different "
       "pieces, by comparing how sure each one is rather than word by word.",
       r"\bcross-tokenizer\b"),
    _t("Teacher cache", "The teacher's answers worked out once, saved on disk and reused, so "
       "the teacher need not run at every training step.",
       r"\bteacher(-logit)? caches?\b|\bcache\b"),
    _t("Hidden layers", "The model's in-between stages; intermediate-layer distillation pulls "
       "the student's toward the teacher's, so it learns how the teacher works an answer "
       "out.", r"\bhidden (layers?|states?|size)\b|\bintermediate-layer\b"),
    _t("Sentence embedding", "A list of numbers that stands for a sentence's meaning: "
       "sentences that mean the same get similar lists, which is what search uses.",
       r"\bembeddings?\b|\bsentence vectors?\b"),
    _t("Tokens", "The pieces, words or parts of words, a model splits text into.",
       r"\btokens?\b|\btokeni[sz]ers?\b"),
    _t("Vocabulary", "Every token a model knows; its first layer and output hold one row "
       "per token, so a large vocabulary costs size.", r"\bvocabular(y|ies)\b"),
    _t("Parameters", "The numbers a model learns; more parameters mean a bigger, slower, "
       "usually more capable model.", r"\bparameters?\b"),
    _t("Attention heads", "The parts of a layer that each look at how the words of a text "
       "relate; fewer heads make a narrower, faster layer.",
       r"\b(attention|relation) heads?\b|\bheads per layer\b"),
    _t("MLP neurons", "The units of a layer's inner network (its MLP), where most of its "
       "parameters sit; fewer make a narrower, faster layer.", r"\bMLP\b", case=True),
    _t("Width", "How many numbers each layer passes on for every token (the hidden size); "
       "a narrower student is smaller and faster.", r"\bwidth\b|\bnarrower\b"),
    _t("True labels", "The right answers written in the data (the real class, tag or next "
       "word), the ordinary lesson without a teacher.",
       r"\b(true|real) (labels|tags|next words?)\b"),
    _t("Fine-tune", "Train an existing model a little more on your own data, so it learns "
       "your task.", r"\bfine-tun"),
    _t("Learning rate", "How big a step each training update takes: too high and training "
       "jumps about, too low and it crawls.", r"\blearning rate\b"),
    _t("Epoch", "One pass over all the training data.", r"\bepochs?\b"),
    _t("Batch", "The examples the model looks at together in one training step; bigger "
       "batches need more memory.", r"\bbatch( size)?\b|\bbatches\b"),
    _t("Gradient accumulation", "Adding up several small batches before one update, so a big "
       "batch fits in little memory; slower, but the same result.",
       r"\b(gradient )?accumulation\b"),
    _t("Warm-up", "The first training steps, where the learning rate grows from 0 so the "
       "start is gentle.", r"\bwarm-?up\b"),
    _t("Weight decay", "A gentle pull of every weight towards 0, which keeps a model from "
       "learning its training data by heart.", r"\bweight decay\b"),
    _t("Clipping gradients", "A limit on how big one update can be, so a single odd batch "
       "cannot throw training off.", r"\bclip\b.*\bgradients?\b|\bgradient clipping\b"),
    _t("Checkpoint", "A saved copy of the student during training, which a stopped run "
       "resumes from.", r"\bcheckpoints?\b"),
    _t("Latency", "How long the model takes to answer one input: lower is faster.",
       r"\blatency\b"),
    _t("Quality retained", "The student's score as a share of the teacher's on the evaluation "
       "texts: 100% means as good as the teacher.", r"\bquality retained\b"),
    _t("Speed-up", "How many times faster the student answers than the teacher.",
       r"\bspeed-?up\b|\d(\.\d)?x faster\b"),
    _t("F1", "A score from 0 to 100% that balances finding every right answer with giving no "
       "wrong ones.", r"\bF1\b", case=True),
    _t("Spearman", "How alike the two models' similarity rankings are: 1 means the same "
       "order.", r"\bspearman\b"),
    _t("TOML", "The plain-text config file KD Studio saves a run in; the command line runs "
       "the same file.", r"\bTOML\b", case=True),
    _t("Seed", "The number that fixes every random choice, so a run can be repeated "
       "exactly.", r"\bseed\b"),
    _t("Trained head", "The last layer that turns a model's understanding into the answers "
       "of one task (your classes or tags).", r"\b(trained|task|output) head\b"),
)
BY_NAME = {t.name: t for t in TERMS}


@lru_cache(maxsize=4096)
def terms_in(text: str) -> tuple[Term, ...]:
    """The glossary terms a visible text uses (rich text read as plain words)."""
    plain = html.unescape(re.sub(r"<[^>]+>", " ", text or ""))
    return tuple(t for t in TERMS if t.pattern.search(plain))


def sentence(name: str) -> str:
    """``name``'s line as a tooltip shows it: 'Term: sentence'."""
    t = BY_NAME[name]
    return f"{t.name}: {t.sentence}"


def explain(tip: str, text: str) -> str:
    """``tip`` followed by the lines of the terms in ``text`` that it does not hold yet."""
    lines = [sentence(t.name) for t in terms_in(text) if t.sentence not in tip]
    if not lines:
        return tip
    if tip and re.search(r"<[a-zA-Z/][^>]*>", tip):  # rich text: lines joined by <br>
        return tip + "<br><br>" + "<br>".join(html.escape(line) for line in lines)
    return "\n\n".join(p for p in (tip, "\n".join(lines)) if p)


def visible_text(w: QWidget) -> str:
    """The words a widget shows itself (labels, buttons, group titles, a combo's choice)."""
    if isinstance(w, QLabel):
        return w.text()
    if isinstance(w, QAbstractButton):
        return w.text()
    if isinstance(w, QGroupBox):
        return w.title()
    if isinstance(w, QComboBox):
        return w.currentText()
    return ""


def _own_tip(w: Any) -> str:
    """The tooltip the page gave (the glossary's lines added last time taken off)."""
    tip, added = w.toolTip(), w.property("glossaryTip")
    return (w.property("glossaryBase") or "") if added and tip == added else tip


def _set(w: Any, text: str) -> None:
    base = _own_tip(w)
    tip = explain(base, text)
    if tip != w.toolTip():
        w.setToolTip(tip)
    if tip != base:
        w.setProperty("glossaryBase", base)
        w.setProperty("glossaryTip", tip)


def _explain_widget(w: QWidget) -> None:
    text = visible_text(w)
    if text:
        _set(w, text)
    if isinstance(w, QComboBox):
        for i in range(w.count()):
            item = w.itemText(i)
            if terms_in(item):
                tip = w.itemData(i, Qt.ItemDataRole.ToolTipRole) or ""
                w.setItemData(i, explain(str(tip), item), Qt.ItemDataRole.ToolTipRole)
    elif isinstance(w, QTableWidget):
        for i in range(w.columnCount()):
            item = w.horizontalHeaderItem(i)
            if item is not None and terms_in(item.text()):
                item.setToolTip(explain(item.toolTip(), item.text()))
    elif isinstance(w, QTabWidget):
        for i in range(w.count()):
            if terms_in(w.tabText(i)):
                w.setTabToolTip(i, explain(w.tabToolTip(i), w.tabText(i)))


def _explain_plot(plot: Any) -> None:
    item = plot.getPlotItem()
    for side in ("left", "bottom", "right"):
        axis = item.getAxis(side) if side in item.axes else None
        if axis is not None and axis.isVisible():
            _set(axis, axis.labelText or "")
    title = item.titleLabel
    _set(title, title.text or "")


class _Hover(QObject):
    """At a tooltip event, explains the widget under the mouse with its text of that moment."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() != QEvent.Type.ToolTip or not isinstance(obj, QWidget):
            return False
        target = obj
        if obj.property("glossaryRoot"):  # a child without a tooltip passed the event up
            child = obj.childAt(event.pos())
            if child is None:
                return False
            target = child
        _explain_widget(target)
        if target is obj or not target.toolTip():
            return False
        QToolTip.showText(event.globalPos(), target.toolTip(), target)
        return True


_HOVER: _Hover | None = None


def _hover() -> _Hover:
    global _HOVER
    if _HOVER is None:
        _HOVER = _Hover(QApplication.instance())
    return _HOVER


def attach(root: QWidget) -> None:
    """Explain every term ``root``'s widgets show now, and again whenever one is hovered."""
    import sys

    hover = _hover()
    if not root.property("glossaryRoot"):
        root.setProperty("glossaryRoot", True)
        root.installEventFilter(hover)
    for w in root.findChildren(QWidget):
        _explain_widget(w)
        if visible_text(w) and not w.property("glossaryWatched"):
            w.setProperty("glossaryWatched", True)
            w.installEventFilter(hover)
    if "pyqtgraph" in sys.modules:  # charts exist only once pyqtgraph is loaded
        import pyqtgraph as pg

        for plot in root.findChildren(pg.PlotWidget):
            _explain_plot(plot)


def watch(stack: Any) -> None:
    """Explain each page of a QStackedWidget when it is shown (and the current one now)."""
    stack.currentChanged.connect(lambda i: stack.widget(i) is not None and attach(stack.widget(i)))
    if stack.currentWidget() is not None:
        attach(stack.currentWidget())
