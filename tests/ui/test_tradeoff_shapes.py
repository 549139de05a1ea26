"""The Tradeoff page sweeps sizes × ways of cutting: each way a series of the chart."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from kdstudio.core.sweep.queue import StudentSpec
from tests.conftest import tiny_config
from tests.ui.test_tradeoff_page import RUN, WAIT, tradeoff_window

pytestmark = pytest.mark.slow


def test_sizes_and_ways_of_cutting_become_the_sweeps_students_and_axis(qtbot, tiny):
    w, page = tradeoff_window(qtbot, tiny)
    setup = page.setup
    setup.sizes_edit.setText("0.5, 40%, 0.5")
    assert setup.sizes() == ([0.5, 0.4], "") and not setup.sizes_note.isVisibleTo(setup)
    setup.check_layers([1])
    assert setup.students() == [StudentSpec(layers=1.0), StudentSpec(target=0.5),
                                StudentSpec(target=0.4)]
    setup.axis_combo.setCurrentIndex(setup.axis_combo.findData("shape"))
    # cutting ways apply to sized students only: the layer boxes and other models step aside
    assert setup.students() == [StudentSpec(target=0.5), StudentSpec(target=0.4)]
    assert not setup.layer_boxes[1].isEnabled() and "by size" in setup.layer_boxes[1].toolTip()
    assert not setup.model_edit.isEnabled()
    setup.shape_boxes["both"].setChecked(False)
    assert setup.axis() == ("shape", ["layers", "width"])
    setup.sizes_edit.setText("0.5, big")
    assert setup.sizes() == ([0.5], setup.sizes_note.text())
    assert "'big' is not a share" in setup.sizes_note.text() and setup.sizes_note.isVisibleTo(setup)
    setup.axis_combo.setCurrentIndex(0)
    assert setup.layer_boxes[1].isEnabled() and setup.model_edit.isEnabled()


def test_ways_of_cutting_stay_offered_where_temperature_changes_nothing(qtbot, tiny):
    w, page = tradeoff_window(qtbot, tiny)
    emb = tiny_config("sentence-embedding", tiny["bert"])
    page.setup.set_base(emb)
    model = page.setup.axis_combo.model()
    enabled = {page.setup.axis_combo.itemData(i): model.item(i).isEnabled()
               for i in range(model.rowCount())}
    assert enabled == {"": True, "temperature": False, "method": False, "shape": True}
    assert "changes nothing" in model.item(1).toolTip()


def test_a_tiny_sweep_of_two_ways_draws_a_series_per_way(qtbot, tiny):
    w, page = tradeoff_window(qtbot, tiny)
    for box in page.setup.layer_boxes.values():
        box.setChecked(False)
    page.setup.sizes_edit.setText("0.6")
    page.setup.axis_combo.setCurrentIndex(page.setup.axis_combo.findData("shape"))
    page.setup.shape_boxes["both"].setChecked(False)
    qtbot.waitUntil(lambda: page.plan_label.text().startswith("2 runs,"), timeout=WAIT)
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.confirm_dialog is not None, timeout=WAIT)
    with qtbot.waitSignal(page.queue.done, timeout=RUN) as done:
        page.confirm_dialog.button(QMessageBox.StandardButton.Yes).click()
    assert done.args == ["finished"]
    qtbot.waitUntil(lambda: len(page.results.rows) == 3, timeout=WAIT)
    names = {s.name() for s in page.results.chart.scatters if s.points()}
    assert {"students, layers", "students, width"} <= names
    assert page.results.column_texts(0) == ["teacher", "60% of the teacher", "60% of the teacher"]
    assert sorted(page.results.column_texts(1)[1:]) == ["layers", "width"]
    params = {r.label: r.params for r in page.results.rows if not r.is_teacher}
    assert set(params) == {"60% of the teacher, layers", "60% of the teacher, width"}
    assert params["60% of the teacher, layers"] != params["60% of the teacher, width"]
