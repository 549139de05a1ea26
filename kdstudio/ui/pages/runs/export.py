"""The Runs page's export: a choice of formats, and the figures of a finished export.

A PyTorch folder is a copy of the student (ops.copy_student); ONNX and safetensors fp16 go
through the engine's export (kdstudio.core.export), which checks the export against the
PyTorch student and records it in the run. Both run in ctx.jobs; these are the dialogs.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.glossary import attach


@dataclass(frozen=True)
class ExportChoice:
    key: str
    label: str
    format: str | None      # None: copy the PyTorch folder
    quantize: str | None    # None: full precision
    explanation: str


CHOICES = (
    ExportChoice("pytorch", "PyTorch folder (the student as trained)", None, None,
                 "A copy of the student folder, loadable with transformers' from_pretrained. "
                 "You choose where it goes."),
    ExportChoice("onnx", "ONNX", "onnx", None,
                 "One file for onnxruntime (Python, C#, C++, JavaScript; CPU or GPU), full "
                 "precision: the same answers as the student."),
    ExportChoice("onnx-int8", "ONNX int8 (smallest)", "onnx", "int8",
                 "Weights in 8 bits: about a quarter of the size and usually faster on a CPU, "
                 "with a small, measured change in quality."),
    ExportChoice("onnx-fp16", "ONNX fp16", "onnx", "fp16",
                 "Half the size, made for GPUs (on a CPU it is rarely faster)."),
    ExportChoice("safetensors-fp16", "safetensors fp16", "safetensors", "fp16",
                 "Half the size; loads with transformers like the student, best on a GPU."),
)


FORMAT_NAMES = {"onnx": "ONNX"}


def plain_note(note: str) -> str:
    """An export note in the app's words: the engine's notes (and the export's README) name
    the graph operations and library calls; a person needs what it means for the model."""
    from kdstudio.core.export.onnx_export import FP16_NOTE
    from kdstudio.core.export.quantize import NOTE as INT8_NOTE

    plain = {
        INT8_NOTE: "int8: the weights are stored as 8-bit whole numbers, a quarter of their "
                   "usual size, the word table too; the numbers passing between the layers are "
                   "rounded the same way as the model runs. Answers change a little: the "
                   "figures above measure how much.",
        FP16_NOTE: "fp16: the model computes in half precision, made for GPUs; the speed "
                   "above was measured on this computer's CPU, which runs it too but rarely "
                   "faster.",
    }
    if note in plain:
        return plain[note]
    if "tied weight matrix stored once" in note:
        return "The word table the model reads and writes with is stored once, not twice."
    return note.replace("(cosine_to_student)", "").replace("cosine_to_teacher",
                                                           "similarity to the teacher")


def convert_student(run_dir: Path, choice: ExportChoice, report: Any) -> tuple[Any, list, dict]:
    """Export and check (slow: run it in a job); the result, its figures and the run's summary."""
    from kdstudio.core.export import export_run
    from kdstudio.core.export.record import figures
    from kdstudio.core.runs import Run

    result = export_run(run_dir, choice.format or "", choice.quantize, on_event=report)
    summary = Run(run_dir).summary()
    return result, figures(result, summary), summary


def _name(widget: QWidget, name: str, accessible: str) -> QWidget:
    widget.setObjectName(name)
    widget.setAccessibleName(accessible)
    return widget


class ExportChoiceDialog(QDialog):
    """Which kind of export: one radio button per choice, each with a sentence on what it is for."""

    def __init__(self, run_name: str, parent: QWidget | None = None):
        super().__init__(parent)
        _name(self, "exportChoiceDialog", "Export the student")
        self.setWindowTitle(f"Export the student of {run_name}")
        intro = QLabel(f"How should the student of <b>{html.escape(run_name)}</b> be exported? "
                       "ONNX and safetensors exports are written into the run's <i>exports</i> "
                       "folder and checked against the original on the run's evaluation texts.")
        intro.setObjectName("exportChoiceIntro")
        intro.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 14, 16, 12)
        lay.addWidget(intro)
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        for i, choice in enumerate(CHOICES):
            button = _name(QRadioButton(choice.label), f"exportChoice_{choice.key}", choice.label)
            button.setToolTip(choice.explanation)
            self.group.addButton(button, i)
            self.buttons[choice.key] = button
            words = QLabel(choice.explanation)
            words.setObjectName(f"exportChoiceText_{choice.key}")
            words.setWordWrap(True)
            words.setStyleSheet("color: #666666; margin-left: 22px;")
            lay.addSpacing(4)
            lay.addWidget(button)
            lay.addWidget(words)
        self.buttons[CHOICES[0].key].setChecked(True)
        box = _name(QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel), "exportChoiceButtons",
                    "Export or cancel")
        start = _name(QPushButton("Export"), "exportStartButton", "Export")
        start.setDefault(True)
        box.addButton(start, QDialogButtonBox.ButtonRole.AcceptRole)
        box.button(QDialogButtonBox.StandardButton.Cancel).setObjectName("exportCancelButton")
        box.button(QDialogButtonBox.StandardButton.Cancel).setAccessibleName("Cancel")
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        lay.addSpacing(8)
        lay.addWidget(box)
        self.resize(520, self.sizeHint().height())
        attach(self)

    def choice(self) -> ExportChoice:
        return CHOICES[max(0, self.group.checkedId())]

    def choose(self, key: str) -> None:
        self.buttons[key].setChecked(True)


