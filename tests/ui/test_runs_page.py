"""The Runs page, driven on real tiny runs."""

import copy
import json
import re
import shutil
import sys
import threading

import pytest
from pyqtgraph import PlotWidget
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractButton,
    QComboBox,
    QFileDialog,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QTableView,
    QTableWidget,
)

from kdstudio.core.config import load_config
from kdstudio.core.events import Step
from kdstudio.core.timing import summary_latency
from kdstudio.core.trainer import run_training
from kdstudio.ui.context import AppContext
from kdstudio.ui.jobs import JobRunner
from kdstudio.core.demos import demo_config
from kdstudio.ui.pages.runs.model import COL
from kdstudio.ui.pages.runs.page import RunsPage
from kdstudio.ui.settings import Settings
from kdstudio.ui.worker import TrainingController
from tests.conftest import tiny_config

WAIT = 30000


@pytest.fixture
def ctx(qtbot):
    """The app context wired as the main window wires it (start_run, run_finished)."""
    jobs, training = JobRunner(), TrainingController()
    c = AppContext(demo_config(), Settings(), jobs, training)

    def start_run(resume=None):
        training.start(copy.deepcopy(c.config) if resume is None else None, resume)
        c.run_started.emit()

    c.start_run = start_run
    training.finished.connect(c.run_finished.emit)
    yield c
    if training.is_running():
        training.stop()
        qtbot.waitUntil(lambda: not training.is_running(), timeout=WAIT)
    jobs.wait(WAIT)


@pytest.fixture
def two_runs(tiny):
    """Run 'a' (temperature 1, 2 steps) and run 'b' (temperature 3, 3 steps)."""
    a = run_training(tiny_config("causal-lm", tiny["gpt2"], name="a", training={"max_steps": 2}))
    b = run_training(tiny_config("causal-lm", tiny["gpt2"], name="b", method={"temperature": 3.0},
                                 training={"max_steps": 3}))
    return a, b


def open_page(qtbot, ctx):
    page = RunsPage(ctx)
    qtbot.addWidget(page)
    page.resize(1100, 780)
    with qtbot.waitSignal(page.rows_loaded, timeout=WAIT):
        page.show()
    return page


def refresh(qtbot, page):
    with qtbot.waitSignal(page.rows_loaded, timeout=WAIT):
        page.refresh()


def cell(page, row, key):
    return page.proxy.index(row, COL[key]).data()


def column(page, key):
    return [cell(page, r, key) for r in range(page.proxy.rowCount())]


def select(qtbot, page, *results):
    paths = [str(r.run_dir) for r in results]
    with qtbot.waitSignal(page.details_shown, timeout=WAIT):
        page.select_paths(paths)
    assert page.selected_paths() and set(page.selected_paths()) == set(paths)


def choose_export(qtbot, page, key):
    """Answer the export dialog the way a user does: pick a kind, press Export."""
    qtbot.waitUntil(lambda: page.export_dialog is not None and page.export_dialog.isVisible(),
                    timeout=WAIT)
    dialog = page.export_dialog
    dialog.findChild(QRadioButton, f"exportChoice_{key}").click()
    dialog.findChild(QPushButton, "exportStartButton").click()
    assert not dialog.isVisible()


def click_header(qtbot, page, key):
    header = page.table.horizontalHeader()
    x = header.sectionViewportPosition(COL[key]) + header.sectionSize(COL[key]) // 2
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))


