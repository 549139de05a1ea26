"""The Models page: loading teachers and students, the layer picker, the compatibility light."""

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox

from kdstudio.core.models import count_params, derive_student, load_model
from tests.conftest import tiny_config
from tests.ui.conftest import open_window

pytestmark = pytest.mark.slow  # every test here takes more than about two seconds


@pytest.fixture
def window(qtbot):
    w = open_window(qtbot, "models", demo=True)
    qtbot.waitUntil(lambda: w.pages["models"].ready, timeout=60000)
    return w


@pytest.fixture
def page(window):
    return window.pages["models"]


def loaded(page, role, source):
    insp = page.teacher_insp if role == "teacher" else page.student_insp
    return insp is not None and insp.info["source"] == str(source)


def visible_error(widget):
    boxes = [b for b in widget.findChildren(QMessageBox, "errorDialog") if b.isVisible()]
    return boxes[0] if boxes else None


def test_fills_from_the_demo_config_and_from_a_replaced_one(window, page, qtbot, tiny):
    # The demo: built-in MiniLM teacher, a 3-layer student derived from it.
    assert page.teacher_chooser.mode_buttons["builtin"].isChecked()
    assert page.teacher_chooser.builtin_combo.currentData() == "all-MiniLM-L6-v2"
    assert page.student_chooser.mode_buttons["derived"].isChecked()
    qtbot.waitUntil(lambda: "22,713,216" in page.teacher_card.values["parameters"].text(),
                    timeout=60000)
    assert [i for i, b in enumerate(page.layer_picker.boxes) if b.isChecked()] == [0, 3, 5]
    assert page.layer_picker.count.value() == 3

    cfg = tiny_config("causal-lm", tiny["gpt2"], student={"layers": 2.0})
    with qtbot.waitSignal(window.ctx.teacher_info, timeout=60000,
                          check_params_cb=lambda info: info is not None):
        window.ctx.replace_config(cfg)
    assert page.teacher_chooser.mode_buttons["folder"].isChecked()
    assert page.teacher_chooser.folder_edit.text() == str(tiny["gpt2"])
    qtbot.waitUntil(lambda: loaded(page, "teacher", tiny["gpt2"]), timeout=60000)
    assert page.teacher_insp.info["task"] == "causal-lm"
    assert [i for i, b in enumerate(page.layer_picker.boxes) if b.isChecked()] == [0, 3]

    # Writing back: a box writes exact layers, the count writes a count.
    page.layer_picker.boxes[1].click()
    assert window.ctx.config.student.layer_indices == [0, 1, 3]
    assert page.layer_picker.count.value() == 3
    assert "Your own pick" in page.layer_picker.pick_label.text()
    page.layer_picker.count.setValue(2)
    assert window.ctx.config.student.layer_indices == []
    assert window.ctx.config.student.layers == 2
    assert [i for i, b in enumerate(page.layer_picker.boxes) if b.isChecked()] == [0, 3]


def test_load_a_teacher_folder_and_the_derived_student_count(window, page, qtbot, tiny):
    chooser = page.teacher_chooser
    chooser.mode_buttons["folder"].click()
    chooser.folder_edit.setText(str(tiny["bert"]))
    def is_bert(info):
        return info is not None and info["source"] == str(tiny["bert"])

    with qtbot.waitSignal(window.ctx.teacher_info, timeout=60000, check_params_cb=is_bert):
        chooser.load_button.click()
    real = load_model(str(tiny["bert"]), "sentence-embedding").model
    assert f"{count_params(real):,}" in page.teacher_card.values["parameters"].text()
    assert window.ctx.config.teacher.name == str(tiny["bert"])
    assert window.settings["last_teacher"] == str(tiny["bert"])

    # The layer picker's figures are those of the student the trainer would derive.
    picker = page.layer_picker
    assert len(picker.boxes) == 4
    for box in picker.boxes:
        if box.isChecked():
            box.click()
            break
    picker.boxes[1].click()
    picks = window.ctx.config.student.layer_indices
    assert len(picks) >= 1 and 1 in picks
    student = derive_student(real, layer_indices=picks).model
    assert f"{count_params(student):,}" in page.student_card.values["parameters"].text()
    speed = page.student_card.values["speedup"].text()
    assert f"{4 / len(picks):.1f}x" in speed and "estimate" in speed

    # A narrower width of a BERT teacher: pruned from its most important channels (not a
    # fresh start), counted on the pruned student's shape.
    assert "fresh start" not in picker.width.itemText(picker.width.findData(16))
    picker.width.setCurrentIndex(picker.width.findData(16))
    picker.width.activated.emit(picker.width.currentIndex())
    assert window.ctx.config.student.hidden_size == 16
    assert picker.width_note.isVisible()
    assert "most important channels" in picker.width_note.text()
    from transformers import AutoConfig

    from kdstudio.core.plan.pruned import pruned_estimate

    pruned = pruned_estimate(window.ctx.config.student, AutoConfig.from_pretrained(
        str(tiny["bert"])), "sentence-embedding")["parameters"]
    assert pruned != count_params(derive_student(real, layers=1.0).model)
    qtbot.waitUntil(lambda: f"{pruned:,}" in
                    page.student_card.values["parameters"].text(), timeout=30000)
    width = page.student_card.values["hidden_size"].text()
    assert width.startswith("16") and "fresh start" not in width
    assert "initialised from the teacher's most important channels" in width


