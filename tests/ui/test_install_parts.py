"""Missing export parts are installed from the app, with progress, instead of a pip command."""

import importlib.metadata
import sys
import textwrap

from PySide6.QtWidgets import QAbstractButton, QPushButton

from kdstudio.core.trainer import run_training
from kdstudio.ui.pages.runs import actions
from kdstudio.ui.pages.tradeoff import setup as tradeoff_setup
from kdstudio.ui.widgets import install_parts
from kdstudio.ui.widgets.install_parts import InstallPartsDialog, Part, extra_parts, progress_of
from tests.conftest import tiny_config
from tests.ui.test_runs_page import choose_export, ctx, open_page, select  # noqa: F401 (fixture)

WAIT = 30000


def fake_pip(tmp_path, module, code):
    """A stand-in for pip: prints pip's lines and, on success, makes `module` importable."""
    script = tmp_path / "fake_pip.py"
    script.write_text(textwrap.dedent(f"""
        import pathlib, sys
        print("Collecting {module}>=1.0")
        print("  Downloading {module}-1.0-py3-none-any.whl (12 kB)")
        if {code}:
            print("ERROR: No matching distribution found for {module}>=1.0", flush=True)
            sys.exit({code})
        print("Installing collected packages: {module}")
        pathlib.Path(r"{tmp_path}", "{module}.py").write_text("")
        print("Successfully installed {module}-1.0")
    """))
    return [sys.executable, str(script)]


def test_the_export_extra_is_read_from_the_package_metadata():
    modules = {p.module for p in extra_parts("export")}
    assert modules == {"onnx", "onnxruntime", "onnxscript"}
    requires = importlib.metadata.requires("kdstudio")
    assert all(any(r.startswith(p.requirement) for r in requires) for p in extra_parts("export"))


def test_progress_follows_pips_lines_and_never_goes_back():
    parts = [Part("a>=1", "a"), Part("b>=1", "b")]
    seen: set[str] = set()
    steps = [progress_of(line, parts, seen) for line in (
        "Collecting a>=1", "  Downloading a-1.whl (1 MB)", "Collecting b>=1",
        "Requirement already satisfied: numpy", "Downloading b-1.whl (2 MB)",
        "Installing collected packages: b, a", "Successfully installed a-1 b-1")]
    assert steps[3] is None
    percents = [s[0] for s in steps if s is not None]
    assert percents == sorted(percents) and percents[-1] == 100 and percents[-3] == 80
    assert steps[0][1] == "Finding a>=1" and steps[-2][1].startswith("Installing")


def test_the_dialog_installs_with_progress_and_reports_success(qtbot, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    parts = [Part("kdfakepart_ok>=1.0", "kdfakepart_ok")]
    dialog = InstallPartsDialog("Export as ONNX", parts, command=fake_pip(tmp_path, "kdfakepart_ok", 0))
    qtbot.addWidget(dialog)
    dialog.show()
    assert "kdfakepart_ok" in dialog.text.text() and "pip" not in dialog.text.text()
    with qtbot.waitSignal(dialog.installed, timeout=WAIT):
        dialog.findChild(QPushButton, "installPartsButton").click()
    assert dialog.bar.value() == 100 and dialog.status.text().startswith("Installed")
    assert "Successfully installed kdfakepart_ok-1.0" in dialog.log.toPlainText()
    assert not dialog.isVisible()


def test_a_failed_install_says_why_and_can_be_tried_again(qtbot, tmp_path):
    parts = [Part("kdfakepart_bad>=1.0", "kdfakepart_bad")]
    dialog = InstallPartsDialog("Export as ONNX", parts, command=fake_pip(tmp_path, "kdfakepart_bad", 1))
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start()
    qtbot.waitUntil(lambda: dialog.process is None, timeout=WAIT)
    text = dialog.status.text()
    assert "Installing failed (kdfakepart_bad still missing)" in text
    assert "No matching distribution found" in text
    assert dialog.install_button.isEnabled() and dialog.isVisible()


def test_without_pip_the_dialog_says_to_use_the_installer(qtbot, monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    dialog = InstallPartsDialog("Export as ONNX", [Part("kdfakepart>=1", "kdfakepart")])
    qtbot.addWidget(dialog)
    assert dialog.command is None and not dialog.install_button.isVisible()
    assert "installer" in dialog.text.text()


def test_exporting_to_onnx_with_parts_missing_offers_the_install(qtbot, ctx, tiny, monkeypatch):  # noqa: F811
    r = run_training(tiny_config("causal-lm", tiny["gpt2"], name="small", training={"max_steps": 1}))
    monkeypatch.setattr(actions, "missing_parts", lambda extra: [Part("onnxruntime>=1.32", "onnxruntime")])
    converted = []
    monkeypatch.setattr(actions.RunActionsMixin, "_convert_student",
                        lambda self, row, choice: converted.append(choice.key))
    page = open_page(qtbot, ctx)
    select(qtbot, page, r)
    page.findChild(QAbstractButton, "exportButton").click()
    choose_export(qtbot, page, "onnx-int8")
    dialog = page.install_dialog
    assert dialog is not None and dialog.isVisible() and converted == []
    assert "Export as ONNX int8" in dialog.text.text() and "onnxruntime" in dialog.text.text()
    dialog.installed.emit()  # once installed, the export goes on as chosen
    assert converted == ["onnx-int8"]


def test_the_sweeps_int8_box_offers_the_install_when_parts_are_missing(qtbot, monkeypatch):
    monkeypatch.setattr(tradeoff_setup, "missing_parts", lambda extra: [Part("onnx>=1.23", "onnx")])
    from kdstudio.ui.pages.tradeoff.setup import SweepSetup

    panel = SweepSetup()
    qtbot.addWidget(panel)
    panel.show()
    assert not panel.int8_box.isEnabled() and panel.install_export.isVisible()
    assert "onnx" in panel.int8_box.toolTip() and "pip" not in panel.int8_box.toolTip()
    monkeypatch.setattr(tradeoff_setup, "missing_parts", lambda extra: [])
    panel._export_parts_changed()
    assert panel.int8_box.isEnabled() and not panel.install_export.isVisible()
    assert install_parts.pip_command([Part("x", "x")])[1:4] == ["-m", "pip", "install"]
