"""Runs that never loaded their teacher, in the app: the Compare page says what needs the
teacher itself, loads nothing until asked, and "Load the teacher" then gives answers side by
side; the Train page's fit light counts such a run as the student alone."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QTextBrowser, QWidget

from kdstudio.core.config import default_config
from kdstudio.core.plan.memory import MB, estimate_for_config, format_mb
from kdstudio.core.teacher_cache import delete_cache, list_caches
from kdstudio.core.trainer import run_training
from kdstudio.ui.context import AppContext
from kdstudio.ui.jobs import JobRunner
from kdstudio.ui.pages.compare import page as page_mod
from kdstudio.ui.pages.compare.page import ComparePage
from kdstudio.ui.pages.train.page import TrainPage
from kdstudio.ui.settings import Settings
from kdstudio.ui.worker import TrainingController
from tests.core.test_cache_only import cache_only_config

WAIT = 60000


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """A run whose pass writes the teacher cache, then one that reads it: (home, cfg, both)."""
    home = tmp_path_factory.mktemp("cache-only-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("KDSTUDIO_HOME", str(home))
    try:
        cfg = cache_only_config(tiny["gpt2"], tiny["llama"])
        first = run_training(cfg)  # its pass writes the cache and the teacher's figures
        second = run_training(cfg)  # reads them: the teacher's weights are never read
    finally:
        mp.undo()
    return str(home), cfg, first, second


@pytest.mark.slow
def test_a_cache_only_run_offers_to_load_its_teacher(qtbot, runs, monkeypatch):
    home, cfg, first, second = runs
    monkeypatch.setenv("KDSTUDIO_HOME", home)
    assert second.summary["teacher_targets"]["teacher_weights"] == "never loaded"

    loads = []
    real_job = page_mod.compare_job
    monkeypatch.setattr(page_mod, "compare_job",
                        lambda run_dir, *a: loads.append(run_dir) or real_job(run_dir, *a))
    ctx = AppContext(default_config("causal-lm"), Settings(), JobRunner(), TrainingController())
    page = ComparePage(ctx)
    qtbot.addWidget(page)
    page.resize(1280, 820)
    page.show()
    combo = page.findChild(QWidget, "compareRunCombo")
    combo.setCurrentIndex(combo.findData(str(second.run_dir)))
    qtbot.waitUntil(lambda: ctx.jobs.active() == 0, timeout=WAIT)  # the pinned answers' job

    note = page.findChild(QWidget, "compareTeacherNote")
    text = page.findChild(QWidget, "compareTeacherNoteText").text()
    load = page.findChild(QWidget, "compareLoadTeacherButton")
    compare_button = page.findChild(QWidget, "compareButton")
    mb = second.summary["teacher_size_mb"]
    assert 0 < mb < 1  # a tiny teacher: its size in hundredths of a megabyte
    assert note.isVisible() and load.isVisible() and load.isEnabled()
    assert text.startswith("This run read the teacher's answers from its cache and never "
                           "loaded the teacher. Side-by-side answers on new text need the "
                           f"teacher itself (its weights, {mb:.2f} MB)")
    # Nothing loads until asked, and Compare waits for the teacher.
    assert loads == [] and not compare_button.isEnabled()

    qtbot.mouseClick(load, Qt.MouseButton.LeftButton)
    assert not load.isEnabled()  # loading, in the page's job helper
    qtbot.waitUntil(lambda: compare_button.isEnabled() and ctx.jobs.active() == 0, timeout=WAIT)
    assert loads == [str(second.run_dir)]
    assert not load.isVisible() and "The teacher is loaded" in \
        page.findChild(QWidget, "compareTeacherNoteText").text()

    box = page.findChild(QWidget, "compareInput")
    qtbot.keyClicks(box, "The weather")
    qtbot.mouseClick(compare_button, Qt.MouseButton.LeftButton)
    teacher, student = (page.findChild(QTextBrowser, f"{r}Text") for r in ("teacher", "student"))
    qtbot.waitUntil(lambda: compare_button.isEnabled() and ctx.jobs.active() == 0 and
                    teacher.toPlainText().startswith("The weather"), timeout=WAIT)
    assert student.toPlainText().startswith("The weather")
    assert loads == [str(second.run_dir)] * 2  # the loaded models answered; nothing reloaded

    # The run whose pass wrote the cache let the teacher go: the note says so, and loads nothing.
    combo.setCurrentIndex(combo.findData(str(first.run_dir)))
    qtbot.waitUntil(lambda: ctx.jobs.active() == 0, timeout=WAIT)
    assert note.isVisible() and load.isVisible() and "weights once (for the pass that wrote the cache" in \
        page.findChild(QWidget, "compareTeacherNoteText").text()
    assert len(loads) == 2 and not compare_button.isEnabled()
    # A run that held its teacher throughout has no note.
    page.teacher_note.show_for({"teacher_targets": {"mode": "live", "teacher_weights": "loaded"}})
    assert not note.isVisible()


@pytest.mark.slow
def test_the_fit_light_counts_a_covered_run_as_the_student_alone(qtbot, runs, monkeypatch):
    home, cfg, _, _ = runs
    monkeypatch.setenv("KDSTUDIO_HOME", home)
    ctx = AppContext(cfg, Settings(), JobRunner(), TrainingController())
    page = TrainPage(ctx)  # not shown: estimate_memory is called directly, as its timer would
    qtbot.addWidget(page)
    # The Models page's figures for a 7B teacher in place of the tiny one: its pass alone
    # would need 7e9 x 4 bytes, far more than the tiny student's steps.
    big = {"parameters": 7_000_000_000, "hidden_size": 4096, "layers": 32, "vocab_size": 32000}
    label = page.findChild(QLabel, "memoryEstimate")

    def light():
        label.setText("")
        ctx.teacher_info.emit(big)
        page.estimate_memory()
        qtbot.waitUntil(lambda: "needed" in label.text() and ctx.jobs.active() == 0,
                        timeout=WAIT)
        return label.text()

    covered = estimate_for_config(cfg, big, available_mb=1e9)
    assert covered.parts["teacher weights"] == 0
    assert covered.needed_mb == pytest.approx(1.1 * sum(covered.parts.values()))
    assert covered.needed_mb < 7e9 * 4 / MB  # the student alone
    assert f"about {format_mb(covered.needed_mb)} needed" in light()

    for info in list_caches():  # without the cache, its teacher pass comes first
        delete_cache(info.path)
    uncovered = estimate_for_config(cfg, big, available_mb=1e9)
    assert uncovered.needed_mb > 7e9 * 4 / MB
    assert f"about {format_mb(uncovered.needed_mb)} needed" in light()
