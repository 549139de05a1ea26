"""The window as a whole: start-up, menus, settings, closing during a run."""

import json
import subprocess
import sys
import textwrap

import pytest
from PySide6.QtWidgets import QMessageBox

from kdstudio.core.events import Step
from kdstudio.ui.main_window import PAGE_KEYS
from kdstudio.ui.settings import Settings
from tests.conftest import ROOT, tiny_config
from tests.ui.conftest import open_window, settle


@pytest.fixture
def window(qtbot):
    return open_window(qtbot, demo=True)


@pytest.mark.slow
def test_opens_with_the_demo_selected(window):
    assert window.windowTitle() == "KD Studio"
    assert window.ctx.config.teacher.name == "all-MiniLM-L6-v2"
    assert window.ctx.config.data.dataset == "builtin:everyday-topics"
    assert [window.steps.item(i).data(256) for i in range(window.steps.count())] == list(PAGE_KEYS)
    menus = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert menus == ["File", "Run", "View", "Help"]
    assert not window.windowIcon().isNull()
    assert window.current_page_key() == "train"  # the demo opens where its Start button is


@pytest.mark.slow
def test_window_appears_before_torch_is_imported():
    code = textwrap.dedent("""
        import sys, time
        t0 = time.perf_counter()
        from PySide6.QtWidgets import QApplication
        app = QApplication([])
        from kdstudio.ui.main_window import MainWindow
        w = MainWindow(demo=True)
        w.show()
        shown = time.perf_counter() - t0
        print(shown, "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"},
                         timeout=120, check=True).stdout.split()
    assert out[1] == "False"  # the window is up before torch is imported


def _inside_qt_part(widget) -> bool:
    """Qt's own parts of a named control: a combo's popup and line edit, a spin box's line
    edit, a table's headers and corner button, the menu bar's overflow button."""
    from PySide6.QtWidgets import (
        QAbstractItemView,
        QAbstractSpinBox,
        QComboBox,
        QHeaderView,
    )

    if widget.objectName().startswith("qt_") or isinstance(widget, QHeaderView):
        return True
    if type(widget).__name__ == "QAbstractButton" and isinstance(widget.parent(), QAbstractItemView):
        return True
    p = widget.parent()
    while p is not None:
        if isinstance(p, (QComboBox, QAbstractSpinBox)):
            return True
        p = p.parent()
    return False


@pytest.mark.slow
def test_every_interactive_widget_is_named(window):
    from PySide6.QtWidgets import (
        QAbstractButton,
        QAbstractItemView,
        QAbstractSpinBox,
        QComboBox,
        QLineEdit,
        QPlainTextEdit,
    )

    unnamed = []
    for cls in (QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox, QPlainTextEdit,
                QAbstractItemView):
        for widget in window.findChildren(cls):
            if _inside_qt_part(widget):
                continue
            if not widget.objectName() or not widget.accessibleName() and not (
                    getattr(widget, "text", None) and widget.text()):
                unnamed.append(f"{cls.__name__}: {type(widget).__name__} "
                               f"'{widget.objectName()}' in {type(widget.parent()).__name__}")
    assert unnamed == []


@pytest.mark.slow
def test_required_object_names(window):
    from PySide6.QtWidgets import QProgressBar, QWidget

    for name in ("runButton", "pauseButton", "stopButton", "lossPlot", "compareInput",
                 "compareButton", "teacherOutput", "studentOutput", "runsTable", "trainProgress"):
        assert len(window.findChildren(QWidget, name)) == 1, name  # present, and only once
    assert isinstance(window.findChild(QWidget, "trainProgress"), QProgressBar)


@pytest.mark.slow
def test_invalid_config_shows_a_dialog_and_keeps_running(window, qtbot):
    window.ctx.config.training.device = "cuda:7"
    window.ctx.config.method.embedding_weight = 0.0  # every weight 0: ConfigError at validation
    window.start_run()
    box = window.findChild(QMessageBox, "errorDialog")
    assert box is not None and box.windowTitle() == "Invalid run configuration"
    assert "loss weight" in box.text()
    assert not window.training.is_running()


@pytest.mark.slow
def test_open_config_errors_and_success(window, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nbatchsize = 3\n")
    assert window.open_config(str(bad)) is False
    box = window.findChild(QMessageBox, "errorDialog")
    assert "training.batchsize" in box.text()
    good = tmp_path / "good.toml"
    tiny = tiny_config("causal-lm", "gpt2-folder")
    tiny.save(good)
    assert window.open_config(str(good)) is True
    assert window.ctx.config.task == "causal-lm" and window.ctx.config.teacher.name == "gpt2-folder"


def test_settings_round_trip_and_corrupt_file(tmp_path):
    path = tmp_path / "settings.json"
    s = Settings(path)
    s["last_teacher"] = "my/teacher"
    for i in range(15):
        s.push_recent("recent_runs", f"/runs/{i}")
    s.save()
    back = Settings(path)
    assert back["last_teacher"] == "my/teacher"
    assert back["recent_runs"][0] == "/runs/14" and len(back["recent_runs"]) == 10
    path.write_text("{ not json")
    broken = Settings(path)
    assert "could not be read" in broken.warning and broken["last_teacher"] == ""
    assert list(tmp_path.glob("settings.json.corrupt-*"))  # set aside, not deleted
    path.write_text(json.dumps({"last_teacher": 5, "geometry": "abc"}))
    typed = Settings(path)
    assert typed["last_teacher"] == "" and typed["geometry"] == "abc"  # wrong types ignored


@pytest.mark.slow
def test_corrupt_settings_warns_in_the_app(qtbot, kd_home):
    kd_home.mkdir(parents=True, exist_ok=True)
    (kd_home / "settings.json").write_text("]]")
    w = open_window(qtbot)
    qtbot.waitUntil(lambda: w.findChild(QMessageBox, "warningDialog") is not None)
    assert w.findChild(QMessageBox, "warningDialog").windowTitle() == "Settings were reset"


@pytest.mark.slow
def test_geometry_and_last_config_survive_a_restart(qtbot, kd_home):
    w = open_window(qtbot, demo=True)
    w.resize(1100, 730)
    w.ctx.config.training.max_steps = 33
    settle(qtbot, w)
    w.close()
    w2 = open_window(qtbot)
    # The offscreen screen is 800x800, so the restored width is clamped to the window's
    # minimum; the height (which fits) comes back exactly.
    assert w2.height() == 730 and w2.settings["geometry"]
    assert w2.ctx.config.training.max_steps == 33


@pytest.mark.slow
def test_close_during_a_run_stops_with_a_checkpoint(qtbot, tiny, monkeypatch):
    w = open_window(qtbot, demo=True)
    w.ctx.replace_config(tiny_config("causal-lm", tiny["gpt2"], training={"max_steps": 400,
                                                                           "eval_every": 0}))
    steps = []
    w.ctx.run_event.connect(lambda e: steps.append(e) if isinstance(e, Step) else None)
    w.start_run()
    qtbot.waitUntil(lambda: len(steps) >= 2, timeout=60000)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    w.close()
    qtbot.waitUntil(lambda: not w.training.is_running(), timeout=60000)
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10000)
    from kdstudio.core.runs import Run

    run = Run(w.ctx.current_run_dir)
    assert run.status() == "stopped" and run.latest_checkpoint() is not None
    assert steps[-1].step < 400


def test_qt_calls_keep_none_alive():
    """A long session makes hundreds of thousands of Qt calls. PySide6 6.12.0 dropped a
    reference to None on each call that returns nothing, which aborts Python 3.11 once None's
    count runs out; run in a child process so a bad build fails this test, not the suite."""
    code = textwrap.dedent("""
        import sys
        from PySide6.QtWidgets import QApplication, QLabel
        app = QApplication([])
        label = QLabel()
        before = sys.getrefcount(None)
        for i in range(50000):
            label.setText("x")
        print(sys.getrefcount(None) - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr[-500:]
    assert abs(int(out.stdout.strip())) < 100


def test_the_app_builds_its_first_page_before_showing_and_the_rest_just_after(qtbot, kd_home):
    from kdstudio.ui.main_window import PAGE_KEYS, PAGE_TITLES, MainWindow

    w = MainWindow(demo=True, deferred=True)
    qtbot.addWidget(w)
    assert [k for k in PAGE_KEYS if dict.__contains__(w.pages, k)] == ["train"]
    assert w.current_page_key() == "train" and w.stack.currentWidget() is w.pages["train"]
    assert w.steps.item(5).text() == "6. Runs"
    w.show_page("method")  # a page asked for before its turn is built at once
    assert dict.__contains__(w.pages, "method") and w.stack.currentWidget() is w.pages["method"]
    w.show()
    qtbot.waitUntil(lambda: all(dict.__contains__(w.pages, k) for k in PAGE_KEYS), timeout=30000)
    assert w.stack.count() == len(PAGE_KEYS) and w.current_page_key() == "method"
    for i, key in enumerate(PAGE_KEYS):
        assert w.stack.widget(i) is w.pages[key] and w.pages[key].title == PAGE_TITLES[key]
