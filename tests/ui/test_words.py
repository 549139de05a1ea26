"""The app speaks its own words: no config syntax, no engineers' names, figures that say
what they mean. Each test would have failed before its fix."""

import re

import pytest
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget

from kdstudio.core.config import StudentConfig, default_config
from kdstudio.core.events import Finished
from kdstudio.core.tasks import all_tasks
from kdstudio.ui.pages.method.text import weight_labels, weights_trade
from kdstudio.ui.pages.train.log import describe
from tests.ui.conftest import open_window

DOTTED = re.compile(r"\b(model|method|teacher|student|data|training|evaluation|generation)\.\w+")


@pytest.fixture
def window(qtbot):
    w = open_window(qtbot)
    w.resize(1280, 800)
    return w


# -- Advanced settings -----------------------------------------------------------------------
def test_advanced_settings_use_no_greek_letters_or_raw_values(window):
    window.ctx.replace_config(default_config("causal-lm"))
    page = window.pages["method"]
    page.advanced.set_open(True)
    window.show_page("method")
    shown = [w.text() for w in page.findChildren(QLabel) if w.isVisible()]
    assert not [t for t in shown if re.search(r"\((alpha|beta|lambda)\)|\blambda\b", t)], shown
    assert page.lm.on_policy.suffix() == " % of batches"
    window.ctx.replace_config(default_config("sentence-embedding"))
    kind = page.advanced.controls[("method", "similarity_loss")]
    assert [kind.itemText(i) for i in range(kind.count())] != ["kl", "mse"]
    assert not [t for t in (page.advanced.row_labels[f].text() for f in page.advanced.rows)
                if t.rstrip(":") in ("Loss", "Skew mix (alpha)")]


def test_the_weights_note_speaks_of_the_tasks_own_answers(window):
    page = window.pages["method"]
    for task in all_tasks():
        window.ctx.replace_config(default_config(task.name))
        note = page.findChild(QLabel, "methodWeightsNote").text()
        assert note == weights_trade(task)
        assert task.answer_words in note
    emb = weights_trade("sentence-embedding")
    assert "probabilities" not in emb and "labels" not in emb and "sentence vectors" in emb
    assert "true labels" in weights_trade("sequence-classification")
    assert "real next words" in weights_trade("causal-lm")
    window.ctx.replace_config(default_config("token-classification"))
    label = page.advanced.row_labels[("method", "hard_label_weight")]
    assert label.text() == "True tags:" == weight_labels("token-classification")[
        "hard_label_weight"] + ":"


# -- Teacher caches and export ---------------------------------------------------------------
def test_cache_columns_and_export_notes_are_plain(qtbot):
    from kdstudio.core.export.onnx_export import FP16_NOTE
    from kdstudio.core.export.quantize import NOTE as INT8_NOTE
    from kdstudio.ui.glossary import sentence
    from kdstudio.ui.pages.runs.caches import TeacherCachesDialog
    from kdstudio.ui.pages.runs.export import CHOICES, plain_note

    dialog = TeacherCachesDialog()
    qtbot.addWidget(dialog)
    heads = [dialog.table.horizontalHeaderItem(i).text() for i in range(dialog.table.columnCount())]
    assert not {"Top-k", "Positions", "Bytes / position"} & set(heads)
    assert "Answers kept per word" in heads
    for note in (INT8_NOTE, FP16_NOTE):
        plain = plain_note(note)
        assert not re.search(r"quantize_dynamic|MatMul|Gather|ExecutionProvider|kernels", plain)
    assert "as today" not in " ".join(c.label for c in CHOICES)
    assert sentence("int8") in glossary_tip(plain_note(INT8_NOTE))


def glossary_tip(text):
    from kdstudio.ui.glossary import explain

    return explain("", text)


# -- The demo's own teacher ------------------------------------------------------------------
def _finish(teacher, q, task="sentence-embedding"):
    return describe(Finished(status="finished", run_dir="r",
                             summary={"task": task, "quality_retained": q, "teacher": teacher}))[0]


def test_a_built_in_teacher_just_below_its_student_is_not_called_weak():
    text = _finish("all-MiniLM-L6-v2", 1.004)
    assert "100.4% (above the teacher)" in text  # not a bare "100%" beside a note on "above"
    assert "weak teacher" not in text and "as good as the teacher" in text
    assert "weak teacher" in _finish("my-org/my-teacher", 1.004)  # one's own teacher: check it
    assert "weak teacher" in _finish("all-MiniLM-L6-v2", 1.2)  # far above: worth a look
    assert "above" not in _finish("all-MiniLM-L6-v2", 0.97)
    classifier = _finish("my-teacher", 1.2, task="sequence-classification")
    assert "plain-training baseline" in classifier and "evaluation.baseline" not in classifier


