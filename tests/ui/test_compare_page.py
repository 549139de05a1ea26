"""The Compare page, driven on real tiny runs: outputs, table, pinned inputs, run switching."""

import json
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPlainTextEdit,
    QTextBrowser,
    QWidget,
)

from kdstudio.core import events as ev
from kdstudio.core.config import default_config
from kdstudio.core.runs import Run, list_runs
from kdstudio.core.trainer import run_training
from kdstudio.ui.context import AppContext
from kdstudio.ui.jobs import JobRunner
from kdstudio.ui.pages.compare.page import ComparePage
from kdstudio.ui.pages.compare.token_strip import percent
from kdstudio.ui.settings import Settings
from kdstudio.ui.worker import TrainingController
from tests.conftest import CORPUS, tiny_config

WAIT = 60000
PINNED = ["The weather today", "A cup of tea"]
TOPICS = sorted({json.loads(line)["topic"] for line in CORPUS.read_text(encoding="utf-8").splitlines()})


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory):
    """One run store with a real causal-lm, classification and embedding run (2 steps each)."""
    home = tmp_path_factory.mktemp("compare-store")
    mp = pytest.MonkeyPatch()
    mp.setenv("KDSTUDIO_HOME", str(home))
    try:
        runs = {}
        for task, model in (("causal-lm", "gpt2"), ("sequence-classification", "bert"),
                            ("sentence-embedding", "bert")):
            cfg = tiny_config(task, tiny[model], training={"max_steps": 2},
                              evaluation={"pinned_inputs": PINNED})
            runs[task] = str(run_training(cfg).run_dir)
    finally:
        mp.undo()
    return home, runs


@pytest.fixture
def make_page(qtbot):
    """Make a Compare page on its own context; at teardown, wait for its jobs and run."""
    pages = []

    def make(pinned=()):
        cfg = default_config("causal-lm")
        cfg.evaluation.pinned_inputs = list(pinned)
        ctx = AppContext(cfg, Settings(), JobRunner(), TrainingController())
        page = ComparePage(ctx)
        qtbot.addWidget(page)
        page.resize(1280, 820)
        pages.append(page)
        return page

    yield make
    for p in pages:
        qtbot.waitUntil(lambda: p.ctx.jobs.active() == 0 and not p.ctx.training.is_running(),
                        timeout=WAIT)


@pytest.fixture
def page(make_page, store, monkeypatch):
    monkeypatch.setenv("KDSTUDIO_HOME", str(store[0]))
    return make_page(pinned=PINNED[:1])


def button(page):
    return page.findChild(QWidget, "compareButton")


def ready(page):
    b = button(page)
    return b.isEnabled() and b.text() == "Compare" and page.ctx.jobs.active() == 0


def select(qtbot, page, run_dir):
    combo = page.findChild(QWidget, "compareRunCombo")
    combo.setCurrentIndex(combo.findData(run_dir))
    assert page.current_run() == run_dir
    qtbot.waitUntil(lambda: ready(page), timeout=WAIT)


def compare(qtbot, page, text):
    box = page.findChild(QWidget, "compareInput")
    box.clear()
    qtbot.keyClicks(box, text)
    qtbot.mouseClick(button(page), Qt.MouseButton.LeftButton)