@pytest.mark.slow
def test_table_lists_both_runs_with_status_and_headline(qtbot, ctx, two_runs):
    a, b = two_runs
    page = open_page(qtbot, ctx)
    assert page.proxy.rowCount() == 2
    assert column(page, "name") == ["b", "a"]  # newest first
    assert column(page, "status") == ["finished", "finished"]
    for row, result in enumerate((b, a)):
        value = result.summary["student_metrics"]["perplexity"]
        # With ± half its 95% interval (metrics.plus_minus), which the run recorded.
        from kdstudio.core.metrics import interval_of, plus_minus

        interval = interval_of(result.summary["intervals"], "perplexity")
        assert interval is not None
        assert cell(page, row, "headline") == f"Perplexity {value:.4g}{plus_minus(interval)}"
        # the speed-up with its p10-p90 spread; quality retained with its interval
        from kdstudio.core.metrics import format_quality
        from kdstudio.core.timing import speedup_text

        # (the tests' runs time 2 rounds: too few for a spread, and the cell says so)
        spread, rounds = result.summary.get("speedup_spread"), result.summary["speedup_rounds"]
        assert (spread is None) == (rounds < 5)
        assert cell(page, row, "speedup") == speedup_text(result.summary["speedup"], spread, rounds)
        assert rounds >= 5 or cell(page, row, "speedup").endswith(f"({rounds} rounds, no spread)")
        assert cell(page, row, "quality_retained") == format_quality(
            result.summary["quality_retained"],
            interval=interval_of(result.summary["intervals"], "quality_retained"))
    assert cell(page, 0, "teacher") == "gpt2"  # the folder path, shortened
    colour = page.proxy.index(0, COL["status"]).data(Qt.ItemDataRole.ForegroundRole).color().name()
    assert colour == "#1b7f3b"
    assert page.body.currentIndex() == 1 and not page.action_bar.isHidden()


@pytest.mark.slow
def test_sorting_by_clicking_headers_orders_numbers_and_dates(qtbot, ctx, two_runs):
    a, b = two_runs
    third = a.run_dir.with_name(a.run_dir.name + "-copy")
    shutil.copytree(a.run_dir, third)
    for path, speedup, created in ((a.run_dir, 9.5, "2026-03-01T10:00:00"),
                                   (b.run_dir, 10.25, "2025-12-31T23:59:00"),
                                   (third, None, "2026-02-10T08:00:00")):
        s = json.loads((path / "summary.json").read_text())
        s.update(speedup=speedup, speedup_spread=None, speedup_rounds=None, created=created,
                 name=path.name)
        (path / "summary.json").write_text(json.dumps(s))
    page = open_page(qtbot, ctx)
    click_header(qtbot, page, "speedup")
    assert column(page, "speedup") == ["9.50x", "10.25x", "-"]  # as text, "10.25x" < "9.50x"
    click_header(qtbot, page, "speedup")
    assert column(page, "speedup") == ["10.25x", "9.50x", "-"]  # a missing figure stays last
    click_header(qtbot, page, "created")
    assert column(page, "created") == ["2025-12-31 23:59", "2026-02-10 08:00", "2026-03-01 10:00"]
    refresh(qtbot, page)  # the chosen order survives a refresh
    assert column(page, "created") == ["2025-12-31 23:59", "2026-02-10 08:00", "2026-03-01 10:00"]


@pytest.mark.slow
def test_selecting_a_run_shows_its_summary_figures_and_curves(qtbot, ctx, two_runs):
    a, _b = two_runs
    page = open_page(qtbot, ctx)
    select(qtbot, page, a)
    t: QTableWidget = page.findChild(QTableWidget, "summaryTable")
    rows = {t.item(r, 0).text(): [t.item(r, c).text() for c in (1, 2, 3)] for r in range(t.rowCount())}
    s = json.loads((a.run_dir / "summary.json").read_text())
    # each figure with ± half its 95% interval where the run recorded one
    assert " \u00b1 " in rows["Perplexity (lower is better)"][2]
    rows = {k: [c.split(" \u00b1 ")[0].split(" (")[0] for c in v] for k, v in rows.items()}
    assert rows["Perplexity (lower is better)"] == [f"{s['teacher_metrics']['perplexity']:,.4g}",
                                                    f"{s['student_metrics_before']['perplexity']:,.4g}",
                                                    f"{s['student_metrics']['perplexity']:,.4g}"]
    assert rows["Parameters"] == [f"{s['teacher_params']:,}", f"{s['student_params']:,}", f"{s['student_params']:,}"]
    assert rows["Weights on disk (MB)"][2] == f"{s['student_size_mb']:,.4g}"
    # The median the run's timing session recorded (its samples are kept to 4 decimals, the
    # summary's own figure to 3, so the two may round apart in the last shown digit).
    t_lat = summary_latency(s, "teacher")
    assert t_lat.median_ms == pytest.approx(s["teacher_latency_ms"], abs=1e-3)
    assert rows["Latency per sample"][0] == f"{t_lat.median_ms:.3g} ms"
    assert rows["Speed-up"][2] == f"{s['speedup']:.2f}x"
    assert rows["Quality retained (perplexity)"][2] == f"{s['quality_retained']:.1%}"
    assert "a" in page.details.title_label.text()
    # The figures first: squeezed by hand, the table takes back the width its columns need
    # (no sideways scroll), and the curves keep their least room.
    split = page.details.split
    split.setSizes([150, sum(split.sizes()) - 150])
    page.details._give_table_room()
    left, right = split.sizes()
    assert left >= t.needed_width() > 150
    assert right >= max(380, page.details._pick.sizeHint().width())
    qtbot.waitUntil(lambda: t.horizontalScrollBar().maximum() == 0, timeout=WAIT)
    curves = [i for i in page.details.loss_plot.getPlotItem().listDataItems()]
    assert len(curves) == 1 and list(curves[0].getData()[0]) == [1.0, 2.0]
    metric = page.details.metric_plot.getPlotItem().listDataItems()
    assert [c.name() for c in metric] == ["student", "teacher"]


