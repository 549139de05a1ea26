"""The derived student's layer picker: how many teacher layers to keep, which ones, what width.

A count writes ``student.layers`` (kept layers evenly spaced, as DistilBERT's were);
clicking layer boxes writes the exact ``student.layer_indices``; the width writes
``student.hidden_size``. It needs the loaded teacher's info (its layer count and widths).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QToolButton,
    QWidget,
)

BOXES_PER_ROW = 12
# As core.models.evenly_spaced keeps them.
COUNT_TIP = ("Fewer layers: a smaller, faster student that keeps less of the teacher's quality. "
             "Kept layers are spread evenly: with two or more, the first and the last are among "
             "them; a single kept layer is the teacher's last.")
FRESH_NOTE = ("A narrower width cannot start from the teacher's weights: the student begins "
              "from random values (fresh initialisation) and needs much more training and data "
              "to catch up.")
PRUNED_NOTE = ("A narrower student is initialised from the teacher's most important channels "
               "(measured on the training data when the run starts), so it starts ahead, but "
               "it keeps less of the teacher's quality than the full width.")
FRESH_TIP = ("A narrower student is smaller and faster still, but it cannot reuse the "
             "teacher's weights: it starts from random weights.")
PRUNED_TIP = ("A narrower student is smaller and faster still; it keeps the teacher's most "
              "important channels and heads.")


def kept_layers(n_teacher: int, layers: float, layer_indices: list[int]) -> list[int]:
    """The config's kept layers, clamped to the teacher (the engine raises on bad values)."""
    # torch is loaded by now (a teacher was inspected), so this import costs nothing.
    from kdstudio.core.models import evenly_spaced

    picks = sorted(i for i in layer_indices if 0 <= i < n_teacher)
    if picks:
        return picks
    k = int(layers) if layers >= 1 else max(1, round(layers * n_teacher))
    return evenly_spaced(n_teacher, min(max(k, 1), n_teacher))