@pytest.mark.slow
def test_causal_lm_side_by_side(qtbot, page, store):
    page.show()
    assert page.current_run() == str(list_runs()[0].path)  # the newest run by default
    select(qtbot, page, store[1]["causal-lm"])
    assert page.findChild(QWidget, "genMaxNewTokens").isVisible()
    page.findChild(QWidget, "genMaxNewTokens").setValue(6)
    submitted = []
    real_submit = page.ctx.jobs.submit
    page.ctx.jobs.submit = lambda *a, **k: submitted.append(a) or real_submit(*a, **k)
    compare(qtbot, page, "The weather")
    assert not button(page).isEnabled() and button(page).text() == "Comparing..."
    qtbot.mouseClick(button(page), Qt.MouseButton.LeftButton)  # busy: a second press does nothing
    assert len(submitted) == 1
    teacher, student = (page.findChild(QTextBrowser, f"{r}Text") for r in ("teacher", "student"))
    figures = [page.findChild(QWidget, f"{r}Figures") for r in ("teacher", "student")]
    qtbot.waitUntil(lambda: ready(page) and all("tokens/s" in f.text() for f in figures), timeout=WAIT)
    for text in (teacher, student):
        assert text.isVisible() and text.toPlainText().startswith("The weather")
    for f in figures:
        assert "Latency" in f.text() and " ms" in f.text()
    assert page.findChild(QWidget, "compareVerdict").text().startswith("On this input the student")

    if sys.platform.startswith("linux"):  # the process's peak memory, labelled as such
        for f in figures:
            assert "process peak memory" in f.text() and " MB" in f.text()
            assert "whole KD Studio process" in f.toolTip()

    # The per-token view of the prompt and the teacher's continuation.
    panel = page.findChild(QWidget, "tokenPanel")
    strip = page.findChild(QWidget, "tokenStrip")
    qtbot.waitUntil(lambda: strip.isVisible() and bool(strip.tokens()), timeout=WAIT)
    assert panel.isVisible() and strip.accessibleName()
    tokens = strip.tokens()
    continuation = teacher.toPlainText()[len("The weather"):]
    assert "".join(t.text for t in tokens) == "The weather" + continuation
    assert tokens[0].in_prompt and all(0 <= t.p_student <= 1 for t in tokens)
    top = page.findChild(QListWidget, "tokenTopList")
    worst = max(range(len(tokens)), key=lambda i: tokens[i].kl)
    assert top.count() >= 1 and top.item(0).data(Qt.ItemDataRole.UserRole) == worst
    assert strip.cell_colour(worst) != strip.palette().color(QPalette.ColorRole.Base)  # coloured
    top.setCurrentRow(0)  # choosing a disagreement marks it in the text and gives its figures
    assert strip.current() == worst
    detail = page.findChild(QWidget, "tokenDetail").text()
    assert f"teacher {percent(tokens[worst].p_teacher)}" in detail and "student" in detail
    assert "nats" in page.findChild(QWidget, "tokenStatus").text()
    strip.setFocus()
    qtbot.keyClick(strip, Qt.Key.Key_Home)
    assert strip.current() == 0

    summary = Run(Path(store[1]["causal-lm"])).summary()
    table = page.table
    assert not table.has_baseline()  # this run trained no plain-training baseline
    assert table.cell("parameters", 0) == f"{summary['teacher_params']:,}"
    assert table.cell("parameters", 1).startswith(f"{summary['student_params']:,} (")
    assert table.cell("size_mb", 1).startswith(f"{summary['student_size_mb']:.2f} MB (")
    # the speed-up with its p10-p90 spread, from the two models timed in turns; the tests' runs
    # time 2 rounds, too few for a spread, and the cell says so
    rounds = summary["speedup_rounds"]
    spread = (r" \([\d.]+\u2013[\d.]+x\)" if rounds >= 5
              else rf" \({rounds} rounds?, no spread\)")
    assert re.fullmatch(r"[\d.]+x (faster|slower)" + spread,
                        table.cell("speedup", 1)), table.cell("speedup", 1)
    assert table.cell("quality_retained", 1).endswith("%")
    assert "Perplexity" in page.findChild(QWidget, "compareFiguresNote").text()


@pytest.mark.slow
def test_classification_shows_all_class_probabilities(qtbot, page, store):
    page.show()
    select(qtbot, page, store[1]["sequence-classification"])
    assert not page.findChild(QWidget, "genMaxNewTokens").isVisible()
    bars = [page.findChild(QWidget, f"{r}Probabilities") for r in ("teacher", "student")]
    compare(qtbot, page, "The striker scored twice in the second half.")
    qtbot.waitUntil(lambda: ready(page) and all(b.rows() for b in bars), timeout=WAIT)
    for b in bars:
        rows = b.rows()
        probs = [p for _, p in rows]
        assert sorted(n for n, _ in rows) == TOPICS
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-3
        assert b.isVisible() and rows[0][0] in b.accessibleDescription()
    assert "Latency" in page.findChild(QWidget, "studentFigures").text()


