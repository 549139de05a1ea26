"""The app's side of the teacher cache: the Train page says live or cache and why, the
Method page sets it, and the Runs page lists the caches and deletes them."""

import pytest
from PySide6.QtWidgets import QLabel, QMessageBox

from kdstudio.core.teacher_cache import list_caches
from kdstudio.core.trainer import run_training
from kdstudio.ui.pages.runs.caches import TeacherCachesDialog
from tests.conftest import tiny_config
from tests.ui.conftest import open_window
from tests.ui.test_runs_page import ctx, open_page, refresh, select  # noqa: F401 - fixtures


@pytest.mark.slow
def test_the_train_page_says_where_the_teachers_answers_come_from(qtbot):
    window = open_window(qtbot, "train", demo=True)  # the sentence-embedding demo
    page = window.pages["train"]
    line = page.findChild(QLabel, "teacherSourceLine")
    qtbot.waitUntil(lambda: line.text() != "", timeout=10000)
    assert line.text().startswith("Teacher: live") and "language models" in line.text()
    from kdstudio.core.config import default_config

    cfg = default_config("causal-lm")
    window.ctx.replace_config(cfg)
    page.estimate_memory()
    assert "if one exists" in line.text()
    method = window.pages["method"]
    method.advanced.set_open(True)
    combo = method.advanced.controls[("teacher", "cache")]
    combo.setCurrentIndex(combo.findData("always"))
    combo.activated.emit(combo.currentIndex())
    assert window.ctx.config.teacher.cache == "always"
    page.estimate_memory()
    assert line.text().startswith("Teacher: cache") and "one teacher pass" in line.text()


@pytest.mark.slow
def test_the_runs_page_lists_teacher_caches_and_deletes_them(qtbot, ctx, tiny, monkeypatch):  # noqa: F811
    cfg = tiny_config("causal-lm", tiny["gpt2"], name="cached", training={"max_steps": 2})
    cfg.teacher.cache = "always"
    result = run_training(cfg)
    page = open_page(qtbot, ctx)
    refresh(qtbot, page)
    select(qtbot, page, result)
    assert "teacher cache" in page.details.info_label.text()
    assert "Teacher: cache" in page.details.info_label.toolTip()

    page.findChild(type(page.buttons["openButton"]), "cachesButton").click()
    dialog = page.caches_dialog
    assert isinstance(dialog, TeacherCachesDialog) and dialog.isVisible()
    assert dialog.table.rowCount() == 1
    assert dialog.table.item(0, 1).text() == str(result.summary["teacher_targets"]["k"])
    assert result.run_dir.name in dialog.table.item(0, 6).text()
    assert "1 cache(s)" in dialog.total.text()
    assert not dialog.delete_button.isEnabled()
    dialog.table.selectRow(0)
    assert dialog.delete_button.isEnabled()
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.No)
    dialog.delete_button.click()
    assert len(list_caches()) == 1  # said no
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: QMessageBox.StandardButton.Yes)
    dialog.table.selectRow(0)
    dialog.delete_button.click()
    assert list_caches() == [] and dialog.table.rowCount() == 0
    assert "No teacher caches yet" in dialog.total.text()
    dialog.close()