def test_compatibility_red_for_another_tokenizer_green_when_derived(window, page, qtbot, tiny):
    window.ctx.replace_config(tiny_config("causal-lm", tiny["gpt2"]))
    qtbot.waitUntil(lambda: page.compat.level == "ok", timeout=60000)
    assert "fit together" in page.compat.message.text()

    student = page.student_chooser
    student.mode_buttons["folder"].click()
    student.folder_edit.setText(str(tiny["gpt2-othertok"]))
    student.load_button.click()
    qtbot.waitUntil(lambda: page.compat.level == "error", timeout=60000)
    assert "tokenizers differ" in page.compat.message.text()
    assert window.ctx.config.student.name == str(tiny["gpt2-othertok"])
    assert page.layer_picker.isHidden()
    assert "Memory to train it" in page.student_card.values["train_memory_mb"].accessibleName()

    student.mode_buttons["derived"].click()
    assert window.ctx.config.student.name == ""
    qtbot.waitUntil(lambda: page.compat.level == "ok", timeout=60000)
    assert page.layer_picker.isVisible()


def test_missing_folder_is_a_dialog_and_the_field_stays(window, page, qtbot, tmp_path):
    chooser = page.teacher_chooser
    qtbot.waitUntil(lambda: "22,713,216" in page.teacher_card.values["parameters"].text(),
                    timeout=60000)
    chooser.mode_buttons["folder"].click()
    typed = str(tmp_path / "no-such-model")
    chooser.folder_edit.setText(typed)
    chooser.load_button.click()
    qtbot.waitUntil(lambda: visible_error(chooser) is not None, timeout=60000)
    box = visible_error(chooser)
    assert box.windowTitle() == "Teacher could not be loaded"
    assert "no-such-model" in box.text() and "does not exist" in box.text()
    assert chooser.folder_edit.text() == typed
    assert window.ctx.config.teacher.name == "all-MiniLM-L6-v2"
    assert "the run still uses 'all-MiniLM-L6-v2'" in chooser.status.text()
    # The teacher the run still uses stays on the card.
    qtbot.waitUntil(lambda: page.teacher_card.values["parameters"].isVisible())
    assert "22,713,216" in page.teacher_card.values["parameters"].text()
    box.accept()


def test_failed_student_choice_falls_back_to_the_derived_student(window, page, qtbot, tmp_path):
    qtbot.waitUntil(page.is_idle, timeout=60000)
    chooser = page.student_chooser
    chooser.mode_buttons["folder"].click()
    chooser.folder_edit.setText(str(tmp_path))  # a folder, but no config.json in it
    chooser.load_button.click()
    qtbot.waitUntil(lambda: visible_error(chooser) is not None, timeout=60000)
    box = visible_error(chooser)
    assert box.windowTitle() == "Student could not be loaded" and "config.json" in box.text()
    assert window.ctx.config.student.name == ""
    assert "derived from the teacher" in chooser.status.text()
    qtbot.waitUntil(lambda: page.layer_picker.isVisible() and page.compat.level == "ok",
                    timeout=60000)
    box.accept()


