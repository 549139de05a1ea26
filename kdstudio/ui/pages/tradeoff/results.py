"""The Tradeoff page's results: the chart (x axis switchable), the summary sentence, the
sortable table, and the PNG / CSV exports. Rows come from core.sweep.figures.sweep_table;
a student's int8 export is a row of its own, in italics, right under it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.metrics import METRIC_LABELS, PERCENT_METRICS
from kdstudio.core.sweep.figures import (
    TableRow,
    front_rows,
    summary_sentence,
    write_csv,
)
from kdstudio.core.sweep.queue import axis_label
from kdstudio.core.sweep.timed import latency_cell, speedup_cell
from kdstudio.ui.dialogs import show_error
from kdstudio.ui.pages.tradeoff.chart import TradeoffChart
from kdstudio.ui.widgets.common import named

COSTS = [("params", "Parameters"), ("latency", "Latency per sample"), ("size", "Size on disk")]
RUN_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
KEY_ROLE = Qt.ItemDataRole.UserRole + 3  # TableRow.key: an int8 row shares its run folder
EMPTY = ("No results yet. Pick students on the left and press <b>Start sweep</b>; a point "
         "appears here as each run finishes.")


class SortItem(QTableWidgetItem):
    """A cell that sorts by its number (missing figures last), not by its text."""

    def __init__(self, text: str, key: Any = None):
        super().__init__(text)
        self.setData(SORT_ROLE, key)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a < b
        if isinstance(a, (int, float)) != isinstance(b, (int, float)):
            return isinstance(a, (int, float))
        return self.text() < other.text()


def fmt_params(n: float | None) -> str:
    if n is None:
        return "\u2013"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _num(v: float | None, spec: str, suffix: str = "") -> str:
    return "\u2013" if v is None else f"{v:{spec}}{suffix}"


class TradeoffResults(QWidget):
    """``point_clicked(run_dir)`` from the chart or a double-clicked table row;
    ``exported(path)`` after the chart or the table was saved."""

    point_clicked = Signal(str)
    exported = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("tradeoffResults")
        self.rows: list[TableRow] = []
        self.axis = ""
        self.folder: Path | None = None  # where exports are offered (the sweep's folder)
        self.teacher = ""

        self.cost_combo = named(QComboBox(), "tradeoffCostCombo", "Chart x axis",
                                "What the chart puts along the bottom: parameters, the latency "
                                "per sample, or the size on disk.")
        for key, text in COSTS:
            self.cost_combo.addItem(text, key)
        self.cost_combo.currentIndexChanged.connect(lambda _i: self._redraw())
        self.png_button = named(QPushButton("Export chart (PNG)\u2026"), "exportPngButton",
                                "Export chart as PNG", "Save the chart as a PNG image.")
        self.csv_button = named(QPushButton("Export table (CSV)\u2026"), "exportCsvButton",
                                "Export table as CSV", "Save the table as a CSV file "
                                "(opens in any spreadsheet).")
        self.png_button.clicked.connect(self.export_png_dialog)
        self.csv_button.clicked.connect(self.export_csv_dialog)
        top = QHBoxLayout()
        top.addWidget(QLabel("Against:"))
        top.addWidget(self.cost_combo)
        top.addStretch(1)
        top.addWidget(self.png_button)
        top.addWidget(self.csv_button)

        self.chart = TradeoffChart()
        self.chart.point_clicked.connect(self.point_clicked)
        self.summary = QLabel(EMPTY)
        self.summary.setObjectName("tradeoffSummary")
        self.summary.setAccessibleName("Summary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary.setStyleSheet("font-size: 11pt; padding: 6px; background: #f3f7fb; "
                                   "border: 1px solid #d6e2ee; border-radius: 4px;")

        self.table = named(QTableWidget(0, 0), "tradeoffTable", "Tradeoff figures",
                           "One row per student (and the teacher; an int8 export in italics "
                           "under its student); click a header to sort, double-click a row to "
                           "open its run.")
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.cellDoubleClicked.connect(self._row_activated)

        split = QSplitter(Qt.Orientation.Vertical)
        split.setObjectName("tradeoffSplitter")
        split.setChildrenCollapsible(False)
        split.addWidget(self.chart)
        split.addWidget(self.table)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([400, 230])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(6)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)
        self._fill_table()  # the headers, before any row
        self._update_buttons()

    @property
    def cost(self) -> str:
        return self.cost_combo.currentData()

    def set_rows(self, rows: Sequence[TableRow], axis: str = "") -> None:
        had_int8 = any(r.is_int8 for r in self.rows)
        self.rows, self.axis = list(rows), axis
        if not had_int8 and any(r.is_int8 for r in self.rows):
            # An int8 export keeps its student's parameters; size on disk is where it differs.
            self.cost_combo.blockSignals(True)
            self.cost_combo.setCurrentIndex(self.cost_combo.findData("size"))
            self.cost_combo.blockSignals(False)
        self.summary.setText(summary_sentence(self.rows, axis) if self.rows else EMPTY)
        self._redraw()
        self._fill_table()
        self._update_buttons()

    def _redraw(self) -> None:
        self.chart.set_rows(self.rows, self.cost, self.axis)
        if self.rows:
            self._mark_front()

    def _update_buttons(self) -> None:
        self.png_button.setEnabled(bool(self.rows))
        self.csv_button.setEnabled(bool(self.rows))

    # -- the table -----------------------------------------------------------------------------
    def _fill_table(self) -> None:
        rows = self.rows
        metric = rows[0].headline_metric if rows else ""
        head = METRIC_LABELS.get(metric, metric or "Headline metric")
        columns = ["Student", "Parameters", "Share of teacher", "Size on disk (MB)",
                   "Latency (ms, p10\u2013p90)", "Speed-up", "Quality retained", head, "On the front"]
        if self.axis:
            columns.insert(1, "Temperature" if self.axis == "temperature" else "Method")
        t = self.table
        t.setSortingEnabled(False)
        t.clear()
        t.setColumnCount(len(columns))
        t.setHorizontalHeaderLabels(columns)
        t.setRowCount(len(rows))
        bold = QFont()
        bold.setBold(True)
        italic = QFont()
        italic.setItalic(True)
        for i, r in enumerate(rows):
            hv = r.headline_value
            cells = [
                SortItem("teacher" if r.is_teacher else r.label.split(", ")[0],
                         -1 if r.is_teacher else i),  # an int8 row sorts right under its student
                SortItem(fmt_params(r.params), r.params),
                SortItem(_num(r.params_share, ".0%"), r.params_share),
                SortItem(_num(r.size_mb, ".3g"), r.size_mb),
                SortItem(latency_cell(r), r.latency_ms),
                SortItem(speedup_cell(r), r.speedup),
                SortItem(_num(r.quality_retained, ".1%"), r.quality_retained),
                SortItem(_num(hv, ".1%") if metric in PERCENT_METRICS else _num(hv, ".4g"), hv),
                SortItem("", None),  # filled by _mark_front
            ]
            if self.axis:
                value = r.axis_value
                cells.insert(1, SortItem("" if value is None else axis_label(self.axis, value),
                                         value if isinstance(value, (int, float)) else None))
            for c, item in enumerate(cells):
                item.setData(RUN_ROLE, r.run_dir)
                item.setData(KEY_ROLE, r.key)
                if c > 0:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if r.is_teacher:
                    item.setFont(bold)
                    item.setToolTip(f"The teacher: {r.model}")
                elif r.is_int8:
                    item.setFont(italic)
                    item.setToolTip(f"{r.label}: the student exported as int8 ONNX (size and "
                                    "latency of the export, measured with ONNX Runtime); "
                                    "double-click to open the run"
                                    + (f"\n{r.note}" if r.note else ""))
                else:
                    item.setToolTip(f"{r.label}: double-click to open the run")
                t.setItem(i, c, item)
        head_view = t.horizontalHeader()
        head_view.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        head_view.setStretchLastSection(True)
        t.setSortingEnabled(True)
        self._mark_front()

    def _mark_front(self) -> None:
        """Tick the rows on the Pareto front of the cost the chart shows."""
        on = {r.key for r in front_rows(self.rows, self.cost)}
        col = self.table.columnCount() - 1
        sorting = self.table.isSortingEnabled()
        self.table.setSortingEnabled(False)
        for i in range(self.table.rowCount()):
            item = self.table.item(i, col)
            if item is None:
                continue
            front = self.table.item(i, 0).data(KEY_ROLE) in on
            item.setText("yes" if front else "")
            item.setData(SORT_ROLE, 1 if front else 0)
            item.setForeground(QBrush(QColor("#1b7f3b")))
        self.table.setSortingEnabled(sorting)

    def _row_activated(self, row: int, _col: int) -> None:
        item = self.table.item(row, 0)
        run_dir = item.data(RUN_ROLE) if item is not None else ""
        if run_dir:
            self.point_clicked.emit(run_dir)

    # -- exports -------------------------------------------------------------------------------
    def export_png(self, path: str | Path) -> Path:
        """The chart as shown (same x axis), drawn at a fixed size for sharing."""
        from kdstudio.ui.pages.tradeoff.chart import render_png

        what = {"params": "parameters", "latency": "latency", "size": "size on disk"}[self.cost]
        title = f"{self.teacher}: quality retained against {what}" if self.teacher else ""
        return render_png(self.rows, path, self.cost, axis=self.axis, title=title)

    def export_csv(self, path: str | Path) -> Path:
        return write_csv(self.rows, path, self.axis)

    def _export_dialog(self, what: str, name: str, filt: str, write: Any) -> None:
        folder = self.folder or Path.home()
        path, _ = QFileDialog.getSaveFileName(self, f"Export the {what}", str(folder / name), filt)
        if not path:
            return
        try:
            written = write(path)
        except OSError as exc:
            show_error(self, f"Could not export the {what}", f"'{path}' could not be written: {exc}.")
            return
        self.exported.emit(str(written))

    def export_png_dialog(self) -> None:
        self._export_dialog("chart", "chart.png", "PNG images (*.png)", self.export_png)

    def export_csv_dialog(self) -> None:
        self._export_dialog("table", "table.csv", "CSV files (*.csv)", self.export_csv)

    def column_texts(self, column: int) -> list[str]:
        """The table's texts in one column, in the order shown (tests and screen readers)."""
        return [self.table.item(i, column).text() for i in range(self.table.rowCount())]
