"""Traps a non-coder meets in the first hour: each test would have failed before its fix."""

import pytest
from PySide6.QtWidgets import QCheckBox, QLabel, QWidget

from kdstudio.core.config import default_config
from kdstudio.core.events import Finished, Stage, Step
from kdstudio.ui.pages.train.log import describe
from tests.ui.conftest import open_window


@pytest.fixture
def window(qtbot):
    w = open_window(qtbot)
    w.resize(1280, 800)
    return w


def _emit(w, event):
    w.ctx.training.event.emit(event)  # as the training worker's (or a child run's) signal does


# -- 1. The baseline checkbox ---------------------------------------------------------------------
def test_baseline_is_off_and_explained_for_a_task_without_plain_training(window, qtbot):
    window.ctx.replace_config(default_config("sequence-classification"))
    window.show_page("method")
    page = window.pages["method"]
    check = page.findChild(QCheckBox, "evaluation_baseline")
    assert check.isEnabled()
    check.setChecked(True)
    assert window.ctx.config.evaluation.baseline

    page.task_buttons["sentence-embedding"].click()
    assert window.ctx.config.task == "sentence-embedding"
    assert not window.ctx.config.evaluation.baseline and not check.isChecked()
    assert not check.isEnabled()
    tip = check.toolTip()
    assert "Not available" in tip and "evaluation.baseline" not in tip and "=" not in tip
    window.ctx.config.validate()  # the config stays valid: no message in config syntax
    assert "is valid" in page.validity.text()

    page.task_buttons["sequence-classification"].click()
    assert check.isEnabled() and not check.isChecked()


def test_an_opened_config_asking_for_an_impossible_baseline_is_unticked(window):
    cfg = default_config("sentence-embedding")
    cfg.evaluation.baseline = True  # e.g. edited by hand
    window.ctx.replace_config(cfg)
    check = window.pages["method"].findChild(QCheckBox, "evaluation_baseline")
    assert not check.isEnabled() and not check.isChecked()
    assert not window.ctx.config.evaluation.baseline


def test_the_finish_message_recommends_the_baseline_only_where_it_can_run():
    def finish(task):
        text, _level = describe(Finished(status="finished", run_dir="r",
                                         summary={"task": task, "quality_retained": 1.12}))
        return text

    assert "above the teacher" in finish("sentence-embedding")
    assert "baseline" not in finish("sentence-embedding")
    assert "plain-training baseline" in finish("sequence-classification")


# -- 2. Apply suggestion ---------------------------------------------------------------------------
def _suggest(window, batch, accum):
    page = window.pages["train"]
    page.memory.apply_requested.emit({"training.batch_size": batch,
                                      "training.grad_accum_steps": accum})
    return page


def test_the_memory_suggestion_says_what_it_changed_and_the_batch_size_takes_it_back(window):
    window.show_page("train")
    page = window.pages["train"]
    s, t = page.settings, window.ctx.config.training
    s.batch_spin.setValue(32)
    s.accum_spin.setValue(1)
    assert not s.accum_spin.isVisible()  # Advanced settings are folded
    _suggest(window, 4, 8)
    assert (t.batch_size, t.grad_accum_steps) == (4, 8)
    note = page.findChild(QLabel, "suggestionNote")
    assert note.isVisible()  # in view, though accumulation itself is folded away
    assert "batch 4 \u00d7 8 accumulation steps" in note.text()
    assert "the same 32 examples per step" in note.text()

    s.batch_spin.setValue(8)  # the examples per step the user chose are kept
    assert (t.batch_size, t.grad_accum_steps) == (8, 4)
    assert s.accum_spin.value() == 4 and "batch 8 \u00d7 4" in note.text()

    s.batch_spin.setValue(32)  # typed back: no silent 32 batches per step later
    assert (t.batch_size, t.grad_accum_steps) == (32, 1)
    assert s.accum_spin.value() == 1 and not note.isVisible()

    s.batch_spin.setValue(16)  # the suggestion is over: the batch size alone changes
    assert t.grad_accum_steps == 1


def test_the_memory_suggestion_can_be_undone_and_ends_when_accumulation_is_edited(window):
    window.show_page("train")
    page = window.pages["train"]
    s, t = page.settings, window.ctx.config.training
    s.batch_spin.setValue(64)
    s.accum_spin.setValue(2)
    _suggest(window, 8, 16)
    note = page.findChild(QLabel, "suggestionNote")
    assert note.isVisible() and "Undo" in note.text()
    note.linkActivated.emit("undo")
    assert (t.batch_size, t.grad_accum_steps) == (64, 2) and not note.isVisible()
    assert (s.batch_spin.value(), s.accum_spin.value()) == (64, 2)

    _suggest(window, 8, 16)
    s.accum_spin.setValue(3)  # the user takes accumulation into their own hands
    assert not note.isVisible()
    s.batch_spin.setValue(16)
    assert t.grad_accum_steps == 3


# -- 3. The status line follows the run -----------------------------------------------------------
def _step(n, total=200):
    return Step(step=n, total_steps=total, losses={"total": 1.0}, lr=1e-4, samples_per_s=1,
                tokens_per_s=1, memory_mb=0, elapsed_s=n, eta_s=total - n)


def test_the_status_line_follows_the_training_steps(window, qtbot):
    window.show_page("train")
    page = window.pages["train"]
    _emit(window, Stage("evaluate", "teacher and student before distillation"))
    assert page.status.text().startswith("Evaluate")
    _emit(window, _step(1))
    qtbot.waitUntil(lambda: page.status.text() == "Training: step 1 of 200", timeout=5000)
    for n in range(2, 43):
        _emit(window, _step(n))
    qtbot.waitUntil(lambda: page.status.text() == "Training: step 42 of 200", timeout=5000)

    _emit(window, Stage("evaluate", "final measurement of teacher and student"))
    page.plots.flush()  # a redraw after the stage does not bring the old step back
    assert page.status.text() == "Evaluate\u2026 final measurement of teacher and student"

    _emit(window, _step(43))
    page.controls.stopping.emit()  # Stop pressed: the steps still in flight do not hide it
    _emit(window, _step(44))
    page.plots.flush()
    assert page.status.text().startswith("Stopping after the current step")


# -- 4. The empty Compare page's text is whole ---------------------------------------------------
def _whole(label):
    return label.isVisible() and label.height() >= label.heightForWidth(label.width())


def test_the_empty_compare_text_is_not_cut_off(window, qtbot):
    window.show_page("compare")
    page = window.pages["compare"]
    if not page.findChild(QWidget, "compareEmpty").isVisible():
        pytest.skip("the run store here has runs: the Compare page is not empty")
    text = page.findChild(QLabel, "compareEmptyText")
    assert "past runs can be opened from the Runs page." in text.text()
    qtbot.waitUntil(lambda: _whole(text), timeout=2000)  # at 1280 x 800
    page.splitter.setSizes([330, 700])  # a narrow left pane: the text wraps onto more lines
    qtbot.waitUntil(lambda: _whole(text), timeout=2000)
    assert text.width() <= page.left.width()