@pytest.mark.slow
def test_embedding_shows_neighbours_with_cosines(qtbot, page, store):
    page.show()
    select(qtbot, page, store[1]["sentence-embedding"])
    example = page.findChild(QWidget, "compareExample1")
    qtbot.mouseClick(example, Qt.MouseButton.LeftButton)  # an example fills the box and compares
    assert page.findChild(QWidget, "compareInput").toPlainText() == example.toolTip()
    lists = [page.findChild(QWidget, f"{r}Neighbours") for r in ("teacher", "student")]
    qtbot.waitUntil(lambda: ready(page) and all(n.rows() for n in lists), timeout=WAIT)
    corpus = CORPUS.read_text(encoding="utf-8")
    for n in lists:
        rows = n.rows()
        cos = [c for _, c in rows]
        assert len(rows) == 3 and cos == sorted(cos, reverse=True)
        assert all(-1.0001 <= c <= 1.0001 for c in cos)
        assert all(json.dumps(t)[1:-1] in corpus for t, _ in rows)
        assert f"{cos[0]:.3f}" in n.accessibleDescription() and n.isVisible()


@pytest.mark.slow
def test_empty_input_gives_a_dialog_and_no_job(qtbot, page, store):
    page.show()
    qtbot.waitUntil(lambda: ready(page), timeout=WAIT)
    submitted = []
    page.ctx.jobs.submit = lambda *a, **k: submitted.append(a)
    compare(qtbot, page, "   ")
    qtbot.waitUntil(lambda: page.findChild(QMessageBox, "errorDialog") is not None)
    box = page.findChild(QMessageBox, "errorDialog")
    assert box.windowTitle() == "Nothing to compare" and "Type a sentence" in box.text()
    assert submitted == [] and button(page).isEnabled()
    box.close()


def test_engine_error_gives_a_dialog_and_the_page_keeps_working(qtbot, make_page, store, tmp_path,
                                                                  monkeypatch):
    home = tmp_path / "broken"
    shutil.copytree(store[1]["causal-lm"], home / "runs" / Path(store[1]["causal-lm"]).name)
    monkeypatch.setenv("KDSTUDIO_HOME", str(home))
    (list_runs()[0].path / "student" / "model.safetensors").write_bytes(b"not weights")
    page = make_page()
    page.show()  # loading the run's models starts here, and fails
    qtbot.waitUntil(lambda: page.findChild(QMessageBox, "errorDialog") is not None, timeout=WAIT)
    box = page.findChild(QMessageBox, "errorDialog")
    assert box.windowTitle() == "Model could not be loaded" and "could not be loaded" in box.text()
    qtbot.waitUntil(lambda: ready(page), timeout=WAIT)
    assert "did not complete" in page.findChild(QWidget, "compareStatus").text()
    box.close()


def test_pinned_inputs_follow_the_run_and_are_editable(qtbot, make_page):
    page = make_page(pinned=PINNED)
    page.show()
    ctx, table = page.ctx, page.findChild(QWidget, "pinnedTable")
    ctx.run_started.emit()
    ctx.run_event.emit(ev.Step(step=1, total_steps=4, losses={"total": 1.0}, lr=1e-3,
                               samples_per_s=1, tokens_per_s=1, memory_mb=0, elapsed_s=1, eta_s=1))
    assert table.item(1, 1).text() == "–"  # no evaluation yet
    samples = [{"input": PINNED[0], "teacher": "is sunny", "student": "is sun"},
               {"input": PINNED[1], "teacher": "tea please", "student": "tea please"}]
    ctx.run_event.emit(ev.Eval(step=2, metrics={"perplexity": 50.0}, samples=samples))
    assert [table.item(r, 0).text() for r in (0, 2)] == PINNED
    assert (table.item(1, 0).text(), table.item(1, 1).text()) == ("is sunny", "is sun")
    assert table.item(3, 1).text() == "tea please"
    ctx.run_event.emit(ev.Eval(step=4, metrics={"perplexity": 40.0},
                               samples=[{**samples[0], "student": "is sunny"}, samples[1]]))
    assert table.item(1, 1).text() == "is sunny"
    assert "step 2: is sun" in table.item(1, 1).toolTip() and "step 4: is sunny" in table.item(1, 1).toolTip()
    assert "Step 4" in page.findChild(QWidget, "pinnedStatus").text()

    edit = page.findChild(QWidget, "pinnedInputEdit")
    qtbot.keyClicks(edit, "Rain later")
    with qtbot.waitSignal(ctx.config_changed) as changed:
        qtbot.mouseClick(page.findChild(QWidget, "pinnedAddButton"), Qt.MouseButton.LeftButton)
    assert changed.args == ["evaluation"]
    assert ctx.config.evaluation.pinned_inputs == PINNED + ["Rain later"] and edit.text() == ""
    table.selectRow(2)  # "A cup of tea"
    qtbot.mouseClick(page.findChild(QWidget, "pinnedRemoveButton"), Qt.MouseButton.LeftButton)
    assert ctx.config.evaluation.pinned_inputs == [PINNED[0], "Rain later"]
    # The removed input's answer from the run in progress stays visible, marked as such.
    assert any("pinned in that run only" in (table.item(r, 0).text()) for r in range(0, table.rowCount(), 2))

    new = default_config("causal-lm")
    new.evaluation.pinned_inputs = ["Only this"]
    ctx.replace_config(new)
    assert page.pinned.inputs() == ["Only this"]


