"""The Tradeoff page, driven on real tiny sweeps in the main window."""

import csv
import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QFileDialog,
    QLineEdit,
    QMessageBox,
    QWidget,
)

from kdstudio.core.events import Step
from kdstudio.core.runs import list_runs
from kdstudio.core.sweep.queue import Sweep, derived
from tests.conftest import tiny_config
from tests.ui.conftest import open_window

pytestmark = pytest.mark.slow  # every test here takes more than about two seconds

RUN = 300000
WAIT = 60000


def base(tiny):
    return tiny_config("causal-lm", tiny["gpt2"], data={"max_eval_samples": 16},
                       evaluation={"max_samples": 16, "latency_repeats": 1},
                       training={"max_steps": 2, "eval_every": 0})


def tradeoff_window(qtbot, tiny):
    w = open_window(qtbot)
    w.ctx.replace_config(base(tiny))
    w.show_page("tradeoff")
    page = w.pages["tradeoff"]
    qtbot.waitUntil(lambda: page.setup.teacher_layers == 4, timeout=WAIT)
    return w, page


def point_position(page, run_dir):
    """Where a student's point is drawn, in the plot's viewport coordinates."""
    chart = page.results.chart
    for scatter in chart.scatters:
        for p in scatter.points():
            if p.data() == run_dir:
                scene = chart.plot.getPlotItem().vb.mapViewToScene(p.pos())
                return chart.plot.mapFromScene(scene)
    raise AssertionError(f"no point for {run_dir}")


def test_a_tiny_sweep_fills_chart_and_table_opens_runs_and_exports(qtbot, tiny, tmp_path,
                                                                  monkeypatch):
    w, page = tradeoff_window(qtbot, tiny)
    assert sorted(page.setup.layer_boxes) == [1, 2, 3]
    assert all(b.objectName() and b.accessibleName() for b in page.setup.layer_boxes.values())
    page.setup.check_layers([1, 2])
    qtbot.waitUntil(lambda: page.plan_label.text().startswith("2 runs,"), timeout=WAIT)
    assert "on this machine" in page.plan_label.text()

    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.confirm_dialog is not None, timeout=WAIT)
    dialog = page.confirm_dialog
    assert "2 runs" in dialog.text() and "1 layer; 2 layers" in dialog.text()
    with qtbot.waitSignal(page.queue.done, timeout=RUN) as done:
        dialog.button(QMessageBox.StandardButton.Yes).click()
        assert page.stop_button.isEnabled() and not page.start_button.isEnabled()
    assert done.args == ["finished"]
    qtbot.waitUntil(lambda: len(page.results.rows) == 3, timeout=WAIT)

    sweep = page.current
    runs = list_runs()
    assert len(runs) == 2 and all(r.status == "finished" for r in runs)
    assert {r.name for r in runs} == {f"sweep-{sweep.id}-1 layer", f"sweep-{sweep.id}-2 layers"}
    saved = json.loads((sweep.folder / "sweep.json").read_text())
    assert [e["status"] for e in saved["entries"]] == ["finished", "finished"]
    assert [page.queue_table.item(i, 2).text() for i in range(2)] == ["finished", "finished"]
    assert not page.banner.isVisible() and page.start_button.isEnabled()

    # The chart: one point per student, the teacher apart; the table sorts by its numbers.
    assert sum(len(s.points()) for s in page.results.chart.scatters) == 2
    table = page.results.table
    assert table.rowCount() == 3
    assert page.results.column_texts(0) == ["teacher", "1 layer", "2 layers"]
    table.sortItems(1, Qt.SortOrder.DescendingOrder)  # parameters, largest first
    assert page.results.column_texts(0) == ["teacher", "2 layers", "1 layer"]
    assert "layer student" in page.results.summary.text()
    page.results.cost_combo.setCurrentIndex(2)  # size on disk
    assert "size on disk" in page.results.chart.plot.getPlotItem().titleLabel.text

    # Clicking a point opens its run on the Runs page, selected.
    two = page.results.rows[2].run_dir
    runs_page = w.pages["runs"]
    with qtbot.waitSignal(runs_page.details_shown, timeout=WAIT):
        qtbot.mouseClick(page.results.chart.plot.viewport(), Qt.MouseButton.LeftButton,
                         pos=point_position(page, two))
    assert w.current_page_key() == "runs" and runs_page.selected_paths() == [two]

    # Exports: the chart as PNG, the table as CSV, where the user says.
    w.show_page("tradeoff")
    png, table_csv = tmp_path / "out" / "chart.png", tmp_path / "out" / "figures.csv"
    answers = iter([(str(png), ""), (str(table_csv), "")])
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: next(answers))
    with qtbot.waitSignal(page.results.exported, timeout=WAIT):
        qtbot.mouseClick(page.results.png_button, Qt.MouseButton.LeftButton)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with qtbot.waitSignal(page.results.exported, timeout=WAIT):
        qtbot.mouseClick(page.results.csv_button, Qt.MouseButton.LeftButton)
    rows = list(csv.DictReader(table_csv.open()))
    assert [r["label"] for r in rows] == ["teacher", "1 layer", "2 layers"]
    assert rows[2]["run_dir"] == two
    assert "Saved the table" in page.message.text()


