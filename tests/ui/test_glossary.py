"""The one glossary: every technical term a page shows is explained on hover."""

import pytest
from PySide6.QtCore import QEvent
from PySide6.QtGui import QHelpEvent
from PySide6.QtWidgets import QApplication, QComboBox, QLabel, QTableWidget, QWidget

from kdstudio.core.config import default_config
from kdstudio.ui import glossary
from kdstudio.ui.glossary import TERMS, sentence, terms_in, visible_text
from kdstudio.ui.main_window import PAGE_KEYS
from tests.ui.conftest import open_window

TASKS = ("causal-lm", "sequence-classification", "sentence-embedding", "token-classification")


def hover(w: QWidget) -> str:
    """The tooltip a widget shows when the mouse rests on it."""
    pos = w.rect().center()
    QApplication.sendEvent(w, QHelpEvent(QEvent.Type.ToolTip, pos, w.mapToGlobal(pos)))
    return w.toolTip()


def test_every_term_has_one_plain_sentence():
    names = [t.name for t in TERMS]
    assert len(names) == len(set(names))
    for term in TERMS:
        assert term.sentence.endswith(".") and len(term.sentence) < 260
        assert term.pattern.search(term.name) or term.name == "Clipping gradients"
    assert [t.name for t in terms_in("Skew KL at temperature 2, top-k 20")] == \
        ["Temperature", "KL", "Skew", "Top-k"]
    assert terms_in("<b>Cosine</b> similarity") == (glossary.BY_NAME["Cosine similarity"],)
    assert terms_in("A student that keeps the teacher's quality") == ()


def test_a_tooltip_keeps_its_own_words_and_adds_each_line_once():
    tip = glossary.explain("How the loss is measured.", "Forward KL at temperature 2")
    assert tip.startswith("How the loss is measured.\n\n")
    assert sentence("KL") in tip and sentence("Temperature") in tip
    assert glossary.explain(tip, "Forward KL at temperature 2") == tip
    rich = glossary.explain("<b>Bold</b> words", "ONNX")
    assert rich.endswith("<br><br>" + sentence("ONNX"))


@pytest.mark.parametrize("task", TASKS)
def test_every_page_explains_the_terms_it_shows(qtbot, task):
    w = open_window(qtbot)
    w.resize(1280, 800)
    w.ctx.replace_config(default_config(task))
    w.pages["method"].advanced.set_open(True)
    checked = set()
    for key in PAGE_KEYS:
        w.show_page(key)
        page = w.pages[key]
        for widget in page.findChildren(QWidget):
            text = visible_text(widget)
            if not widget.isVisible() or not terms_in(text):
                continue
            tip = hover(widget)
            for term in terms_in(text):
                assert term.sentence in tip, (key, text, term.name)
                checked.add(term.name)
        for combo in page.findChildren(QComboBox):
            for i in range(combo.count()):
                for term in terms_in(combo.itemText(i)):
                    assert term.sentence in (combo.itemData(i, 3) or ""), combo.itemText(i)
        for table in page.findChildren(QTableWidget):
            for i in range(table.columnCount()):
                item = table.horizontalHeaderItem(i)
                for term in terms_in(item.text() if item else ""):
                    assert term.sentence in item.toolTip(), item.text()
    # The walk met the central terms (a walk that found nothing would pass too easily).
    assert {"Distillation", "Tokens", "Parameters"} <= checked
    if task == "causal-lm":
        assert {"Temperature", "KL", "On-policy", "Top-p", "Skew"} <= checked
    if task == "sentence-embedding":
        assert {"Cosine similarity", "Mean squared error", "Sentence embedding"} <= checked


def test_a_label_whose_text_changes_is_explained_with_its_new_words(qtbot):
    w = open_window(qtbot, page="method")
    page = w.pages["method"]
    label = QLabel("Nothing technical here", page.findChild(QWidget, "methodWhy").parentWidget())
    label.show()
    assert "Perplexity" not in hover(label)  # new, without a tooltip: the page explains it
    label.setText("Lower perplexity is better")
    assert sentence("Perplexity") in hover(label)
    w.show_page("data")
    w.show_page("method")  # shown again: the label is watched from now on
    label.setText("Lower perplexity, fewer tokens")
    assert sentence("Tokens") in hover(label)
    label.setToolTip("The page's own words.")  # the page's tooltip stays first
    tip = hover(label)
    assert tip.startswith("The page's own words.") and sentence("Perplexity") in tip
