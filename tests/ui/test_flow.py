"""The whole flow, once per task family: open a config, run, watch, compare, find and reopen the run."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableView,
    QWidget,
)

from kdstudio.ui.main_window import MainWindow
from tests.conftest import tiny_config
from tests.ui.conftest import open_window

pytestmark = pytest.mark.slow  # every test here takes more than about two seconds


def _text(widget: QWidget) -> str:
    parts = []
    for w in [widget, *widget.findChildren(QWidget)]:
        if isinstance(w, QPlainTextEdit):
            parts.append(w.toPlainText())
        elif hasattr(w, "text") and callable(w.text) and not isinstance(w, QPushButton):
            parts.append(str(w.text()))
    return " ".join(p for p in parts if p)


def _loss_points(window: MainWindow) -> dict[str, int]:
    plot = window.findChild(QWidget, "lossPlot")
    return {item.name(): 0 if item.xData is None else len(item.xData)
            for item in plot.getPlotItem().listDataItems() if item.name()}


@pytest.mark.parametrize("task,shape,probe", [
    ("causal-lm", "gpt2", "The forecast says"),
    ("sequence-classification", "bert", "The striker scored twice."),
    ("sentence-embedding", "bert", "Snow is expected tonight."),
])
def test_whole_flow(qtbot, tiny, tmp_path, task, shape, probe):
    w = open_window(qtbot, demo=True)
    # Choose models and data: a config file opened from the File menu's handler.
    path = tmp_path / "run.toml"
    tiny_config(task, tiny[shape], name=f"flow-{task}",
                training={"max_steps": 6, "eval_every": 3}).save(path)
    assert w.open_config(str(path))
    assert w.ctx.config.task == task

    # Run, and watch the plots and the progress bar.
    finished = []
    w.ctx.run_finished.connect(finished.append)
    w.show_page("train")
    qtbot.mouseClick(w.findChild(QPushButton, "runButton"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(finished) == 1, timeout=120000)
    assert finished[0] is not None and finished[0].status == "finished"
    bar = w.findChild(QProgressBar, "trainProgress")
    qtbot.waitUntil(lambda: bar.value() == bar.maximum() and bar.maximum() == 6, timeout=10000)
    qtbot.waitUntil(lambda: max(_loss_points(w).values(), default=0) == 6, timeout=10000)
    assert len(_loss_points(w)) >= 2  # one curve per loss component, plus the total

    # Compare teacher and student on our own input.
    w.show_page("compare")
    box = w.findChild(QWidget, "compareInput")
    (box.setPlainText if isinstance(box, QPlainTextEdit) else box.setText)(probe)
    button = w.findChild(QPushButton, "compareButton")
    qtbot.waitUntil(button.isEnabled, timeout=60000)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    teacher, student = w.findChild(QWidget, "teacherOutput"), w.findChild(QWidget, "studentOutput")
    qtbot.waitUntil(lambda: "ms" in _text(student) and "ms" in _text(teacher), timeout=60000)

    # Find the run in the runs table and reopen it.
    w.show_page("runs")
    table = w.findChild(QTableView, "runsTable")
    qtbot.waitUntil(lambda: table.model().rowCount() == 1, timeout=30000)
    names = [table.model().index(0, c).data() for c in range(table.model().columnCount())]
    assert f"flow-{task}" in names and "finished" in names
    opened = []
    w.ctx.run_opened.connect(opened.append)
    table.selectRow(0)
    w.pages["runs"].open_selected()
    assert opened == [finished[0].run_dir.as_posix()] or opened == [str(finished[0].run_dir)]
    assert w.current_page_key() == "train"
    qtbot.waitUntil(lambda: max(_loss_points(w).values(), default=0) == 6, timeout=10000)