def test_an_unfinished_sweep_is_offered_stopped_and_resumed(qtbot, tiny):
    # Enough steps that the stop below lands mid-training (events reach the page a bit late).
    sweep = Sweep.new(base(tiny).with_overrides(["training.max_steps=40"]), derived(1))
    sweep.save()  # as if the app had closed before running it
    w = open_window(qtbot)
    page = w.pages["tradeoff"]
    qtbot.waitUntil(lambda: page.current is not None and page.current.id == sweep.id, timeout=WAIT)
    assert "did not finish" in w.statusBar().currentMessage()
    w.show_page("tradeoff")
    assert page.banner.isVisible() and "did not finish" in page.banner.label.text()
    assert page.resume_button.isEnabled()

    # Stop the queue at the first training step: it keeps a checkpoint and stays resumable.
    armed = [True]

    def stop_at_first_step(e):
        if armed[0] and isinstance(e, Step):
            armed[0] = False
            page.stop_button.click()

    w.training.event.connect(stop_at_first_step)
    with qtbot.waitSignal(page.queue.done, timeout=RUN) as done:
        qtbot.mouseClick(page.banner.resume_button, Qt.MouseButton.LeftButton)
    assert done.args == ["stopped"]
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=WAIT)
    assert page.queue_table.item(0, 2).text() == "stopped"
    stopped = Sweep.load(sweep.folder).entries[0]
    assert stopped.status == "stopped" and stopped.run_dir

    with qtbot.waitSignal(page.queue.done, timeout=RUN) as done:
        qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
    assert done.args == ["finished"]
    qtbot.waitUntil(lambda: len(page.results.rows) == 2, timeout=WAIT)
    entry = Sweep.load(sweep.folder).entries[0]
    assert entry.status == "finished" and entry.run_dir == stopped.run_dir  # resumed, not redone
    assert len(list_runs()) == 1 and not page.banner.isVisible()