# -- Compare for sentence embeddings -----------------------------------------------------------
def test_the_nearest_sentences_say_what_the_scores_mean(qtbot):
    from kdstudio.ui.pages.compare.answer import NeighbourList

    view = NeighbourList()
    qtbot.addWidget(view)
    view.set_rows([("Snow is forecast for the hills.", 0.31), ("Cold nights ahead.", 0.27)])
    note = view.findChild(QLabel, "neighboursNote")
    assert "Nothing in the data is close in meaning" in note.text() and "0.31" in note.text()
    assert "1 = the same meaning" in note.text() and "0.5" in note.text()
    view.set_rows([("We missed our flight.", 0.82), ("The train was late.", 0.44)])
    note = view.note  # the old one is on its way out (deleteLater)
    assert "Nothing" not in note.text() and "1 = the same meaning" in note.text()
    assert [t for t, _ in view.rows()] == ["We missed our flight.", "The train was late."]


# -- The derived student's words match what it is ---------------------------------------------
def test_the_layer_count_tooltip_agrees_with_the_layers_kept():
    from kdstudio.ui.pages.models.layers import COUNT_TIP, kept_layers

    assert kept_layers(6, 1, []) == [5]  # one layer: the teacher's last
    assert "single kept layer is the teacher's last" in COUNT_TIP
    assert kept_layers(6, 3, [])[0] == 0 and kept_layers(6, 3, [])[-1] == 5


def test_the_derived_student_line_says_fewer_layers_or_narrower():
    from kdstudio.ui.pages.models.sources import derived_words

    teacher = {"hidden_size": 384, "layers": 6, "prunable": True}
    assert "fewer layers" in derived_words(StudentConfig(layers=2), teacher)
    narrow = derived_words(StudentConfig(layers=6, hidden_size=128), teacher)
    assert "narrower" in narrow and "fewer layers" not in narrow
    assert "most important channels" in narrow and "every layer kept" in narrow
    both = derived_words(StudentConfig(layers=2, hidden_size=128), teacher)
    assert "narrower layers and fewer of them" in both
    fresh = derived_words(StudentConfig(layers=2, hidden_size=128), {**teacher, "prunable": False})
    assert "random weights" in fresh and "own layers" not in fresh
    target = derived_words(StudentConfig(target_size=0.5, shape="width"), teacher)
    assert "narrower" in target and "fewer layers" not in target


# -- Messages in the app's words ---------------------------------------------------------------
def _start_and_read(window, qtbot, cfg):
    window.ctx.replace_config(cfg)
    window.start_run()
    qtbot.waitUntil(lambda: window.findChild(QMessageBox, "errorDialog") is not None, timeout=5000)
    box = window.findChild(QMessageBox, "errorDialog")
    text = box.text()
    box.close()
    box.setObjectName("seen")
    assert not window.training.is_running()
    return text


def test_invalid_configs_are_explained_with_pages_and_controls(window, qtbot):
    cfg = default_config("causal-lm")
    cfg.method.on_policy_share, cfg.method.logit_weight = 0.5, 0.0
    cfg.method.hard_label_weight = 1.0
    text = _start_and_read(window, qtbot, cfg)
    assert not DOTTED.search(text), text
    assert "(Method page)" in text and "own texts (on-policy)" in text

    cfg = default_config("sequence-classification")
    cfg.training.max_steps, cfg.training.epochs = 0, 0
    text = _start_and_read(window, qtbot, cfg)
    assert not DOTTED.search(text), text
    assert "\u201cTraining steps\u201d (Train page)" in text

    cfg = default_config("sentence-embedding")
    cfg.evaluation.baseline = True
    from kdstudio.ui.widgets.config_words import app_words

    try:
        cfg.validate()
    except Exception as exc:  # noqa: BLE001 - the engine's own message, in config syntax
        assert "evaluation.baseline" in str(exc)
        words = app_words(str(exc), window)
    assert not DOTTED.search(words) and " = " not in words and "sentence-embedding" not in words
    assert "Untick \u201cAlso train the same student without the teacher\u201d (Method page)" \
        in words


def test_the_method_pages_verdict_names_controls_not_keys(window):
    cfg = default_config("causal-lm")
    window.ctx.replace_config(cfg)
    window.ctx.set_value("method", "on_policy_share", 0.5)
    window.ctx.set_value("method", "logit_weight", 0.0)
    validity = window.pages["method"].validity.text()
    assert "\u2717" in validity or "#x2717" in validity
    assert not DOTTED.search(validity) and "Method page" in validity
    assert isinstance(window.pages["method"], QWidget)