@pytest.mark.slow
def test_overlay_draws_one_curve_per_selected_run(qtbot, ctx, two_runs):
    a, b = two_runs
    page = open_page(qtbot, ctx)
    select(qtbot, page, a, b)
    assert page.act_overlay.isEnabled() and not page.act_open.isEnabled()
    assert len(page.details.loss_plot.getPlotItem().listDataItems()) == 2  # inline comparison too
    page.findChild(QAbstractButton, "overlayButton").click()
    qtbot.waitUntil(lambda: page.overlay_dialog is not None and page.overlay_dialog.isVisible(), timeout=WAIT)
    dlg = page.overlay_dialog
    assert sorted(c.name() for c in dlg.curves) == ["a", "b"]
    assert len({c.opts["pen"].color().name() for c in dlg.curves}) == 2
    legend = [label.text for _sample, label in dlg.legend.items]
    assert sorted(legend) == ["a", "b"]
    lengths = {c.name(): len(c.getData()[0]) for c in dlg.curves}
    assert lengths == {"a": 2, "b": 3}
    dlg.set_series("headline")
    assert sorted(c.name() for c in dlg.curves) == ["a", "b"]
    assert max(len(c.getData()[0]) for c in dlg.curves) >= 2


@pytest.mark.slow
def test_config_difference_dialog_lists_the_changed_keys(qtbot, ctx, two_runs):
    a, b = two_runs
    page = open_page(qtbot, ctx)
    select(qtbot, page, a, b)
    page.findChild(QAbstractButton, "diffButton").click()
    qtbot.waitUntil(lambda: page.diff_dialog is not None and page.diff_dialog.isVisible(), timeout=WAIT)
    assert sorted(page.diff_dialog.keys()) == ["method.temperature", "name", "training.max_steps"]
    table = page.diff_dialog.table
    row = page.diff_dialog.keys().index("method.temperature")
    assert {table.item(row, 1).text(), table.item(row, 2).text()} == {"1", "3"}
    assert "Softens" in table.item(row, 0).toolTip()


@pytest.mark.slow
def test_clone_replaces_the_config_and_opens_models(qtbot, ctx, two_runs):
    _a, b = two_runs
    page = open_page(qtbot, ctx)
    select(qtbot, page, b)
    assert ctx.config.task != "causal-lm"
    with qtbot.waitSignals([ctx.config_replaced, ctx.navigate], timeout=WAIT,
                           check_params_cbs=[None, lambda key: key == "models"]):
        page.findChild(QAbstractButton, "cloneButton").click()
    expected = load_config(b.run_dir / "config.toml")
    assert ctx.config.task == "causal-lm" and ctx.config.method.temperature == 3.0
    assert ctx.config.training.max_steps == 3 and ctx.config.name == ""
    expected.name = ""
    assert ctx.config.to_dict() == expected.to_dict()


