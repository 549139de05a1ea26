"""The Train page's GPUs control: hidden behind a reason on a machine without several GPUs;
with the check bypassed (KDSTUDIO_GPUS=2) a 2-process CPU run starts as a child process,
its metrics.jsonl is drawn live, Pause holds it and Stop ends it with one checkpoint."""

import time

import pytest
from PySide6.QtCore import Qt

from kdstudio.core.events import Step
from kdstudio.core.runs import Run
from tests.conftest import tiny_config
from tests.ui.conftest import open_window

RUN = 240000


def _click(qtbot, button):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_one_gpu_or_none_disables_the_control_with_the_reason(qtbot, monkeypatch):
    monkeypatch.setenv("KDSTUDIO_GPUS", "1")
    w = open_window(qtbot, "train")
    gpus = w.pages["train"].gpus
    assert not gpus.spin.isEnabled() and gpus.spin.maximum() == 1
    from PySide6.QtWidgets import QLabel

    assert "one GPU" in gpus.findChild(QLabel, "gpuNote").text()


@pytest.mark.slow
def test_two_process_run_from_the_app_plots_pauses_and_stops(qtbot, monkeypatch, tiny):
    monkeypatch.setenv("KDSTUDIO_GPUS", "2")  # the GPU check bypassed; the run uses the CPU
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    w = open_window(qtbot, "train", demo=True)
    page = w.pages["train"]
    assert page.gpus.spin.isEnabled() and page.gpus.spin.maximum() == 2
    page.gpus.spin.setValue(2)
    assert w.ctx.processes == 2
    w.ctx.replace_config(tiny_config("causal-lm", tiny["gpt2"],
                                     training={"max_steps": 100000, "eval_every": 0,
                                               "save_every": 0},
                                     evaluation={"baseline": False}))
    steps = []
    w.ctx.run_event.connect(lambda e: steps.append(e) if isinstance(e, Step) else None)
    _click(qtbot, page.controls.run_button)
    assert w.training.is_running()
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=RUN)
    # Drawn live from the child's metrics.jsonl.
    qtbot.waitUntil(lambda: "total" in page.plots.loss_curves
                    and len(page.plots.loss_curves["total"].xData) >= 3, timeout=RUN)
    assert page.progress.value() >= 3

    _click(qtbot, page.controls.pause_button)
    assert w.training.is_paused()
    time.sleep(2.0)
    qtbot.wait(600)
    held = len(steps)
    time.sleep(1.5)
    qtbot.wait(600)
    assert len(steps) == held, "Pause did not hold the processes"

    with qtbot.waitSignal(w.ctx.run_finished, timeout=RUN) as finished:
        _click(qtbot, page.controls.stop_button)
    result = finished.args[0]
    assert result.status == "stopped"
    run = Run(result.run_dir)
    assert run.status() == "stopped" and len(run.checkpoints()) == 1
    assert run.summary()["distributed"]["processes"] == 2
    assert steps[-1].step == held