class ExportResultDialog(QDialog):
    """What an export keeps and saves, against the PyTorch student (and the teacher)."""

    def __init__(self, run_name: str, result: Any, rows: list[tuple[str, str, str, str]],
                 parent: QWidget | None = None):
        super().__init__(parent)
        _name(self, "exportResultDialog", "Export finished")
        self.setWindowTitle(f"Exported: {run_name}")
        self.path = Path(result.path)
        what = f"{FORMAT_NAMES.get(result.format, result.format)} {result.precision}"
        heading = QLabel(f"<b>{html.escape(run_name)}</b>: the student as <b>{what}</b>, checked "
                         "against the PyTorch student on the run's evaluation texts.")
        heading.setObjectName("exportResultHeading")
        heading.setWordWrap(True)
        teacher = any(r[3] for r in rows)
        cols = ["", what, "PyTorch student"] + (["Teacher (from the run)"] if teacher else [])
        self.table = _name(QTableWidget(len(rows), len(cols)), "exportFigures", "Export figures")
        self.table.setHorizontalHeaderLabels(cols)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        for r, row in enumerate(rows):
            for c, text in enumerate(row[:len(cols)]):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 1:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(r, c, item)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.resizeColumnsToContents()
        for c in range(1, len(cols)):  # a little air between the figures
            self.table.setColumnWidth(c, self.table.columnWidth(c) + 16)
        head = self.table.horizontalHeader()
        head.setStretchLastSection(True)
        frame = 2 * self.table.frameWidth()
        self.table.setMinimumWidth(head.length() + frame)
        self.table.setFixedHeight(head.height() + frame +
                                  sum(self.table.rowHeight(r) for r in range(len(rows))))
        notes = QLabel("".join(f"<p>{html.escape(plain_note(n))}</p>" for n in result.notes))
        notes.setObjectName("exportNotes")
        notes.setWordWrap(True)
        notes.setStyleSheet("color: #666666;")
        notes.setVisible(bool(result.notes))
        self.folder_label = QLabel(f"Folder: <b>{html.escape(str(self.path))}</b> (its README.md "
                                   "says how to run it; the run's summary records the export).")
        self.folder_label.setObjectName("exportFolder")
        self.folder_label.setWordWrap(True)
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box = _name(QDialogButtonBox(QDialogButtonBox.StandardButton.Close), "exportResultButtons",
                    "Close or open the folder")
        box.button(QDialogButtonBox.StandardButton.Close).setObjectName("exportCloseButton")
        box.button(QDialogButtonBox.StandardButton.Close).setAccessibleName("Close")
        open_folder = _name(QPushButton("Open folder"), "exportOpenFolderButton", "Open folder")
        open_folder.clicked.connect(self.open_folder)
        box.addButton(open_folder, QDialogButtonBox.ButtonRole.ActionRole)
        box.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(16, 14, 16, 12)
        lay.addWidget(heading)
        lay.addWidget(self.table)
        lay.addWidget(notes)
        lay.addWidget(self.folder_label)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        bottom.addWidget(box)
        lay.addLayout(bottom)
        self.resize(max(640, self.table.minimumWidth() + 32), self.sizeHint().height())
        attach(self)

    def figure(self, row: int, column: int = 1) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""

    def open_folder(self) -> bool:
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path)))


def summary_sentence(name: str, choice: ExportChoice, result: Any) -> str:
    """One line for the page's message: where it went and what it kept and saved."""
    size = f"{result.size_bytes / 2**20:.2f} MB"
    if result.size_ratio:
        size += f" ({result.size_ratio:.1%} of the student)"
    kept = f", quality kept {result.quality_kept:.1%}" if result.quality_kept is not None else ""
    lat, student = result.latencies()  # medians with their p10-p90 spreads, timed in turns
    busy = f" ({lat.load.words()})" if lat.load.busy else ""
    return (f"Exported the student of '{name}' as {choice.label}: {size}, "
            f"{lat.text()} per sample against {student.text()}{busy}"
            f"{kept}. Folder: {result.path}")