@pytest.mark.slow
def test_open_and_double_click_open_the_run_on_the_train_page(qtbot, ctx, two_runs, monkeypatch):
    a, _b = two_runs
    page = open_page(qtbot, ctx)
    select(qtbot, page, a)
    row = next(r for r in range(page.proxy.rowCount()) if cell(page, r, "name") == "a")
    rect = page.table.visualRect(page.proxy.index(row, COL["name"]))
    with qtbot.waitSignals([ctx.run_opened, ctx.navigate], timeout=WAIT,
                           check_params_cbs=[lambda p: p == str(a.run_dir), lambda k: k == "train"]):
        # A real double-click: press and release, then the double-click event (Qt 6 item views
        # act on a double-click only at the index the press landed on).
        qtbot.mouseClick(page.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(page.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert ctx.settings["recent_runs"][0] == str(a.run_dir)
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    page.findChild(QAbstractButton, "folderButton").click()
    assert opened == [str(a.run_dir)]
    menu = page.context_menu()
    enabled = {act.text() for act in menu.actions() if act.isEnabled() and act.text()}
    assert {"Open", "Clone config", "Export student...", "Open folder", "Delete..."} <= enabled
    assert not ({"Overlay curves", "Compare configs", "Resume"} & enabled)


@pytest.mark.slow
def test_export_copies_a_loadable_student(qtbot, ctx, two_runs, tmp_path, monkeypatch):
    a, _b = two_runs
    dest = tmp_path / "exported"
    dest.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kw: str(dest))
    page = open_page(qtbot, ctx)
    select(qtbot, page, a)
    with qtbot.waitSignal(page.export_done, timeout=WAIT):
        page.findChild(QAbstractButton, "exportButton").click()
        choose_export(qtbot, page, "pytorch")
    assert (dest / "config.json").is_file() and (dest / "model.safetensors").is_file()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(dest)
    assert model.config.n_layer == 2
    assert str(dest) in page.message.text()


@pytest.mark.slow
def test_export_asks_before_writing_into_a_non_empty_folder(qtbot, ctx, two_runs, tmp_path, monkeypatch):
    a, _b = two_runs
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "config.json").write_text("mine")
    (dest / "notes.txt").write_text("keep me")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kw: str(dest))
    asked = []

    def answer(reply):
        def question(parent, title, text, *args, **kw):
            asked.append((title, text))
            return reply
        return question

    page = open_page(qtbot, ctx)
    select(qtbot, page, a)
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    page.act_export.trigger()
    choose_export(qtbot, page, "pytorch")
    assert asked and asked[0][0] == "The folder is not empty" and "config.json" in asked[0][1]
    ctx.jobs.wait(WAIT)
    assert (dest / "config.json").read_text() == "mine" and not (dest / "model.safetensors").exists()
    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    with qtbot.waitSignal(page.export_done, timeout=WAIT):
        page.act_export.trigger()
        choose_export(qtbot, page, "pytorch")
    assert (dest / "model.safetensors").is_file() and (dest / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_onnx_int8_export_shows_its_figures_and_is_recorded(qtbot, ctx, tiny):
    r = run_training(tiny_config("causal-lm", tiny["gpt2"], name="small", training={"max_steps": 1}))
    page = open_page(qtbot, ctx)
    select(qtbot, page, r)
    stages = []

    def stage_seen():  # the message names each stage as the engine reports it
        stages.append(page.message.text())
        return "quantize" in stages[-1] or not page.export_progress.isVisible()

    with qtbot.waitSignal(page.export_done, timeout=4 * WAIT) as done:
        page.findChild(QAbstractButton, "exportButton").click()
        assert [b.text() for b in page.export_dialog.findChildren(QRadioButton)] == [
            "PyTorch folder (the student as trained)", "ONNX", "ONNX int8 (smallest)", "ONNX fp16",
            "safetensors fp16"]
        choose_export(qtbot, page, "onnx-int8")
        assert not page.act_export.isEnabled() and page.export_progress.isVisible()
        qtbot.waitUntil(stage_seen, timeout=4 * WAIT)
    folder = r.run_dir / "exports" / "onnx-int8"
    assert done.args == [str(folder)] and (folder / "model.onnx").is_file()
    assert any("Exporting the student of 'small' as ONNX int8" in m for m in stages)
    dialog = page.export_result_dialog
    assert dialog is not None and dialog.isVisible()
    labels = [dialog.figure(row, 0) for row in range(dialog.table.rowCount())]
    assert labels[:4] == ["Size on disk", "Latency per sample (median, p10\u2013p90)",
                          "Perplexity (lower is better)", "Quality kept (of the student's)"]
    assert labels[-1] == "Largest difference from PyTorch"
    assert "MB (" in dialog.figure(0) and "% of the student)" in dialog.figure(0)
    # (a timing under load says so after the figure: the machine's state is not the test's)
    assert re.fullmatch(r"[\d.]+ ms \([\d.]+x as (fast|slow)\)( \(timed while .+\))?",
                        dialog.figure(1)), dialog.figure(1)
    # the spread from 5 timed rounds on (the tests' runs time 2: the median alone)
    repeats = r.summary["latency"]["repeats"]
    assert (" ms (p10\u2013p90 " in dialog.figure(1, 2)) == (repeats >= 5), dialog.figure(1, 2)
    assert dialog.figure(3).endswith("%") and float(dialog.figure(len(labels) - 1)) >= 0
    teacher = r.summary["teacher_metrics"]["perplexity"]
    assert dialog.figure(2, 3) == f"{teacher:.2f}"  # the teacher's, from the run's summary
    assert str(folder) in dialog.folder_label.text()
    summary = json.loads((r.run_dir / "summary.json").read_text())
    (entry,) = summary["exports"]
    assert (entry["format"], entry["quantize"], entry["path"]) == ("onnx", "int8", "exports/onnx-int8")
    assert f"{entry['size_ratio']:.1%} of the student" in dialog.figure(0)
    assert "quality kept" in page.message.text() and str(folder) in page.message.text()
    assert page.act_export.isEnabled() and not page.export_progress.isVisible()
    page.grab().save(str(r.run_dir.parent / "runs-page-export.png"))
    dialog.grab().save(str(r.run_dir.parent / "export-result.png"))


@pytest.mark.slow
def test_a_failed_export_shows_a_titled_dialog_and_the_page_goes_on(qtbot, ctx, two_runs, monkeypatch):
    a, b = two_runs
    page = open_page(qtbot, ctx)
    select(qtbot, page, a)
    from kdstudio.core.errors import ExportError
    from kdstudio.ui.pages.runs import actions

    def broken(*_a, **_k):  # an export that fails inside the engine (a missing part is offered
        raise ExportError("onnxruntime could not load the exported graph.")  # for install)

    monkeypatch.setattr(actions, "convert_student", broken)
    page.act_export.trigger()
    choose_export(qtbot, page, "onnx")
    qtbot.waitUntil(lambda: page.findChild(QMessageBox, "errorDialog") is not None, timeout=WAIT)
    box = page.findChild(QMessageBox, "errorDialog")
    assert box.windowTitle() == "Export failed"
    assert "onnxruntime" in box.text() and "The run itself is unchanged." in box.text()
    box.close()
    assert page.act_export.isEnabled() and not page.export_progress.isVisible()
    assert not (a.run_dir / "exports").exists()
    select(qtbot, page, b)  # the page goes on
    assert page.selected_paths() == [str(b.run_dir)]


@pytest.mark.slow
def test_delete_asks_then_removes_the_folder(qtbot, ctx, two_runs, monkeypatch):
    a, b = two_runs
    page = open_page(qtbot, ctx)
    select(qtbot, page, a)
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: QMessageBox.StandardButton.No)
    page.act_delete.trigger()
    ctx.jobs.wait(WAIT)
    assert a.run_dir.exists()
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda parent, title, text, *args, **kw: asked.append(text) or QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(page.runs_deleted, timeout=WAIT):
        page.findChild(QAbstractButton, "deleteButton").click()
    assert "'a'" in asked[0] and "cannot be undone" in asked[0]
    assert not a.run_dir.exists() and b.run_dir.exists()
    qtbot.waitUntil(lambda: column(page, "name") == ["b"], timeout=WAIT)