@pytest.mark.slow
def test_a_past_run_fills_the_pinned_answers_from_its_evaluations(qtbot, page, store):
    page.show()
    select(qtbot, page, store[1]["causal-lm"])
    table = page.findChild(QWidget, "pinnedTable")
    qtbot.waitUntil(lambda: table.rowCount() == 4 and table.item(1, 1).text() != "–", timeout=WAIT)
    assert table.item(0, 0).text() == PINNED[0]  # in the config being edited
    assert table.item(2, 0).text().startswith(PINNED[1]) and "that run only" in table.item(2, 0).text()
    assert "step" in table.item(1, 1).toolTip() and "last evaluation" in page.pinned.status.text()


@pytest.mark.slow
def test_run_opened_and_run_finished_switch_the_compared_run(qtbot, page, store, tmp_path):
    page.show()
    runs = store[1]
    other = next(r for r in runs.values() if r != page.current_run())
    with qtbot.waitSignal(page.ctx.run_opened):
        page.ctx.open_run(other)
    assert page.current_run() == other
    assert page.findChild(QWidget, "compareRunCombo").currentData() == other
    summary = Run(Path(other)).summary()
    assert page.table.cell("parameters", 0) == f"{summary['teacher_params']:,}"
    qtbot.waitUntil(lambda: ready(page), timeout=WAIT)

    (tmp_path / "config.toml").write_text("")  # a run without a saved student
    page.ctx.run_opened.emit(str(tmp_path))
    assert page.current_run() == other
    assert "cannot be compared" in page.findChild(QWidget, "compareRunInfo").text()

    third = next(r for r in runs.values() if r != other)
    page.ctx.run_finished.emit(SimpleNamespace(run_dir=Path(third), status="finished", summary={"steps": 2}))
    assert page.current_run() == third
    qtbot.waitUntil(lambda: ready(page), timeout=WAIT)


def test_without_runs_the_page_says_what_to_do(qtbot, make_page):
    page = make_page()
    page.show()
    assert page.findChild(QWidget, "compareEmpty").isVisible()
    assert not page.findChild(QWidget, "compareRunCombo").isEnabled()
    assert not button(page).isVisible()
    with qtbot.waitSignal(page.ctx.navigate) as nav:
        qtbot.mouseClick(page.findChild(QWidget, "compareGoTrainButton"), Qt.MouseButton.LeftButton)
    assert nav.args == ["train"]
    assert page.ctx.jobs.active() == 0


@pytest.mark.slow
def test_every_interactive_widget_is_named(qtbot, page, store):
    page.show()
    qtbot.waitUntil(lambda: ready(page), timeout=WAIT)
    kinds = (QAbstractButton, QLineEdit, QPlainTextEdit, QTextBrowser, QComboBox, QAbstractSpinBox,
             QAbstractItemView)
    inner = (QAbstractSpinBox, QAbstractItemView, QLineEdit, QComboBox)

    def part_of_another(w):  # a spin box's line edit, a combo's popup list, a table's corner
        p = w.parentWidget()
        while p is not None and p is not page:
            if isinstance(p, inner) or type(p).__name__ == "QComboBoxPrivateContainer":
                return True
            p = p.parentWidget()
        return False

    found = [w for w in page.findChildren(QWidget) if isinstance(w, kinds) and not part_of_another(w)]
    assert len(found) >= 18
    unnamed = [type(w).__name__ for w in found if not (w.objectName() and w.accessibleName())]
    assert unnamed == []


