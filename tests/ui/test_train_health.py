"""Run health on the Train page: alarms in plain words, each opening the setting it names."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPushButton, QWidget

from kdstudio.core.config import default_config
from kdstudio.core.events import Health, Step
from tests.ui.conftest import open_window

UNBALANCED = Health(alarm="unbalanced", step=20,
                    message="The loss terms are out of balance: the label loss is about 300 times "
                    "larger than the teacher's loss.",
                    advice="Let KD Studio balance the terms (method.balance = \"auto\").",
                    setting="method.balance")
RISING = Health(alarm="loss_rising", step=60,
                message="The training loss has risen over the last three evaluation intervals.",
                advice="Lower the learning rate (for example to a third).",
                setting="training.learning_rate")
LABELS = Health(alarm="repetition", step=80, message="The student's answers repeat themselves.",
                advice="Raise method.hard_label_weight.", setting="method.hard_label_weight")


@pytest.fixture
def window(qtbot):
    w = open_window(qtbot, "train")
    w.resize(1280, 820)
    w.activateWindow()
    return w


def _emit(w, event):
    w.ctx.training.event.emit(event)  # as the training worker's (or a child run's) signal does


def _button(page, alarm):
    return page.findChild(QPushButton, f"healthSettingButton_{alarm}")


def test_alarms_show_in_plain_words_and_clear_on_a_new_run(window, qtbot):
    page = window.pages["train"]
    panel = page.findChild(QWidget, "healthPanel")
    assert not panel.isVisible()  # no alarm, no panel
    _emit(window, Step(step=1, total_steps=100, losses={"total": 1.0}, lr=1e-4, samples_per_s=1,
                       tokens_per_s=1, memory_mb=0, elapsed_s=1, eta_s=1))
    _emit(window, UNBALANCED)
    _emit(window, RISING)
    _emit(window, RISING)  # each alarm is shown once
    assert panel.isVisible() and len(panel.entries) == 2
    texts = [label.text() for label in panel.findChildren(QLabel)]
    assert any(UNBALANCED.message in t for t in texts) and any(RISING.advice in t for t in texts)
    assert "2 problems" in panel.findChild(QLabel, "healthTitle").text()
    log = page.findChild(QWidget, "logPane").toPlainText()
    assert UNBALANCED.message in log and RISING.advice in log
    assert _button(page, "unbalanced").isVisible() and "balance" in _button(page, "unbalanced").text()

    window.ctx.run_started.emit()  # a new run starts with no alarms
    assert not panel.isVisible() and panel.entries == {}


def test_an_alarms_button_opens_the_method_setting_it_names(window, qtbot):
    page = window.pages["train"]
    _emit(window, UNBALANCED)
    _emit(window, LABELS)
    method = window.pages["method"]
    assert not method.findChild(QWidget, "methodAdvancedBody").isVisibleTo(method)  # folded away
    qtbot.mouseClick(_button(page, "unbalanced"), Qt.MouseButton.LeftButton)
    assert window.current_page_key() == "method"
    control = method.findChild(QWidget, "method_balance")
    assert method.findChild(QWidget, "methodAdvancedBody").isVisible() and control.isVisible()
    assert window.focusWidget() is control

    # The true labels' weight means nothing to a sentence encoder: the window says so.
    window.show_page("train")
    qtbot.mouseClick(_button(page, "repetition"), Qt.MouseButton.LeftButton)
    assert window.current_page_key() == "method"
    assert "not used" in window.statusBar().currentMessage()
    # For a language model it is there, in the folded section, and gets the focus.
    window.ctx.replace_config(default_config("causal-lm"))
    method.advanced.set_open(False)
    window.show_page("train")
    qtbot.mouseClick(_button(page, "repetition"), Qt.MouseButton.LeftButton)
    assert window.current_page_key() == "method" and method.advanced.body.isVisible()
    assert window.focusWidget() is method.findChild(QWidget, "method_hard_label_weight")


def test_an_alarms_button_opens_a_train_setting_and_unfolds_its_section(window, qtbot):
    page = window.pages["train"]
    window.show_page("models")
    _emit(window, RISING)
    qtbot.mouseClick(_button(page, "loss_rising"), Qt.MouseButton.LeftButton)
    assert window.current_page_key() == "train"
    assert window.focusWidget() is page.findChild(QWidget, "learningRateSpin")
    assert not page.settings.advanced.body.isVisible()
    # A setting in the folded "Advanced settings" unfolds them (the same way for every key).
    assert window.show_setting("training.eval_every")
    assert page.settings.advanced.body.isVisible()
    assert window.focusWidget() is page.findChild(QWidget, "evalEverySpin")
    # A key no page shows: the window says so instead of failing.
    assert not window.show_setting("training.no_such_key")
    assert "no_such_key" in window.statusBar().currentMessage()


# The task whose run can raise each alarm that names a setting only some tasks have.
ALARM_TASK = {"repetition": "causal-lm", "entropy_collapse": "causal-lm",
              "embedding_collapse": "sentence-embedding", "worse_than_plain": "causal-lm"}


def test_every_alarm_shows_its_advice_and_opens_its_setting(window, qtbot):
    """Each alarm the watch can raise (one of each, from the patterns that provoke them): the
    panel shows its advice, and its button focuses the setting's own control, on a run of a
    task where the alarm can happen."""
    from kdstudio.ui.widgets.reveal import find_control
    from tests.core.test_health import one_of_each

    page = window.pages["train"]
    panel = page.findChild(QWidget, "healthPanel")
    alarms = one_of_each()
    assert len(alarms) == 9
    for alarm, h in alarms.items():
        config = default_config(ALARM_TASK.get(alarm, "causal-lm"))
        assert config.training.max_steps == 0
        window.ctx.replace_config(config)
        window.ctx.run_started.emit()
        window.show_page("train")
        _emit(window, h)
        entry = panel.entries[alarm]
        assert entry.advice.isVisibleTo(panel) and h.advice in entry.advice.text(), alarm
        # A run counted in epochs (these defaults) trains for fewer steps through its epochs.
        key = "training.epochs" if h.setting == "training.max_steps" else h.setting
        assert entry.setting == key
        qtbot.mouseClick(_button(page, alarm), Qt.MouseButton.LeftButton)
        control = find_control(window.pages[window.current_page_key()], key)
        assert control is not None and window.focusWidget() is control, (alarm, key)
