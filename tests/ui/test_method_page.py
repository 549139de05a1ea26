"""The Method page: task and presets write a valid config; advanced settings; the TOML dialog."""

import dataclasses

import tomllib

import pytest
from PySide6.QtWidgets import QApplication, QFileDialog, QLabel, QMessageBox

from kdstudio.core.config import TASKS, config_from_dict, default_config, load_config
from kdstudio.core.tasks import get_task
from kdstudio.ui.pages.method.text import presets_of
from tests.ui.conftest import open_window


@pytest.fixture
def window(qtbot):
    return open_window(qtbot, "method", demo=True)


def visible_error(widget):
    boxes = [b for b in widget.findChildren(QMessageBox, "errorDialog") if b.isVisible()]
    return boxes[0] if boxes else None


@pytest.fixture
def page(window):
    return window.pages["method"]


@pytest.mark.slow
def test_fills_from_the_config_and_on_replace(window, page):
    cfg = window.ctx.config
    assert page.task_buttons["sentence-embedding"].isChecked()
    assert page.preset_buttons[0].isChecked() and page.preset_buttons[0].text() == \
        presets_of("sentence-embedding")[0].label
    assert not page.temperature.isVisible()
    assert page.embedding_loss.currentData() == cfg.method.embedding_loss

    new = default_config("sequence-classification")
    new.method.temperature = 3.5
    new.method.logit_loss = "jsd"
    window.ctx.replace_config(new)
    assert page.task_buttons["sequence-classification"].isChecked()
    assert page.temperature.value() == 3.5 and page.temperature.isVisible()
    assert page.logit_loss.currentData() == "jsd"
    assert page.preset_buttons[0].text() == presets_of("sequence-classification")[0].label
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


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_task_switch_and_presets_give_valid_configs(window, page, qtbot, task):
    if task == window.ctx.config.task:
        page.task_buttons["causal-lm"].click()
    page.task_buttons[task].click()
    cfg = window.ctx.config
    assert cfg.task == task
    assert cfg.method == default_config(task).method
    cfg.validate()
    for i, preset in enumerate(presets_of(task)):
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
    # Teacher preparation is for the families whose teacher needs a trained task head.
    assert prep_form.isRowVisible(prep) == get_task(task).has_task_head
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_every_control_is_named(window, page):
    page.advanced.set_open(True)
    from PySide6.QtWidgets import (
        QAbstractButton,
        QAbstractSpinBox,
        QComboBox,
        QLineEdit,
    )

    missing = []
    for cls in (QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox):
        for w in page.findChildren(cls):
            if type(w.parent()).__name__ in ("QComboBox", "QSpinBox", "QDoubleSpinBox"):
                continue
            if w.isVisibleTo(page) and not (w.objectName() and w.accessibleName()):
                missing.append(f"{type(w).__name__} {w.objectName()!r}")
    assert missing == []


@pytest.mark.slow
def test_method_fields_all_have_a_control(page):
    """Every MethodConfig and GenerationConfig field, and evaluation.baseline, is reachable
    from the page (basic, language-model or advanced)."""
    from kdstudio.core.config import GenerationConfig, MethodConfig
    covered = {k for (s, k) in (*page.advanced.controls, *page.lm.controls) if s == "method"}
    covered |= {"temperature", "logit_loss", "embedding_loss", "layer_pairs"}
    assert {f.name for f in dataclasses.fields(MethodConfig)} == covered
    assert {k for (s, k) in page.lm.controls if s == "generation"} == \
        {f.name for f in dataclasses.fields(GenerationConfig)}
    assert page.baseline.check.objectName() == "evaluation_baseline"


@pytest.mark.slow
def test_language_model_methods_show_for_causal_lm_only_and_explain_themselves(window, page):
    assert not page.lm.isVisible() and page.baseline.isVisible()  # the demo is sentence-embedding
    page.task_buttons["causal-lm"].click()
    assert page.lm.isVisible() and page.baseline.isVisible()
    texts = {name: page.findChild(QLabel, name).text() for name in
             ("methodSequenceLevelText", "methodOnPolicyText", "methodCrossTokenizerText",
              "methodBaselineText")}
    assert "teacher's own" in texts["methodSequenceLevelText"] and \
        "different tokenizers" in texts["methodSequenceLevelText"] and \
        "generation pass" in texts["methodSequenceLevelText"]
    assert "own mistakes" in texts["methodOnPolicyText"] and "lambda" not in texts["methodOnPolicyText"]
    assert "sorts" in texts["methodCrossTokenizerText"] and "need not match" in texts["methodCrossTokenizerText"]
    assert "what the teacher adds" in texts["methodBaselineText"]
    # Generation settings only matter to the methods that generate.
    assert not page.lm.gen_box.isEnabled()
    page.lm.sequence_level.click()
    assert window.ctx.config.method.sequence_level is True
    assert page.lm.gen_box.isEnabled() and page.lm.reuse.isEnabled()
    page.lm.sequence_level.click()
    page.lm.on_policy.setValue(50)  # shown as a percentage of the batches
    assert window.ctx.config.method.on_policy_share == 0.5
    assert page.lm.gen_box.isEnabled() and not page.lm.reuse.isEnabled()
    page.task_buttons["sequence-classification"].click()
    assert not page.lm.isVisible() and window.ctx.config.method.on_policy_share == 0.0
    window.ctx.config.validate()