@pytest.mark.slow
def test_a_real_run_shows_its_pinned_answers_then_becomes_the_compared_run(qtbot, make_page, tiny):
    page = make_page(pinned=PINNED)
    ctx = page.ctx
    ctx.training.finished.connect(ctx.run_finished.emit)  # as the main window wires it
    page.show()
    table = page.findChild(QWidget, "pinnedTable")
    evals = []
    ctx.run_event.connect(lambda e: isinstance(e, ev.Eval) and evals.append(e))
    ctx.training.start(tiny_config("causal-lm", tiny["gpt2"], training={"max_steps": 2},
                                   evaluation={"pinned_inputs": PINNED}))
    ctx.run_started.emit()
    with qtbot.waitSignal(ctx.run_finished, timeout=WAIT) as finished:
        pass
    assert len(evals) >= 2 and finished.args[0].status == "finished"
    last = evals[-1].samples
    assert [table.item(r, 0).text() for r in (0, 2)] == PINNED
    assert table.item(1, 1).text() == last[0]["student"] and table.item(3, 0).text() == last[1]["teacher"]
    assert f"step {evals[0].step}:" in table.item(1, 1).toolTip()
    assert page.current_run() == str(finished.args[0].run_dir) == ctx.current_run_dir
    assert not page.findChild(QWidget, "compareEmpty").isVisible() and button(page).isVisible()
    qtbot.waitUntil(lambda: ready(page), timeout=WAIT)


@pytest.mark.slow
def test_during_a_run_models_load_only_when_asked(qtbot, page, store):
    page.show()
    qtbot.waitUntil(lambda: ready(page), timeout=WAIT)
    page.ctx.run_started.emit()  # the loaded models are let go, for the training run's sake
    submitted = []
    real_submit = page.ctx.jobs.submit
    page.ctx.jobs.submit = lambda *a, **k: submitted.append(a) or real_submit(*a, **k)
    other = next(r for r in store[1].values() if r != page.current_run())
    page.ctx.open_run(other)
    assert page.current_run() == other and submitted == []  # nothing loads by itself
    compare(qtbot, page, "Rain is expected")
    assert len(submitted) == 1 and button(page).text() == "Loading..."
    qtbot.waitUntil(lambda: ready(page) and "Latency" in page.findChild(QWidget, "studentFigures").text(),
                    timeout=WAIT)
    qtbot.mouseClick(page.findChild(QWidget, "pinInputButton"), Qt.MouseButton.LeftButton)
    assert page.ctx.config.evaluation.pinned_inputs == [PINNED[0], "Rain is expected"]


@pytest.mark.slow
def test_generation_settings_reach_both_models(qtbot, page, store, monkeypatch):
    page.show()
    select(qtbot, page, store[1]["causal-lm"])
    spins = {n: page.findChild(QWidget, n) for n in ("genMaxNewTokens", "genTemperature", "genTopP", "genSeed")}
    assert all(w.isVisible() and w.accessibleName() for w in spins.values())
    assert not spins["genTopP"].isEnabled()  # greedy: top-p does not apply
    spins["genMaxNewTokens"].setValue(5)
    spins["genTemperature"].setValue(0.8)
    spins["genTopP"].setValue(0.9)
    spins["genSeed"].setValue(7)
    assert spins["genTopP"].isEnabled()
    from kdstudio.core.compare import Predictor

    seen = []
    real = Predictor.answer
    monkeypatch.setattr(Predictor, "answer", lambda self, text, gen=None, **k: seen.append(gen) or real(self, text, gen, **k))
    compare(qtbot, page, "Rain is expected")
    qtbot.waitUntil(lambda: ready(page) and len(seen) == 2, timeout=WAIT)
    for gen in seen:  # the same settings and seed for the teacher and the student
        assert (gen.max_new_tokens, gen.temperature, gen.top_p, gen.seed) == (5, pytest.approx(0.8), pytest.approx(0.9), 7)