@pytest.mark.slow
def test_delete_refuses_the_running_run(qtbot, ctx, two_runs, monkeypatch):
    _a, b = two_runs
    page = open_page(qtbot, ctx)
    asked = []
    with monkeypatch.context() as m:
        m.setattr(ctx.training, "is_running", lambda: True)  # b is the run in progress
        ctx.current_run_dir = str(b.run_dir)
        select(qtbot, page, b)
        assert not page.act_delete.isEnabled() and not page.act_resume.isEnabled()
        m.setattr(QMessageBox, "question", lambda *args, **kw: asked.append(1) or QMessageBox.StandardButton.Yes)
        page.delete_selected()  # even when called directly
    box = page.findChild(QMessageBox, "errorDialog")
    assert box is not None and box.windowTitle() == "Cannot delete a running run"
    assert "Stop it" in box.text()
    assert not asked and b.run_dir.exists()


@pytest.mark.slow
def test_a_stopped_run_resumes_from_the_page_and_becomes_finished(qtbot, ctx, tiny, two_runs):
    stop = threading.Event()

    def sink(event):
        if isinstance(event, Step) and event.step >= 1:
            stop.set()

    stopped = run_training(tiny_config("causal-lm", tiny["gpt2"], name="halted", training={"max_steps": 3}),
                           sink, stop)
    assert stopped.status == "stopped"
    page = open_page(qtbot, ctx)
    select(qtbot, page, two_runs[0])
    assert not page.act_resume.isEnabled()  # a finished run has nothing to resume
    select(qtbot, page, stopped)
    row = next(r for r in range(page.proxy.rowCount()) if cell(page, r, "name") == "halted")
    assert cell(page, row, "status") == "stopped" and page.act_resume.isEnabled()
    with qtbot.waitSignal(ctx.run_finished, timeout=120000) as done:
        page.findChild(QAbstractButton, "resumeButton").click()
    assert done.args[0].status == "finished"
    qtbot.waitUntil(lambda: cell(page, next(r for r in range(page.proxy.rowCount())
                                            if cell(page, r, "name") == "halted"), "status") == "finished",
                    timeout=WAIT)
    assert json.loads((stopped.run_dir / "summary.json").read_text())["steps"] == 3
    shown = page.details
    qtbot.waitUntil(lambda: shown.details is not None and shown.details.summary.get("status") == "finished",
                    timeout=WAIT)
    assert not page.act_resume.isEnabled()