@pytest.mark.slow
def test_language_model_settings_round_trip_through_toml(window, page, qtbot):
    page.task_buttons["causal-lm"].click()
    lm = page.lm
    lm.sequence_level.click()
    lm.on_policy.setValue(25)
    lm.cross_tokenizer.setValue(0.3)
    values = {"prompt_tokens": 12, "max_new_tokens": 48, "temperature": 0.7, "top_p": 0.9,
              "max_prompts": 500, "batch_size": 16}
    for key, value in values.items():
        lm.gen_rows[key].setValue(value)
    lm.reuse.setText("/runs/earlier/generations.jsonl")
    lm.reuse.editingFinished.emit()
    page.baseline.check.click()
    cfg = window.ctx.config
    assert (cfg.method.sequence_level, cfg.method.on_policy_share, cfg.method.cross_tokenizer_weight) \
        == (True, 0.25, 0.3)
    assert {k: getattr(cfg.generation, k) for k in values} == values
    assert cfg.generation.reuse == "/runs/earlier/generations.jsonl" and cfg.evaluation.baseline
    assert "#x2713" in page.validity.text()

    page.toml_button.click()
    dialog = page.toml_dialog
    qtbot.waitUntil(dialog.isVisible)
    text = dialog.view.toPlainText()
    dialog.accept()
    data = tomllib.loads(text)
    assert data["method"]["sequence_level"] is True and data["generation"]["top_p"] == 0.9
    assert data["evaluation"]["baseline"] is True
    parsed = config_from_dict(data)
    assert parsed.to_dict() == cfg.to_dict()

    # Back into the page: a changed config shows in every control.
    data["method"].update(sequence_level=False, on_policy_share=1.0, cross_tokenizer_weight=0.0)
    data["generation"].update(prompt_tokens=4, temperature=0.0, max_prompts=0, reuse="")
    data["evaluation"]["baseline"] = False
    window.ctx.replace_config(config_from_dict(data))
    assert not lm.sequence_level.isChecked() and lm.on_policy.value() == 100
    assert lm.cross_tokenizer.value() == 0.0 and lm.cross_tokenizer.text() == "0 (off)"
    assert lm.gen_rows["prompt_tokens"].value() == 4
    assert lm.gen_rows["temperature"].text() == "0 (greedy)" and lm.gen_rows["max_prompts"].text() == "all"
    assert lm.reuse.text() == "" and not page.baseline.check.isChecked()
    assert lm.gen_box.isEnabled() and not lm.gen_rows["max_prompts"].isEnabled()


@pytest.mark.slow
def test_cross_tokenizer_preset(window, page):
    page.task_buttons["causal-lm"].click()
    labels = [b.text() for b in page.preset_buttons if b.isVisible()]
    i = labels.index("A teacher with a different vocabulary")
    page.preset_buttons[i].click()
    m = window.ctx.config.method
    assert (m.cross_tokenizer_weight, m.hard_label_weight, m.logit_weight) == (1.0, 1.0, 0.0)
    assert page.lm.cross_tokenizer.value() == 1.0
    assert "sorts" in page.explain.text()
    page.preset_buttons[0].click()  # back to plain logit distillation: the cross weight is off
    assert window.ctx.config.method.cross_tokenizer_weight == 0.0


@pytest.mark.slow
def test_plug_in_terms_get_controls_from_their_fields(window, page):
    """A loss term in core/terms brings its settings to the page without app changes: the
    similarity term's weight, loss and temperature show for sentence encoders only, write
    the config, and its details are enabled only while its weight is on."""
    from kdstudio.core.terms import modules

    fields = {name for term, fs in modules() for name, *_ in fs}
    assert {"similarity_weight", "similarity_loss", "similarity_temperature"} <= fields
    page.advanced.set_open(True)
    weight = page.advanced.controls[("method", "similarity_weight")]
    kind = page.advanced.controls[("method", "similarity_loss")]
    assert page.advanced.plugins.isVisible() and weight.isVisible()
    assert weight.accessibleName() == "Similarity-structure distillation"
    assert kind.accessibleName() == "Compare the similarities by" and "softmax" in kind.toolTip()
    assert [kind.itemText(i)[:3] for i in range(kind.count())] == ["KL:", "Mea"]  # not "kl"
    assert not kind.isEnabled()  # the weight is 0 by default
    weight.setValue(0.5)
    assert window.ctx.config.method.similarity_weight == 0.5
    assert kind.isEnabled()
    kind.setCurrentIndex(kind.findData("mse"))
    kind.activated.emit(kind.currentIndex())
    assert window.ctx.config.method.similarity_loss == "mse"
    # A family the similarity term does not serve hides its controls (the plug-in group
    # stays for the terms that do serve it).
    page.task_buttons["causal-lm"].click()
    assert not weight.isVisible()