def test_budget_proposal_and_bad_input(qtbot, tiny):
    _w, page = tradeoff_window(qtbot, tiny)
    interactive = (QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox, QAbstractItemView)
    controls = [x for x in page.findChildren(QWidget)
                if isinstance(x, interactive) and x.isVisibleTo(page)
                and not isinstance(x.parent(), (QComboBox, QAbstractSpinBox, QAbstractItemView))]
    assert len(controls) > 15
    assert [type(x).__name__ for x in controls if not (x.objectName() and x.accessibleName())] == []
    box = page.budget
    box.kind_combo.setCurrentIndex(0)  # size on disk, MB
    box.limit.setValue(0.17)  # the tiny 2-layer student is about 0.15 MB, the 3-layer 0.2 MB
    qtbot.mouseClick(box.propose_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: box.use_button.isVisible(), timeout=WAIT)
    assert box.proposed == [1, 2] and "(estimated)" in box.result.text()
    qtbot.mouseClick(box.use_button, Qt.MouseButton.LeftButton)
    assert [k for k, b in page.setup.layer_boxes.items() if b.isChecked()] == [1, 2]

    page.setup.axis_combo.setCurrentIndex(1)  # temperatures
    page.setup.temps_edit.setText("1, x")
    qtbot.waitUntil(lambda: "'x' is not a number" in page.plan_label.text(), timeout=WAIT)
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    errors = [d for d in QApplication.topLevelWidgets()
              if d.objectName() == "errorDialog" and d.isVisible()]
    assert errors and errors[0].windowTitle() == "Sweep problem"
    errors[0].close()
    assert page.confirm_dialog is None and not page.queue.is_running()


def test_closing_the_app_mid_sweep_leaves_it_resumable(qtbot, tiny, monkeypatch):
    w, page = tradeoff_window(qtbot, tiny)
    sweep = Sweep.new(base(tiny).with_overrides(["training.max_steps=40"]), derived(1, 2))
    sweep.save()
    steps = []
    w.ctx.run_event.connect(lambda e: steps.append(e) if isinstance(e, Step) else None)
    page._run(sweep)
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=WAIT)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    w.close()
    qtbot.waitUntil(lambda: not w.isVisible() and not page.queue.is_running(), timeout=WAIT)
    saved = Sweep.load(sweep.folder)
    assert [e.status for e in saved.entries] == ["stopped", "pending"] and saved.runner == {}
    assert saved.entries[0].run and saved.entries[0].run.latest_checkpoint() is not None

    # The next start of the app offers it, and Resume finishes both students.
    w2 = open_window(qtbot, page="tradeoff")
    page2 = w2.pages["tradeoff"]
    qtbot.waitUntil(lambda: page2.banner.isVisible(), timeout=WAIT)
    with qtbot.waitSignal(page2.queue.done, timeout=RUN) as done:
        qtbot.mouseClick(page2.banner.resume_button, Qt.MouseButton.LeftButton)
    assert done.args == ["finished"]
    final = Sweep.load(sweep.folder)
    assert [e.status for e in final.entries] == ["finished", "finished"]
    assert final.entries[0].run_dir == saved.entries[0].run_dir and len(list_runs()) == 2