class LayerPicker(QGroupBox):
    """Emits ``edited()`` after the user changed the derived student's shape."""

    edited = Signal()

    def __init__(self, ctx: Any, parent: QWidget | None = None):
        super().__init__("Derived student: which teacher layers to keep", parent)
        self.ctx = ctx
        self.setObjectName("layerPicker")
        self.teacher: dict[str, Any] | None = None
        self.boxes: list[QToolButton] = []
        self._filling = False

        form = QFormLayout(self)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.waiting = QLabel("Load the teacher to choose its layers.")
        self.waiting.setObjectName("layerPickerWaiting")
        form.addRow(self.waiting)

        count_row = QHBoxLayout()
        self.count = QSpinBox()
        self.count.setObjectName("studentLayerCount")
        self.count.setAccessibleName("Number of teacher layers the student keeps")
        self.count.setToolTip(COUNT_TIP)
        self.count.setKeyboardTracking(False)
        self.count.valueChanged.connect(self._count_changed)
        self.of_label = QLabel()
        self.even_button = QPushButton("Spread evenly")
        self.even_button.setObjectName("studentLayersEvenButton")
        self.even_button.setAccessibleName("Keep evenly spaced layers")
        self.even_button.setToolTip("Go back to evenly spaced layers for this count.")
        self.even_button.clicked.connect(lambda: self._write_count(self.count.value()))
        count_row.addWidget(self.count)
        count_row.addWidget(self.of_label)
        count_row.addStretch(1)
        count_row.addWidget(self.even_button)
        form.addRow("Layers to keep:", count_row)

        self.grid_host = QWidget()
        self.grid_host.setObjectName("studentLayerBoxes")
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(4)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignLeft)
        # Kept layers must stand out at a glance from dropped ones.
        self.grid_host.setStyleSheet(
            "QToolButton { border: 1px solid palette(mid); border-radius: 4px; padding: 4px 6px;"
            " background: palette(base); color: palette(text); }"
            "QToolButton:checked { background: #2f6fbd; border-color: #204f88; color: white;"
            " font-weight: bold; }")
        form.addRow("Teacher layers:", self.grid_host)
        self.pick_label = QLabel()
        self.pick_label.setObjectName("studentLayersPick")
        self.pick_label.setWordWrap(True)
        form.addRow("", self.pick_label)

        self.width = QComboBox()
        self.width.setObjectName("studentWidthCombo")
        self.width.setAccessibleName("Student width (hidden size)")
        self.width.setToolTip(FRESH_TIP)
        self.width.activated.connect(self._width_changed)
        form.addRow("Width:", self.width)
        self.width_note = QLabel(FRESH_NOTE)
        self.width_note.setObjectName("studentWidthNote")
        self.width_note.setWordWrap(True)
        self.width_note.setStyleSheet("color: #a86b00;")
        form.addRow("", self.width_note)
        self.form = form
        self.set_teacher(None)

    # -- filling ---------------------------------------------------------------------------
    def set_teacher(self, info: dict[str, Any] | None) -> None:
        self.teacher = info
        ready = info is not None and bool(info.get("layer_params"))
        self.form.setRowVisible(0, not ready)
        for row in range(1, self.form.rowCount()):
            self.form.setRowVisible(row, ready)
        if not ready:
            if info is not None:
                self.waiting.setText("KD Studio cannot find this teacher's layer list, so a "
                                     "student cannot be derived from it; choose a student model.")
            return
        n = info["layers"]
        for b in self.boxes:
            self.grid.removeWidget(b)
            b.hide()
            b.deleteLater()
        self.boxes = []
        for i in range(n):
            b = QToolButton()
            b.setText(str(i))
            b.setCheckable(True)
            b.setObjectName(f"studentLayerBox{i}")
            b.setAccessibleName(f"Keep teacher layer {i}")
            b.setToolTip(f"Teacher layer {i} ({info['layer_params'][i]:,} parameters). "
                         "Click to keep or drop it.")
            b.setMinimumWidth(34)
            b.toggled.connect(self._box_toggled)
            self.grid.addWidget(b, i // BOXES_PER_ROW, i % BOXES_PER_ROW)
            self.boxes.append(b)
        self.count.blockSignals(True)
        self.count.setRange(1, n)
        self.count.blockSignals(False)
        self.of_label.setText(f"of the teacher's {n}")
        self.width.clear()
        hidden = info["hidden_size"]
        self.width.addItem(f"{hidden}, the teacher's (starts from its weights)", 0)
        pruned = bool(info.get("prunable"))
        narrower = "narrower: the teacher's best channels" if pruned else "narrower: fresh start"
        for w in sorted(info.get("valid_widths", []), reverse=True):
            if w < hidden:
                self.width.addItem(f"{w} ({narrower})", w)
        self.width_note.setText(PRUNED_NOTE if pruned else FRESH_NOTE)
        self.width_note.setStyleSheet("" if pruned else "color: #a86b00;")
        self.width.setToolTip(PRUNED_TIP if pruned else FRESH_TIP)
        self.refresh()

    def refresh(self) -> None:
        """Show the config's layers and width (after any change from elsewhere)."""
        if self.teacher is None or not self.boxes:
            return
        s = self.ctx.config.student
        kept = self.kept()
        self._filling = True
        for i, b in enumerate(self.boxes):
            b.setChecked(i in kept)
        self.count.blockSignals(True)
        self.count.setValue(len(kept))
        self.count.blockSignals(False)
        idx = self.width.findData(s.hidden_size)
        if idx < 0:
            self.width.addItem(f"{s.hidden_size} (not a valid width for this teacher)",
                               s.hidden_size)
            idx = self.width.count() - 1
        self.width.setCurrentIndex(idx)
        self._filling = False
        bad = [i for i in s.layer_indices if i >= self.teacher["layers"]]
        if bad:
            text = (f"The config names teacher layer(s) {bad}, but this teacher has "
                    f"{self.teacher['layers']} (0 to {self.teacher['layers'] - 1}); pick again.")
        elif s.layer_indices:
            text = f"Your own pick: teacher layers {', '.join(map(str, kept))}."
        else:
            text = (f"Evenly spaced: teacher layers {', '.join(map(str, kept))}, plus the "
                    "teacher's embeddings and output head.")
        self.pick_label.setText(text)
        if s.target_size:  # the size control's planner picks the layers (models/size.py)
            self.pick_label.setText("The target size below picks the layers; set it to Off "
                                    "to choose them here.")
        for w in (self.count, self.grid_host, self.width):
            w.setEnabled(not s.target_size)
        self.even_button.setEnabled(bool(s.layer_indices) and not s.target_size)
        narrow = s.hidden_size not in (0, self.teacher["hidden_size"])
        self.form.setRowVisible(self.form.rowCount() - 1, narrow)

    def kept(self) -> list[int]:
        s = self.ctx.config.student
        return kept_layers(self.teacher["layers"], s.layers, list(s.layer_indices))

    # -- user edits ------------------------------------------------------------------------
    def _count_changed(self, value: int) -> None:
        if not self._filling:
            self._write_count(value)

    def _write_count(self, value: int) -> None:
        self.ctx.set_value("student", "layer_indices", [])
        self.ctx.set_value("student", "layers", float(value))
        self.refresh()
        self.edited.emit()

    def _box_toggled(self, _checked: bool) -> None:
        if self._filling:
            return
        picks = [i for i, b in enumerate(self.boxes) if b.isChecked()]
        if not picks:  # a student needs at least one layer: undo the last click
            self.refresh()
            self.pick_label.setText("A student needs at least one layer.")
            return
        self.ctx.set_value("student", "layer_indices", picks)
        self.refresh()
        self.edited.emit()

    def _width_changed(self, _index: int) -> None:
        self.ctx.set_value("student", "hidden_size", int(self.width.currentData() or 0))
        self.refresh()
        self.edited.emit()
