"""The Train page: settings into the config, real short runs with live plots, stop, resume,
pause, errors, the memory estimate and a past run's curves."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

from kdstudio.core.events import Eval, Step
from kdstudio.core.runs import Run
from tests.conftest import tiny_config
from tests.ui.conftest import open_window

RUN = 180000


@pytest.fixture
def window(qtbot):
    w = open_window(qtbot, "train", demo=True)
    w.resize(1280, 820)
    return w


def _page(w):
    return w.pages["train"]


def _click(qtbot, button):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _steps(events):
    return [e for e in events if isinstance(e, Step)]


def _record(w):
    events = []
    w.ctx.run_event.connect(events.append)
    return events


@pytest.mark.slow
def test_settings_are_written_into_the_config(window, qtbot):
    s, t = _page(window).settings, window.ctx.config.training
    s.steps_spin.setValue(123)
    s.batch_spin.setValue(16)
    s.lr_spin.setValue(2e-4)
    assert (t.max_steps, t.batch_size, t.learning_rate) == (123, 16, 2e-4)
    assert s.lr_spin.text() == "2e-4"
    s.unit_combo.setCurrentIndex(1)
    s.unit_combo.activated.emit(1)
    s.epochs_spin.setValue(2.5)
    assert (t.max_steps, t.epochs) == (0, 2.5)
    assert s.epochs_spin.isVisibleTo(s) and not s.steps_spin.isVisibleTo(s)

    assert not s.advanced.body.isVisible()  # advanced settings start folded away
    _click(qtbot, s.advanced.toggle)
    assert s.advanced.body.isVisible()
    i = s.precision_combo.findData("bf16")
    s.precision_combo.setCurrentIndex(i)
    s.precision_combo.activated.emit(i)
    i = s.scheduler_combo.findData("cosine")
    s.scheduler_combo.setCurrentIndex(i)
    s.scheduler_combo.activated.emit(i)
    s.accum_spin.setValue(4)
    s.warmup_spin.setValue(10)
    s.clip_spin.setValue(0.5)
    s.eval_spin.setValue(7)
    s.save_spin.setValue(9)
    s.seed_spin.setValue(5)
    s.device_combo.setCurrentText("cpu")
    assert (t.precision, t.scheduler, t.grad_accum_steps, t.warmup_ratio, t.max_grad_norm,
            t.eval_every, t.save_every, t.seed, t.device) == \
        ("bf16", "cosine", 4, 0.1, 0.5, 7, 9, 5, "cpu")

    window.ctx.replace_config(tiny_config("causal-lm", "some-folder"))
    assert (s.steps_spin.value(), s.batch_spin.value(), s.lr_spin.value()) == (4, 8, 1e-3)
    assert s.unit_combo.currentData() == "steps" and s.device_combo.currentText() == "cpu"


@pytest.mark.slow
def test_a_short_run_draws_every_plot(window, qtbot, tiny):
    w, page = window, _page(window)
    w.ctx.replace_config(tiny_config("causal-lm", tiny["gpt2"], training={"max_steps": 6, "eval_every": 2},
                                     method={"hard_label_weight": 0.5}))
    events = _record(w)
    with qtbot.waitSignal(w.ctx.run_finished, timeout=RUN) as finished:
        _click(qtbot, page.controls.run_button)
        assert not page.controls.run_button.isEnabled() and page.controls.stop_button.isEnabled()
    assert finished.args[0].status == "finished"

    steps = _steps(events)
    components = set(steps[0].losses)
    assert components == {"logit", "hard_label", "total"}
    assert set(page.plots.loss_curves) == components  # one curve per component, made once
    for name, curve in page.plots.loss_curves.items():
        assert list(curve.xData) == [1, 2, 3, 4, 5, 6]
        assert list(curve.yData) == pytest.approx([e.losses[name] for e in steps])
    legend = {label.text for _sample, label in page.plots.loss_legend.items}
    assert legend == {"total", "logits (imitate teacher)", "true labels"}
    for curve in (page.plots.lr_curve, page.plots.speed_curve, page.plots.memory_curve):
        assert len(curve.xData) == 6
    assert list(page.plots.lr_curve.yData) == pytest.approx([e.lr for e in steps])

    assert page.progress.maximum() == 6 and page.progress.value() == 6
    assert page.elapsed_label.text() != "Elapsed \u2013"

    evals = [e for e in events if isinstance(e, Eval)]
    assert list(page.plots.eval_curve.xData) == [e.step for e in evals] == [0, 2, 4, 6]
    assert page.plots.metric_key == "perplexity"
    line = page.plots.teacher_line
    assert line is not None and line.value() == pytest.approx(evals[0].teacher_metrics["perplexity"])
    assert line.label.textItem.toPlainText() == "teacher"
    assert line.pen.style() == Qt.PenStyle.DashLine

    log = page.log.toPlainText()
    assert "Evaluation at step 2: perplexity" in log and "Checkpoint saved at step 6" in log
    assert "Finished." in log
    assert not page.controls.resume_button.isVisible()

    # Opening the finished run again (as the Runs page does) redraws it from metrics.jsonl.
    page.plots.reset()
    w.ctx.open_run(w.ctx.current_run_dir)
    qtbot.waitUntil(lambda: "logit" in page.plots.loss_curves and
                    len(page.plots.loss_curves["logit"].xData) == 6, timeout=RUN)
    assert page.plots.teacher_line is not None and len(page.plots.eval_curve.xData) == 4
    assert page.status.text().startswith("Showing the run") and page.progress.value() == 6


@pytest.mark.slow
def test_stop_keeps_a_checkpoint_and_resume_finishes(window, qtbot, tiny):
    w, page = window, _page(window)
    w.ctx.replace_config(tiny_config("causal-lm", tiny["gpt2"], training={"max_steps": 6, "eval_every": 0}))
    events = _record(w)
    clicked = []

    def stop_at_first_step(e):
        if isinstance(e, Step) and not clicked:
            clicked.append(e.step)
            _click(qtbot, page.controls.stop_button)

    w.ctx.run_event.connect(stop_at_first_step)
    with qtbot.waitSignal(w.ctx.run_finished, timeout=RUN) as stopped:
        _click(qtbot, page.controls.run_button)
    result = stopped.args[0]
    assert result.status == "stopped"
    run = Run(result.run_dir)
    assert run.status() == "stopped" and run.latest_checkpoint() is not None
    done = _steps(events)[-1].step
    assert done < 6
    assert page.controls.resume_button.isVisible() and "Stopped" in page.log.toPlainText()

    events = _record(w)
    with qtbot.waitSignal(w.ctx.run_finished, timeout=RUN) as resumed:
        _click(qtbot, page.controls.resume_button)
    assert resumed.args[0].status == "finished" and str(resumed.args[0].run_dir) == str(run.path)
    assert [e.step for e in _steps(events)] == list(range(done + 1, 7))
    assert run.status() == "finished"
    assert page.progress.value() == page.progress.maximum() == 6
    # The curves include the steps from before the stop, read back from the run's file.
    qtbot.waitUntil(lambda: len(page.plots.loss_curves["total"].xData) == 6, timeout=RUN)
    assert list(page.plots.loss_curves["total"].xData) == [1, 2, 3, 4, 5, 6]
    assert not page.controls.resume_button.isVisible()


@pytest.mark.slow
def test_pause_holds_the_steps_until_continued(window, qtbot, tiny):
    w, page = window, _page(window)
    w.ctx.replace_config(tiny_config("causal-lm", tiny["gpt2"], training={"max_steps": 6, "eval_every": 0}))
    events = _record(w)
    w.ctx.run_event.connect(lambda e: _click(qtbot, page.controls.pause_button)
                            if isinstance(e, Step) and e.step == 1 else None)
    _click(qtbot, page.controls.run_button)
    qtbot.waitUntil(lambda: page.controls.pause_button.text() == "Continue", timeout=RUN)
    assert w.training.is_paused()
    # The step under way when pausing still reports; then the training thread waits.
    qtbot.waitUntil(w.training.is_held, timeout=RUN)
    QApplication.processEvents()  # deliver what it sent before it stopped
    held = len(_steps(events))
    assert held <= 2
    qtbot.waitUntil(lambda: page.progress.value() == held, timeout=RUN)  # drawn at a capped rate
    assert w.training.is_held() and w.training.is_running() and len(_steps(events)) == held
    with qtbot.waitSignal(w.ctx.run_finished, timeout=RUN) as finished:
        _click(qtbot, page.controls.pause_button)
        assert page.controls.pause_button.text() == "Pause"
    assert finished.args[0].status == "finished"
    assert [e.step for e in _steps(events)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_invalid_device_shows_a_dialog_and_the_app_keeps_running(window, qtbot, tiny):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    w, page = window, _page(window)
    w.ctx.replace_config(tiny_config("causal-lm", tiny["gpt2"]))
    page.settings.device_combo.setCurrentText("cuda")
    assert w.ctx.config.training.device == "cuda"
    # The memory line already warns, with a fix.
    qtbot.waitUntil(lambda: page.memory.level == "warning", timeout=RUN)
    assert "no CUDA GPU" in page.memory.label.text()
    with qtbot.waitSignal(w.ctx.run_finished, timeout=RUN) as finished:
        _click(qtbot, page.controls.run_button)
    assert finished.args[0] is None
    qtbot.waitUntil(lambda: w.findChild(QMessageBox, "errorDialog") is not None, timeout=RUN)
    box = w.findChild(QMessageBox, "errorDialog")
    assert box.windowTitle() == "Invalid run configuration" and "no CUDA GPU" in box.text()
    assert w.isVisible() and page.controls.run_button.isEnabled() and not w.training.is_running()
    assert page.settings.device_combo.currentText() == "cuda"  # the input is kept
    assert "Invalid run configuration" in page.log.toPlainText()
    _click(qtbot, page.memory.apply_button)
    assert w.ctx.config.training.device == "auto" and page.settings.device_combo.currentText() == "auto"


@pytest.mark.slow
def test_memory_warning_turns_amber_and_the_suggestion_applies(window, qtbot, tiny, monkeypatch):
    import kdstudio.core.plan.memory as estimate

    monkeypatch.setattr(estimate, "system_available_mb", lambda: 3000.0)
    w, page = window, _page(window)
    w.ctx.replace_config(tiny_config("causal-lm", tiny["gpt2"]))
    qtbot.waitUntil(lambda: page.memory.level == "ok", timeout=RUN)
    assert "free on the CPU" in page.memory.label.text() and "2.9 GB" in page.memory.label.text()
    assert not page.memory.apply_button.isVisible()

    page.settings.batch_spin.setValue(2048)
    page.ctx.set_value("data", "max_length", 512)
    qtbot.waitUntil(lambda: page.memory.level == "warning", timeout=RUN)
    assert "only 2.9 GB is free" in page.memory.label.text()
    assert "Lower the batch size" in page.memory.label.text()
    assert "#fff4d6" in page.memory.styleSheet()  # amber
    assert page.memory.apply_button.isVisible()
    _click(qtbot, page.memory.apply_button)
    t = w.ctx.config.training
    assert t.batch_size < 2048 and t.batch_size * t.grad_accum_steps >= 2048
    assert page.settings.batch_spin.value() == t.batch_size
    qtbot.waitUntil(lambda: page.memory.level == "ok", timeout=RUN)


def test_pinned_inputs_and_the_students_answers(window, qtbot):
    w, page = window, _page(window)
    pinned = page.pinned
    qtbot.keyClicks(pinned.edit, "The weather today is")
    qtbot.keyClick(pinned.edit, Qt.Key.Key_Return)
    qtbot.keyClicks(pinned.edit, "My favourite sport")
    _click(qtbot, pinned.add_button)
    assert w.ctx.config.evaluation.pinned_inputs == ["The weather today is", "My favourite sport"]
    pinned.list.setCurrentRow(0)
    _click(qtbot, pinned.remove_button)
    assert w.ctx.config.evaluation.pinned_inputs == ["My favourite sport"]

    w.ctx.run_event.emit(Eval(step=4, metrics={"perplexity": 12.5}, samples=[
        {"input": "My favourite sport", "student": "is football", "teacher": "is tennis"}]))
    table = page.answers.table
    assert table.rowCount() == 1
    assert [table.item(0, c).text() for c in range(3)] == ["My favourite sport", "is football", "is tennis"]
    assert page.answers.caption.text() == "Answers at step 4:"


@pytest.mark.slow
def test_stop_before_training_offers_nothing_to_resume(qtbot):
    from types import SimpleNamespace

    w = open_window(qtbot, demo=True)
    page = w.pages["train"]
    page._on_run_finished(SimpleNamespace(status="stopped", run_dir=".", summary={}))
    assert not page.controls.resume_button.isVisibleTo(page) and page.controls.resume_dir == ""
    assert "before training began" in page.status.text()
    page._on_run_finished(SimpleNamespace(status="stopped", run_dir="/runs/x", summary={"steps": 3}))
    assert page.controls.resume_button.isVisibleTo(page) and page.controls.resume_dir == "/runs/x"