def test_int8_exports_are_diamonds_in_the_legend_table_and_png_and_open_their_run(qtbot, tmp_path):
    from kdstudio.core.sweep.figures import sweep_table
    from kdstudio.ui.pages.tradeoff.chart import INT8_NAME, render_png
    from tests.core.test_sweep import fake_int8_sweep, int8_base

    sweep = fake_int8_sweep(int8_base())  # finished runs with int8 exports, no training
    one, two = (e.run_dir for e in sweep.entries)
    w = open_window(qtbot)
    page = w.pages["tradeoff"]
    qtbot.waitUntil(lambda: len(page.results.rows) == 5, timeout=WAIT)
    w.show_page("tradeoff")
    results, chart = page.results, page.results.chart
    assert results.cost == "size"  # where an export differs from its student

    # Diamonds, one per export, in the colour of their student; a legend entry of their own.
    int8 = chart.int8_scatter
    assert int8 is not None and int8.name() == INT8_NAME
    points = int8.points()
    assert sorted(p.data() for p in points) == sorted([one, two])
    assert {p.symbol() for p in points} == {"d"}
    students = [p for s in chart.scatters if s is not int8 for p in s.points()]
    assert len(students) == 2 and {p.symbol() for p in students} == {"o"}
    colour = {p.data(): p.pen().color().name() for p in students}
    assert all(p.pen().color().name() == colour[p.data()] for p in points)
    legend = [label.text for _sample, label in chart.plot.getPlotItem().legend.items]
    assert INT8_NAME in legend and "students" in legend
    tip = int8.opts["tip"](0, 0, two)
    assert "2 layers (int8): the student exported as int8 ONNX" in tip and "0.6 MB" in tip

    # The table: each export under its student, the front marked per point.
    assert results.column_texts(0) == ["teacher", "1 layer", "1 layer (int8)", "2 layers",
                                       "2 layers (int8)"]
    assert results.column_texts(results.table.columnCount() - 1) == ["yes", "", "yes", "yes", "yes"]
    assert page.queue_table.item(1, 3).text() == f"{40 / 44:.1%}"  # the student's, not the export's
    assert "Exported as int8 ONNX, the 2-layer student" in results.summary.text()

    # The PNG carries the diamonds: it differs from the same chart without them.
    rows = sweep_table(sweep)
    with_int8 = render_png(rows, tmp_path / "with.png", "size")
    without = render_png([r for r in rows if not r.is_int8], tmp_path / "without.png", "size")
    assert with_int8.read_bytes() != without.read_bytes()

    # The set-up asks for exports: the box's state reaches the planned sweep.
    box = page.setup.int8_box
    assert box.isEnabled() and "Also export each student as int8 ONNX" in box.text()
    assert not page.setup.quantize_int8()
    box.setChecked(True)
    assert page.setup.quantize_int8()

    # Clicking a diamond opens its run, as a student's point does.
    scene = chart.plot.getPlotItem().vb.mapViewToScene(
        next(p for p in points if p.data() == two).pos())
    runs_page = w.pages["runs"]
    with qtbot.waitSignal(runs_page.details_shown, timeout=WAIT):
        qtbot.mouseClick(chart.plot.viewport(), Qt.MouseButton.LeftButton,
                         pos=chart.plot.mapFromScene(scene))
    assert w.current_page_key() == "runs" and runs_page.selected_paths() == [two]


def test_the_app_queue_exports_finished_students_and_shows_a_failed_export(qtbot, monkeypatch):
    import sys
    import types

    from kdstudio.core.errors import ExportError
    from kdstudio.core.runs import Run
    from tests.core.test_sweep import fake_int8_sweep, int8_base, int8_entry

    sweep = fake_int8_sweep(int8_base(), with_exports=False)  # finished, not yet exported
    one, two = (e.run_dir for e in sweep.entries)

    def fake_export_run(run_dir, fmt="onnx", quantize=None, out_dir=None, on_event=None, **kw):
        if str(run_dir) == two:
            raise ExportError("The graph could not be exported.")
        run = Run(run_dir)
        run.update_summary(exports=[*run.summary()["exports"], int8_entry(0.4, 81.0, 1.5, 3.0)])

    # The engine's export, replaced: the queue's step is what is checked here.
    monkeypatch.setitem(sys.modules, "kdstudio.core.export",
                        types.SimpleNamespace(export_run=fake_export_run))
    w = open_window(qtbot)
    page = w.pages["tradeoff"]
    qtbot.waitUntil(lambda: len(page.results.rows) == 3, timeout=WAIT)
    assert page.resume_button.isEnabled()  # exports are missing, though every run finished
    with qtbot.waitSignal(page.queue.done, timeout=WAIT) as done:
        qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
    assert done.args == ["finished"]
    qtbot.waitUntil(lambda: len(page.results.rows) == 4, timeout=WAIT)
    assert [r.label for r in page.results.rows][1:] == ["1 layer", "1 layer (int8)", "2 layers"]
    assert page.queue_table.status_texts() == ["finished", "finished (no int8)"]
    assert "graph" in page.queue_table.item(1, 2).toolTip()
    assert Sweep.load(sweep.folder).entries[1].note.startswith("The int8 export failed")
