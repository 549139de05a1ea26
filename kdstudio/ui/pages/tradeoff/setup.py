"""The Tradeoff page's set-up: which students to distill, and an optional second axis.

Derived students are ticked by layer count (1 to the teacher's count minus one); other
students are Hub ids, folders or built-in names added to a list. The second axis is a set
of temperatures or logit losses. A box asks for each student's int8 ONNX export too.
``students()``, ``axis()`` and ``quantize_int8()`` hand them to the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.config import LOGIT_LOSSES
from kdstudio.core.sweep.queue import StudentSpec, SweepError
from kdstudio.ui.widgets.common import named
from kdstudio.ui.widgets.install_parts import InstallPartsDialog, missing_parts

BOXES_PER_ROW = 6
# On two lines: a check box does not wrap, and one line would widen the whole panel.
INT8_TEXT = "Also export each student as int8 ONNX\n(smaller, usually a little less accurate)"
AXES = [("", "None"), ("temperature", "Temperatures"), ("method", "Methods (logit losses)"),
        ("shape", "Ways of cutting (layers, width, both)")]
# The axes that change only the logit loss: no use where the method distills no probabilities.
LOGIT_AXES = ("temperature", "method")
SHAPE_WORDS = {"layers": "Fewer layers (whole layers dropped)",
               "width": "Narrower layers (heads, neurons, channels pruned)",
               "both": "Both (fewer and narrower layers)"}


def default_layers(n: int) -> list[int]:
    """Layer counts ticked at first: all of them for a shallow teacher, else four spread out
    (1, 2, 3, 4 of 6; 2, 4, 6, 8 of 12)."""
    counts = list(range(1, n))
    if len(counts) <= 4:
        return counts
    return sorted({max(1, round(n * f)) for f in (1 / 6, 1 / 3, 1 / 2, 2 / 3)})


class SweepSetup(QWidget):
    """Emits ``changed()`` whenever the students or the second axis change."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("sweepSetup")
        self.teacher_layers: int | None = None
        self.layer_boxes: dict[int, QCheckBox] = {}

        self.base_label = QLabel()
        self.base_label.setObjectName("sweepBaseLabel")
        self.base_label.setWordWrap(True)
        self.base_label.setTextFormat(Qt.TextFormat.RichText)

        derived = QGroupBox("Students derived from the teacher (layers kept)")
        derived.setObjectName("derivedStudentsBox")
        dlay = QVBoxLayout(derived)
        self.layers_note = QLabel("Reading the teacher's layers\u2026")
        self.layers_note.setObjectName("sweepLayersNote")
        self.layers_note.setWordWrap(True)
        self.layers_note.setStyleSheet("color: #666666;")
        self.layers_grid = QGridLayout()
        self.layers_grid.setHorizontalSpacing(14)
        dlay.addWidget(self.layers_note)
        dlay.addLayout(self.layers_grid)
        sizes_row = QHBoxLayout()
        sizes_label = QLabel("Or by size, as shares of the teacher's parameters:")
        sizes_label.setObjectName("sweepSizesLabel")
        sizes_label.setWordWrap(True)
        self.sizes_edit = named(QLineEdit(), "sweepSizesEdit", "Student sizes",
                                "Each share is a student pruned from the teacher to that share of "
                                "its parameters, keeping the teacher's most important layers, "
                                "attention heads and neurons; e.g. 0.3, 0.5, 0.7. How it is cut "
                                "(fewer layers, narrower layers or both) is the Models page's "
                                "choice, or the second axis 'Ways of cutting'.")
        self.sizes_edit.setPlaceholderText("e.g. 0.3, 0.5, 0.7")
        self.sizes_edit.textChanged.connect(self._sizes_changed)
        sizes_row.addWidget(sizes_label, 1)
        sizes_row.addWidget(self.sizes_edit, 1)
        self.sizes_note = QLabel("")
        self.sizes_note.setObjectName("sweepSizesNote")
        self.sizes_note.setWordWrap(True)
        self.sizes_note.setStyleSheet("color: #c62828;")
        self.sizes_note.hide()
        dlay.addLayout(sizes_row)
        dlay.addWidget(self.sizes_note)

        others = QGroupBox("Other students (Hub id, folder or built-in name)")
        others.setObjectName("otherStudentsBox")
        olay = QVBoxLayout(others)
        row = QHBoxLayout()
        self.model_edit = named(QLineEdit(), "sweepModelEdit", "Other student model",
                                "A Hugging Face Hub id (e.g. distilgpt2), a local folder, or a "
                                "built-in model name. Press Enter or Add.")
        self.model_edit.setPlaceholderText("e.g. distilgpt2 or /path/to/model")
        self.model_edit.returnPressed.connect(self.add_model)
        self.add_button = named(QPushButton("Add"), "sweepAddModelButton", "Add student model",
                                "Add this model to the sweep's students.")
        self.add_button.clicked.connect(self.add_model)
        self.browse_button = named(QPushButton("Folder\u2026"), "sweepBrowseModelButton",
                                   "Choose a model folder", "Pick a model folder saved with "
                                   "save_pretrained.")
        self.browse_button.clicked.connect(self._browse)
        row.addWidget(self.model_edit, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.browse_button)
        self.model_list = named(QListWidget(), "sweepModelList", "Other student models",
                                "These models are distilled too, each as one student.")
        self.model_list.setMaximumHeight(56)
        self.remove_button = named(QPushButton("Remove"), "sweepRemoveModelButton",
                                   "Remove student model", "Remove the selected model.")
        self.remove_button.clicked.connect(self._remove_model)
        olay.addLayout(row)
        olay.addWidget(self.model_list)
        olay.addWidget(self.remove_button, 0, Qt.AlignmentFlag.AlignRight)

        axis = QGroupBox("Second axis (optional)")
        axis.setObjectName("sweepAxisBox")
        form = QFormLayout(axis)
        self.axis_combo = named(QComboBox(), "sweepAxisCombo", "Second axis",
                                "Distill every student once per value: several temperatures, "
                                "or several logit losses.")
        for key, text in AXES:
            self.axis_combo.addItem(text, key)
        self.axis_combo.currentIndexChanged.connect(self._axis_changed)
        self.axis_stack = QStackedWidget()
        self.axis_stack.addWidget(QWidget())
        self.axis_stack.setVisible(False)  # shown with an axis: a hidden page still takes room
        self.temps_edit = named(QLineEdit("1, 2, 4"), "sweepTemperaturesEdit", "Temperatures",
                                "Temperatures separated by commas, e.g. 1, 2, 4.")
        self.temps_edit.textChanged.connect(lambda _t: self.changed.emit())
        self.axis_stack.addWidget(self.temps_edit)
        methods = QWidget()
        mlay = QGridLayout(methods)
        mlay.setContentsMargins(0, 0, 0, 0)
        self.method_boxes: dict[str, QCheckBox] = {}
        for i, loss in enumerate(LOGIT_LOSSES):
            box = named(QCheckBox(loss), f"sweepMethod_{loss}", f"Logit loss {loss}",
                        f"Distill each student with the {loss} loss too.")
            box.setChecked(loss in ("forward_kl", "reverse_kl"))
            box.toggled.connect(lambda _on: self.changed.emit())
            self.method_boxes[loss] = box
            mlay.addWidget(box, i // 2, i % 2)
        self.axis_stack.addWidget(methods)
        shapes = QWidget()
        slay = QVBoxLayout(shapes)
        slay.setContentsMargins(0, 0, 0, 0)
        self.shape_boxes: dict[str, QCheckBox] = {}
        for shape, words in SHAPE_WORDS.items():
            box = named(QCheckBox(words), f"sweepShape_{shape}", words,
                        "Cut each size this way too; each way is a series of the chart.")
            box.setChecked(True)
            box.toggled.connect(lambda _on: self.changed.emit())
            self.shape_boxes[shape] = box
            slay.addWidget(box)
        self.axis_stack.addWidget(shapes)
        self.axis_note = QLabel()
        self.axis_note.setObjectName("sweepAxisNote")
        self.axis_note.setWordWrap(True)
        self.axis_note.setStyleSheet("color: #666666;")
        form.addRow("Vary", self.axis_combo)
        form.addRow(self.axis_stack)
        form.addRow(self.axis_note)
        self._axis_changed()

        self.int8_box = named(QCheckBox(INT8_TEXT), "sweepInt8Check", "Also export as int8 ONNX",
                              "After each run, export its student as int8 ONNX (about a "
                              "quarter of the size, run with ONNX Runtime) and show the export "
                              "on the chart as a diamond beside its student, so distilling "
                              "alone and distilling then quantizing can be compared.")
        self.install_export = QPushButton("Install the export parts...")
        self.install_export.setObjectName("sweepInstallExport")
        self.install_export.setToolTip("Export to ONNX needs parts that are not installed yet; "
                                       "this installs them into KD Studio's environment.")
        self.install_export.clicked.connect(self._install_export)
        self.install_dialog: InstallPartsDialog | None = None
        self._int8_tip = self.int8_box.toolTip()
        self._export_parts_changed()
        self.int8_box.toggled.connect(lambda _on: self.changed.emit())

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(8)
        lay.addWidget(self.base_label)
        lay.addWidget(derived)
        lay.addWidget(others)
        lay.addWidget(axis)
        lay.addWidget(self.int8_box)
        lay.addWidget(self.install_export)

    def _export_parts_changed(self) -> None:
        missing = missing_parts("export")
        self.int8_box.setEnabled(not missing)
        self.install_export.setVisible(bool(missing))
        self.int8_box.setToolTip(
            f"Needs parts that are not installed: {', '.join(p.module for p in missing)}. "
            "Install them with the button below." if missing else self._int8_tip)

    def _install_export(self) -> None:
        dialog = self.install_dialog = InstallPartsDialog(
            "Exporting each student as int8 ONNX", missing_parts("export"), self)
        dialog.installed.connect(self._export_parts_changed)
        dialog.open()

    # -- the base config ---------------------------------------------------------------------
    def set_base(self, config: Any) -> None:
        """Show what every run shares; the second axis needs a logit loss to vary."""
        t, d, m = config.teacher.name, config.data.dataset, config.method
        method = (f"{m.logit_loss}, temperature {m.temperature:g}" if m.logit_weight > 0
                  else "embedding/hidden-state losses")
        steps = (f"{config.training.max_steps} steps" if config.training.max_steps
                 else f"{config.training.epochs:g} epochs")
        self.base_label.setText(
            f"Every run distills <b>{_short(t)}</b> on <b>{_short(d)}</b> ({config.task}) with "
            f"<b>{method}</b>, {steps} each. Change these on the Models, Method, Data and Train "
            "pages.")
        self.base_label.setToolTip(f"Teacher: {t}\nData: {d}")
        logits = m.logit_weight > 0 or m.cross_tokenizer_weight > 0
        model = self.axis_combo.model()
        for i, (key, _text) in enumerate(AXES):
            item = model.item(i)
            off = key in LOGIT_AXES and not logits
            item.setEnabled(not off)
            item.setToolTip("This method distills no output probabilities (its logit weight is "
                            "0), so this changes nothing." if off else "")
        if not logits and self.axis_combo.currentData() in LOGIT_AXES:
            self.axis_combo.setCurrentIndex(0)
        self._logits = logits
        self._axis_changed()

    def set_teacher_layers(self, n: int | None, note: str = "") -> None:
        """Rebuild the layer checkboxes for a teacher with ``n`` layers (None: unknown)."""
        if n == self.teacher_layers and self.layer_boxes:
            return
        previous = {k for k, b in self.layer_boxes.items() if b.isChecked()}
        for box in self.layer_boxes.values():
            self.layers_grid.removeWidget(box)
            box.deleteLater()
        self.layer_boxes = {}
        self.teacher_layers = n
        if not n or n < 2:
            self.layers_note.setText(note or ("The teacher has a single layer, so no smaller "
                                              "student can be derived from it." if n == 1 else
                                              "Reading the teacher's layers\u2026"))
            self.changed.emit()
            return
        self.layers_note.setText(f"The teacher has {n} layers. Tick the counts to try; each "
                                 "keeps that many evenly spaced teacher layers.")
        ticked = (previous & set(range(1, n))) or set(default_layers(n))
        for i, k in enumerate(range(1, n)):
            box = named(QCheckBox(f"{k} of {n}"), f"sweepLayers_{k}", f"{k} layers",
                        f"A student keeping {k} of the teacher's {n} layers.")
            box.setChecked(k in ticked)
            box.toggled.connect(lambda _on: self.changed.emit())
            self.layer_boxes[k] = box
            self.layers_grid.addWidget(box, i // BOXES_PER_ROW, i % BOXES_PER_ROW)
        self.changed.emit()

    def check_layers(self, layers: list[int]) -> None:
        """Tick exactly these layer counts (the budget helper's proposal)."""
        for k, box in self.layer_boxes.items():
            box.blockSignals(True)
            box.setChecked(k in layers)
            box.blockSignals(False)
        self.changed.emit()

    # -- other models --------------------------------------------------------------------------
    def add_model(self, name: str = "") -> None:
        name = (name or self.model_edit.text()).strip()
        if not name:
            return
        if name not in self.models():
            self.model_list.addItem(name)
            self.changed.emit()
        self.model_edit.clear()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a student model folder")
        if folder:
            self.add_model(folder)

    def _remove_model(self) -> None:
        for item in self.model_list.selectedItems():
            self.model_list.takeItem(self.model_list.row(item))
        self.changed.emit()

    def models(self) -> list[str]:
        return [self.model_list.item(i).text() for i in range(self.model_list.count())]

    # -- what the engine gets ------------------------------------------------------------------
    def sizes(self) -> tuple[list[float], str]:
        """The shares typed in, and a sentence on the first one that is not a share ('' if none)."""
        shares, bad = [], ""
        for part in (p.strip() for p in self.sizes_edit.text().replace(";", ",").split(",")):
            if not part:
                continue
            try:
                value = float(part.rstrip("%")) / (100 if part.endswith("%") else 1)
            except ValueError:
                value = -1.0
            if 0 < value < 1:
                shares.append(value)
            elif not bad:
                bad = (f"'{part}' is not a share of the teacher: write numbers between 0 and 1 "
                       "(or percentages), e.g. 0.3, 0.5, 0.7.")
        return list(dict.fromkeys(shares)), bad

    def students(self) -> list[StudentSpec]:
        sized = [StudentSpec(target=t) for t in self.sizes()[0]]
        if self.axis_combo.currentData() == "shape":
            return sized  # ways of cutting apply to students given by size
        layers = [StudentSpec(layers=float(k)) for k, b in self.layer_boxes.items() if b.isChecked()]
        return layers + sized + [StudentSpec(name=n) for n in self.models()]

    def _sizes_changed(self) -> None:
        bad = self.sizes()[1]
        self.sizes_note.setText(bad)
        self.sizes_note.setVisible(bool(bad))
        self._axis_changed()

    def quantize_int8(self) -> bool:
        return self.int8_box.isEnabled() and self.int8_box.isChecked()

    def axis(self) -> tuple[str, list[Any]]:
        """(axis, values); raises SweepError naming a value that is not a number."""
        key = self.axis_combo.currentData()
        if key == "temperature":
            values = []
            for part in (p.strip() for p in self.temps_edit.text().replace(";", ",").split(",")):
                if not part:
                    continue
                try:
                    values.append(float(part))
                except ValueError:
                    raise SweepError(f"The temperature '{part}' is not a number.",
                                     hint="Write temperatures separated by commas, e.g. 1, 2, 4.") from None
            return key, values
        if key == "method":
            return key, [loss for loss, b in self.method_boxes.items() if b.isChecked()]
        if key == "shape":
            return key, [shape for shape, b in self.shape_boxes.items() if b.isChecked()]
        return "", []

    def _axis_changed(self) -> None:
        index = max(0, self.axis_combo.currentIndex())
        self.axis_stack.setCurrentIndex(index)
        self.axis_stack.setVisible(index > 0)
        # Only the page on show counts for the size, so the group shrinks with 'None'.
        for i in range(self.axis_stack.count()):
            page = self.axis_stack.widget(i)
            page.setSizePolicy(page.sizePolicy().horizontalPolicy(),
                               QSizePolicy.Policy.Preferred if i == index else QSizePolicy.Policy.Ignored)
        shape_axis = self.axis_combo.currentData() == "shape"
        why = ("Ways of cutting apply to students given by size: with this axis, only the sizes "
               "above are distilled." if shape_axis else "")
        for k, box in self.layer_boxes.items():
            box.setEnabled(not shape_axis)
            box.setToolTip(why or f"A student keeping {k} of the teacher's {self.teacher_layers} "
                           "layers.")
        for w in (self.model_edit, self.add_button, self.browse_button, self.model_list,
                  self.remove_button):
            w.setEnabled(not shape_axis)
        if shape_axis:
            self.axis_note.setText("Each size is cut each ticked way, so the chart shows which "
                                   "way keeps more at the same size." + ("" if self.sizes()[0]
                                   else " Type the sizes above first (e.g. 0.3, 0.5, 0.7)."))
        elif not getattr(self, "_logits", True):
            self.axis_note.setText("This method distills no output probabilities (its logit "
                                   "weight is 0), so temperature and logit loss change nothing.")
        else:
            self.axis_note.setText("Each student is distilled once per value: the runs multiply."
                                   if self.axis_combo.currentData() else "")
        self.changed.emit()


def _short(name: str) -> str:
    """A folder path shortened to its last part (the tooltip has the whole)."""
    if "/" in name or "\\" in name:
        p = Path(name.rstrip("/\\"))
        if p.is_absolute() or name.startswith((".", "~")):
            return p.name
    return name