@pytest.mark.slow
def test_damaged_summaries_do_not_break_the_table(qtbot, ctx, two_runs):
    a, b = two_runs
    (a.run_dir / "summary.json").write_text("{ this is not json")
    s = json.loads((b.run_dir / "summary.json").read_text())
    s.update(student_metrics="oops", speedup="fast", created=5, teacher_metrics=[1])
    (b.run_dir / "summary.json").write_text(json.dumps(s))
    page = open_page(qtbot, ctx)
    assert page.proxy.rowCount() == 2
    statuses = dict(zip(column(page, "name"), column(page, "status")))
    assert statuses == {a.run_dir.name: "damaged", "b": "finished"}
    assert dict(zip(column(page, "name"), column(page, "speedup")))["b"] == "-"
    select(qtbot, page, a)
    assert "missing or damaged" in page.details.summary_note.text()
    select(qtbot, page, b)
    assert page.details.stack.currentIndex() == 1
    # A damaged config: clone and compare say so, and the config under edit is kept.
    (a.run_dir / "config.toml").write_text("task = [broken")
    before = ctx.config.to_dict()
    select(qtbot, page, a)
    page.act_clone.trigger()
    qtbot.waitUntil(lambda: any(box.windowTitle() == "Could not clone the run's config"
                                for box in page.findChildren(QMessageBox, "errorDialog")), timeout=WAIT)
    assert ctx.config.to_dict() == before
    select(qtbot, page, a, b)
    page.act_diff.trigger()
    qtbot.waitUntil(lambda: any(box.windowTitle() == "Could not compare the configs" and "config.toml" in box.text()
                                for box in page.findChildren(QMessageBox, "errorDialog")), timeout=WAIT)
    assert page.diff_dialog is None