def test_task_change_reinspects_with_the_new_task(window, page, qtbot, tiny):
    window.ctx.replace_config(tiny_config("sentence-embedding", tiny["bert"]))
    qtbot.waitUntil(lambda: loaded(page, "teacher", tiny["bert"]), timeout=60000)
    assert page.teacher_insp.info["architecture"] == "BertModel"
    window.pages["method"].task_buttons["sequence-classification"].click()
    qtbot.waitUntil(lambda: page.teacher_insp is not None and
                    page.teacher_insp.info["task"] == "sequence-classification", timeout=60000)
    assert page.teacher_insp.info["architecture"] == "BertForSequenceClassification"
    assert "prepare teacher" in page.teacher_card.notes.text()
    qtbot.waitUntil(lambda: page.compat.level == "ok", timeout=60000)


def test_dropping_a_folder_loads_it_on_that_side(window, page, qtbot, tiny):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tiny["bert-wide"]))])
    centre = page.student_col.mapTo(page, page.student_col.rect().center())
    event = QDropEvent(QPointF(centre), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    page.dropEvent(event)
    assert page.student_chooser.mode_buttons["folder"].isChecked()
    assert page.student_chooser.folder_edit.text() == str(tiny["bert-wide"])
    qtbot.waitUntil(lambda: loaded(page, "student", tiny["bert-wide"]), timeout=60000)
    assert window.ctx.config.student.name == str(tiny["bert-wide"])
    assert window.ctx.config.teacher.name == "all-MiniLM-L6-v2"


def test_trust_remote_code_warns_and_writes(window, page, qtbot):
    chooser = page.teacher_chooser
    assert not chooser.trust.isChecked() and not window.ctx.config.teacher.trust_remote_code
    chooser.trust.click()
    assert window.ctx.config.teacher.trust_remote_code
    qtbot.waitUntil(lambda: any(b.isVisible() for b in chooser.findChildren(QMessageBox,
                                                                            "warningDialog")))
    box = chooser.findChild(QMessageBox, "warningDialog")
    assert box.windowTitle() == "Model code will run"
    box.accept()
    chooser.trust.click()
    assert not window.ctx.config.teacher.trust_remote_code


def test_every_control_is_named(window, page):
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
            if not (w.objectName() and w.accessibleName()):
                missing.append(f"{type(w).__name__} {w.objectName()!r}")
    assert missing == []


def test_download_shows_progress_and_cancel_stops_it(window, page, qtbot, monkeypatch):
    import kdstudio.core.plan.shapes as inspect
    from kdstudio.core.errors import StoppedError
    from kdstudio.core.events import Progress

    qtbot.waitUntil(page.is_idle, timeout=60000)
    seen = {}

    def fake_download(name, task, *, on_event, stop, **kwargs):
        seen["name"] = name
        on_event(Progress(stage="download teacher", current=2, total=5, unit="files"))
        stop.wait(30)  # the Cancel button sets it
        raise StoppedError(f"The download of '{name}' was cancelled.")

    monkeypatch.setattr(inspect, "inspect_model", fake_download)
    chooser = page.teacher_chooser
    chooser.mode_buttons["hub"].click()
    chooser.hub_edit.setText("")
    chooser.load_button.click()  # nothing typed: a dialog says what to do
    qtbot.waitUntil(lambda: visible_error(chooser) is not None)
    assert visible_error(chooser).windowTitle() == "No teacher model id given"
    visible_error(chooser).accept()

    chooser.hub_edit.setText("someone/big-model")
    chooser.load_button.click()
    qtbot.waitUntil(lambda: chooser.progress.maximum() == 5 and chooser.progress.value() == 2,
                    timeout=30000)
    assert chooser.progress_box.isVisible() and chooser.cancel_button.isVisible()
    assert "Downloading" in chooser.progress.format()
    chooser.cancel_button.click()
    assert chooser.status.text() == "Cancelled."
    assert not chooser.progress_box.isVisible()
    qtbot.waitUntil(lambda: window.jobs.active() == 0, timeout=30000)
    assert seen["name"] == "someone/big-model"
    assert window.ctx.config.teacher.name == "all-MiniLM-L6-v2"  # unchanged
    assert visible_error(chooser) is None
