"""The Method page: task and presets write a valid config; advanced settings; the TOML dialog."""

import dataclasses
import tomllib

import pytest
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from kdstudio.core.config import TASKS, config_from_dict, default_config, load_config
from tests.ui.conftest import open_window
from kdstudio.ui.widgets.method_text import PRESETS


@pytest.fixture
def window(qtbot):
    return open_window(qtbot, "method", demo=True)


def visible_error(widget):
    boxes = [b for b in widget.findChildren(QMessageBox, "errorDialog") if b.isVisible()]
    return boxes[0] if boxes else None


@pytest.fixture
def page(window):
    return window.pages["method"]


def test_fills_from_the_config_and_on_replace(window, page):
    cfg = window.ctx.config
    assert page.task_buttons["sentence-embedding"].isChecked()
    assert page.preset_buttons[0].isChecked() and page.preset_buttons[0].text() == \
        PRESETS["sentence-embedding"][0].label
    assert not page.temperature.isVisible()
    assert page.embedding_loss.currentData() == cfg.method.embedding_loss

    new = default_config("sequence-classification")
    new.method.temperature = 3.5
    new.method.logit_loss = "jsd"
    window.ctx.replace_config(new)
    assert page.task_buttons["sequence-classification"].isChecked()
    assert page.temperature.value() == 3.5 and page.temperature.isVisible()
    assert page.logit_loss.currentData() == "jsd"
    assert page.preset_buttons[0].text() == PRESETS["sequence-classification"][0].label
    assert page.preset_buttons[0].isChecked()
    page.advanced.set_open(True)
    assert page.advanced.controls[("method", "beta")].isEnabled()  # jsd uses beta
    assert not page.advanced.controls[("method", "alpha")].isEnabled()

    # And back: the controls write the fields they show.
    page.temperature.setValue(4.0)
    assert window.ctx.config.method.temperature == 4.0
    page.logit_loss.setCurrentIndex(page.logit_loss.findData("reverse_kl"))
    page.logit_loss.activated.emit(page.logit_loss.currentIndex())
    assert window.ctx.config.method.logit_loss == "reverse_kl"


@pytest.mark.parametrize("task", TASKS)
def test_task_switch_and_presets_give_valid_configs(window, page, qtbot, task):
    if task == window.ctx.config.task:
        page.task_buttons["causal-lm"].click()
    page.task_buttons[task].click()
    cfg = window.ctx.config
    assert cfg.task == task
    assert cfg.method == default_config(task).method
    cfg.validate()
    for i, preset in enumerate(PRESETS[task]):
        page.preset_buttons[i].click()
        assert page.preset_buttons[i].isChecked()
        for key, value in preset.values().items():
            assert getattr(window.ctx.config.method, key) == value, key
        window.ctx.config.validate()
        assert "valid" in page.validity.text() and "#x2717" not in page.validity.text()
    # Controls only offer what the task allows.
    page.advanced.set_open(True)
    rows = page.advanced.rows
    emb_form, emb = rows[("method", "embedding_weight")]
    logit_form, logit = rows[("method", "logit_weight")]
    assert emb_form.isRowVisible(emb) == (task == "sentence-embedding")
    assert logit_form.isRowVisible(logit) == (task != "sentence-embedding")
    prep_form, prep = rows[("teacher", "prepare")]
    assert prep_form.isRowVisible(prep) == (task == "sequence-classification")
    assert page.temperature.isVisible() == (task != "sentence-embedding")


def test_custom_weights_and_all_zero_is_reported(window, page):
    page.advanced.set_open(True)
    spin = page.advanced.controls[("method", "hidden_weight")]
    spin.setValue(0.7)
    assert window.ctx.config.method.hidden_weight == pytest.approx(0.7)
    assert page.custom_button.isVisible() and page.custom_button.isChecked()
    assert page.advanced.pairs.isEnabled()  # pairs only matter with a hidden weight
    page.advanced.controls[("method", "hidden_weight")].setValue(0.0)
    page.advanced.controls[("method", "embedding_weight")].setValue(0.0)
    assert "would learn nothing" in page.validity.text()
    page.preset_buttons[0].click()
    assert "#x2713" in page.validity.text()


def test_layer_pairs_parse_and_bad_input_gets_a_dialog(window, page, qtbot):
    page.preset_buttons[1].click()  # embeddings and hidden layers
    page.advanced.set_open(True)
    edit = page.advanced.pairs
    edit.setText("1:2, 2:4")
    edit.editingFinished.emit()
    assert window.ctx.config.method.layer_pairs == [[1, 2], [2, 4]]
    edit.setText("1:2, two:4")
    edit.editingFinished.emit()
    qtbot.waitUntil(lambda: visible_error(page) is not None)
    box = visible_error(page)
    assert box.windowTitle() == "Layer pairs not understood" and "'two:4'" in box.text()
    assert edit.text() == "1:2, two:4"  # left as typed
    assert window.ctx.config.method.layer_pairs == [[1, 2], [2, 4]]
    box.accept()


def test_toml_dialog_shows_the_config_saves_and_copies(window, page, qtbot, tmp_path, monkeypatch):
    page.task_buttons["causal-lm"].click()
    page.preset_buttons[1].click()
    page.temperature.setValue(2.5)
    page.toml_button.click()
    dialog = page.toml_dialog
    qtbot.waitUntil(dialog.isVisible)
    assert dialog.objectName() == "tomlDialog"
    text = dialog.view.toPlainText()
    parsed = config_from_dict(tomllib.loads(text))
    assert parsed.to_dict() == window.ctx.config.to_dict()
    assert parsed.method.temperature == 2.5 and parsed.method.hard_label_weight == 0.5

    target = tmp_path / "my-run.toml"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    dialog.save_button.click()
    assert load_config(target).to_dict() == window.ctx.config.to_dict()
    assert str(target) in dialog.status.text()
    dialog.copy_button.click()
    assert QApplication.clipboard().text() == text
    dialog.accept()


def test_toml_save_failure_is_a_dialog(window, page, qtbot, tmp_path, monkeypatch):
    page.toml_button.click()
    dialog = page.toml_dialog
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(blocker / "sub" / "run.toml"), ""))
    dialog.save_button.click()
    qtbot.waitUntil(lambda: visible_error(dialog) is not None)
    box = visible_error(dialog)
    assert box.windowTitle() == "Could not save the config"
    box.accept()
    dialog.accept()


def test_every_control_is_named(window, page):
    page.advanced.set_open(True)
    from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit

    missing = []
    for cls in (QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox):
        for w in page.findChildren(cls):
            if type(w.parent()).__name__ in ("QComboBox", "QSpinBox", "QDoubleSpinBox"):
                continue
            if w.isVisibleTo(page) and not (w.objectName() and w.accessibleName()):
                missing.append(f"{type(w).__name__} {w.objectName()!r}")
    assert missing == []


def test_method_fields_all_have_a_control():
    """Every MethodConfig field is reachable from the page (basic or advanced)."""
    from kdstudio.core.config import MethodConfig
    from kdstudio.ui.widgets.method_advanced import COMBOS, SPINS

    covered = {k for (s, k) in (*SPINS, *COMBOS) if s == "method"}
    covered |= {"temperature", "logit_loss", "embedding_loss", "layer_pairs"}
    assert {f.name for f in dataclasses.fields(MethodConfig)} == covered