def test_an_empty_store_says_how_to_make_a_first_run(qtbot, ctx):
    page = open_page(qtbot, ctx)
    assert page.body.currentIndex() == 0 and page.action_bar.isHidden()
    assert "No runs yet" in page.findChild(type(page.where_label), "runsEmptyText").text()
    with qtbot.waitSignal(ctx.navigate, timeout=WAIT, check_params_cb=lambda k: k == "models"):
        page.findChild(QAbstractButton, "setupRunButton").click()


@pytest.mark.slow
def test_a_new_run_appears_when_it_starts_and_finishes(qtbot, ctx, tiny):
    page = open_page(qtbot, ctx)
    ctx.replace_config(tiny_config("causal-lm", tiny["gpt2"], name="live", training={"max_steps": 2}))
    with qtbot.waitSignal(ctx.run_finished, timeout=120000):
        ctx.start_run()
    qtbot.waitUntil(lambda: column(page, "name") == ["live"] and column(page, "status") == ["finished"],
                    timeout=WAIT)


@pytest.mark.slow
def test_every_interactive_widget_is_named(qtbot, ctx, two_runs):
    page = open_page(qtbot, ctx)
    select(qtbot, page, two_runs[0])
    widgets = [w for w in page.findChildren(QAbstractButton) + page.findChildren(QComboBox) +
               page.findChildren(QTableView) + page.findChildren(PlotWidget)
               if w.metaObject().className() != "QTableCornerButton"]  # Qt's own corner of a table
    names = {w.objectName() for w in widgets}
    assert {"runsTable", "summaryTable", "metricCombo", "runLossPlot", "metricPlot", "openButton",
            "overlayButton", "diffButton", "cloneButton", "resumeButton", "exportButton", "folderButton",
            "deleteButton", "refreshButton", "setupRunButton"} <= names
    unnamed = [(w.metaObject().className(), w.objectName()) for w in widgets
               if not w.objectName() or not w.accessibleName()]
    assert unnamed == []


@pytest.mark.slow
def test_a_sequence_level_run_shows_the_teachers_continuations(qtbot, ctx, two_runs):
    from kdstudio.core.lm import GENERATIONS_FILE, save_generations

    a, b = two_runs
    save_generations(a.run_dir / GENERATIONS_FILE, ["The kettle", "Rain <again>"],
                     [" boiled over.", " fell all day."])
    page = open_page(qtbot, ctx)
    select(qtbot, page, a)
    view = page.details.generations_view
    assert view.isVisibleTo(page)
    text = view.toPlainText()
    assert "2 of 2" in text and "The kettle boiled over." in text and "Rain <again> fell" in text
    select(qtbot, page, b)  # a run without continuations hides the view
    assert not view.isVisibleTo(page)


@pytest.mark.slow
def test_a_run_with_a_baseline_shows_the_plain_training_column(qtbot, ctx, tiny):
    r = run_training(tiny_config("causal-lm", tiny["gpt2"], name="with-baseline",
                                 student={"layers": 2}, evaluation={"baseline": True}))
    page = open_page(qtbot, ctx)
    select(qtbot, page, r)
    t: QTableWidget = page.findChild(QTableWidget, "summaryTable")
    header = [t.horizontalHeaderItem(c).text() for c in range(t.columnCount())]
    assert header[1:4] == ["Teacher", "Student before", "Student after"] and len(header) == 5
    assert "plain" in header[4].lower()
    rows = {t.item(r_, 0).text(): [t.item(r_, c).text() for c in range(1, 5)] for r_ in range(t.rowCount())}
    ppl = r.summary["baseline_metrics"]["perplexity"]
    assert rows["Perplexity (lower is better)"][3].split(" \u00b1 ")[0] == f"{ppl:,.4g}"
    assert t.item(0, 3).font().bold() and not t.item(0, 4).font().bold()