@pytest.mark.slow
def test_per_token_view_says_why_when_it_cannot_be_drawn(qtbot, page, store, monkeypatch):
    from kdstudio.core.compare import Comparer
    from kdstudio.core.errors import CompatibilityError

    def refuse(self, prompt, continuation=""):
        raise CompatibilityError("The teacher and the student use different tokenizers.",
                                 hint="The per-token view needs a shared tokenizer.")

    monkeypatch.setattr(Comparer, "token_view", refuse)
    page.show()
    select(qtbot, page, store[1]["causal-lm"])
    compare(qtbot, page, "The weather")
    status = page.findChild(QWidget, "tokenStatus")
    qtbot.waitUntil(lambda: ready(page) and "different tokenizers" in status.text(), timeout=WAIT)
    assert "shared tokenizer" in status.text()
    assert not page.findChild(QWidget, "tokenStrip").isVisible()
    assert page.findChild(QTextBrowser, "studentText").toPlainText().startswith("The weather")  # answers still shown
    assert page.findChild(QMessageBox, "errorDialog") is None


def test_the_figures_add_plain_training_when_the_run_has_a_baseline(qtbot, make_page, store, tmp_path,
                                                                    monkeypatch):
    home = tmp_path / "with-baseline"
    src = Path(store[1]["causal-lm"])
    dst = home / "runs" / src.name
    shutil.copytree(src, dst)
    summary = json.loads((dst / "summary.json").read_text())
    ppl = summary["student_metrics"]["perplexity"]
    summary["baseline_metrics"] = {**summary["student_metrics"], "perplexity": ppl * 1.5}
    summary["baseline"] = {"steps": summary["steps"], "duration_s": 1.0, "quality_retained": 0.123}
    (dst / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setenv("KDSTUDIO_HOME", str(home))
    page = make_page()
    page.show()
    table = page.table
    assert page.current_run() == str(dst) and table.has_baseline()
    assert table.horizontalHeaderItem(2).text() == "Plain training"
    assert "without the teacher" in table.horizontalHeaderItem(2).toolTip()
    # The run recorded the student's 95% interval; this hand-made baseline none.
    assert table.cell("metric", 2) == f"{ppl * 1.5:,.3f}"
    assert table.cell("metric", 1).startswith(f"{ppl:,.3f} ± ")
    assert table.cell("quality_retained", 2) == "12.3%"
    assert table.cell("parameters", 2) == table.cell("parameters", 1)
    assert "Plain training" in page.findChild(QWidget, "compareFiguresNote").text()
    qtbot.waitUntil(lambda: ready(page), timeout=WAIT)
    assert table.has_baseline()  # still there once the models have loaded


def test_latency_and_speed_up_give_their_spread_a_second_line(qtbot):
    """A figure and its p10-p90 spread on one line made the table, and so the page, wider than a
    1280-px window; the spread now takes a line of its own, and cell() reads them as one."""
    from kdstudio.core.timing import Session, run_figures
    from kdstudio.ui.pages.compare.table import ROW_H, ROWS, FiguresTable

    table = FiguresTable()
    qtbot.addWidget(table)
    session = Session({"teacher": [7.5, 7.6, 7.7, 7.8, 7.9], "student": [4.4, 4.5, 4.6, 4.7, 4.8]})
    summary = {**run_figures(session), "teacher_metrics": {"accuracy": 0.9},
               "student_metrics": {"accuracy": 0.88}}
    table.set_figures({"parameters": (100, 50), "size_mb": (1.0, 0.5), "latency_ms": (7.7, 4.6),
                       "speedup": summary["speedup"], "headline_metric": "accuracy",
                       "quality_retained": 0.88 / 0.9}, summary)
    row = {key: r for r, (key, _, _) in enumerate(ROWS)}
    assert table.item(row["latency_ms"], 1).text() == "4.6 ms\np10\u2013p90 4.44\u20134.76"
    assert table.cell("latency_ms", 1) == "4.6 ms (p10\u2013p90 4.44\u20134.76)"
    assert re.fullmatch(r"1\.67x faster \(1\.6\d\u20131\.7\dx\)", table.cell("speedup", 1))
    assert table.rowHeight(row["latency_ms"]) > ROW_H == table.rowHeight(row["parameters"])
    assert table.rowHeight(row["speedup"]) > ROW_H
    one_line = max(table.fontMetrics().horizontalAdvance(table.cell("latency_ms", c)) for c in (0, 1))
    assert table.sizeHintForColumn(1) < one_line  # the column is as wide as its longer line
