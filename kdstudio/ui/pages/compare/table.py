"""The teacher-versus-student table: parameters, size, latency, speed-up, quality retained.

It takes the dict ``Comparer.table()`` returns. Before the models are loaded the page fills it
from the run's summary.json with ``table_from_summary`` (the same keys), so the figures show
at once.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.metrics import METRIC_LABELS, PERCENT_METRICS
from kdstudio.core.timing import summary_session

ROWS = (
    ("parameters", "Parameters", "Number of weights in the model."),
    ("size_mb", "Size on disk", "Size of the saved weights."),
    ("latency_ms", "Latency", "Median time to answer one input, measured at the end "
                              "of training with both models timed in turns; in brackets the "
                              "p10\u2013p90 spread (the middle 80% of the repeats)."),
    ("speedup", "Speed-up", "How many times faster the student answers than the teacher."),
    ("metric", "Score", "The run's main quality figure on the evaluation data (named below)."),
    ("before", "Before distilling", "The student's score before training: what "
                                          "distillation gained."),
    ("quality_retained", "Quality retained", "The student's score as a share of the teacher's "
                                             "(for perplexity, the teacher's over the student's)."),
)
DASH = "–"
ROW_H = 24
TWO_LINES = ("latency_ms", "speedup")  # a figure, then its spread on a second line
ONE_LINE = Qt.ItemDataRole.UserRole    # a cell's text as one line, as cell() reads it
COLUMNS = ("Teacher", "Student", "Plain training")
PLAIN_TIP = ("Plain training (no teacher): the same student trained for the same steps on the "
             "ordinary loss alone, without the teacher (evaluation.baseline). The gap to the "
             "Student column is what the teacher adds.")
SAME_SHAPE = "The same model shape as the distilled student, so the same size and speed."


def name_parts(table: QTableWidget, name: str) -> None:
    """Name a table's own sub-widgets (headers, corner button) too, for accessibility tools."""
    table.horizontalHeader().setObjectName(f"{name}Columns")
    table.horizontalHeader().setAccessibleName("Column headings")
    table.verticalHeader().setObjectName(f"{name}Rows")
    table.verticalHeader().setAccessibleName("Row headings")
    corner = table.findChild(QAbstractButton)
    if corner is not None:
        corner.setObjectName(f"{name}Corner")
        corner.setAccessibleName("Select all")


def table_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures of Comparer.table(), read from a run's summary.json without loading models."""
    s = summary
    return {
        "parameters": (s.get("teacher_params"), s.get("student_params")),
        "size_mb": (s.get("teacher_size_mb"), s.get("student_size_mb")),
        "latency_ms": (s.get("teacher_latency_ms"), s.get("student_latency_ms")),
        "speedup": s.get("speedup"),
        "quality_retained": s.get("quality_retained"),
        "headline_metric": s.get("headline_metric"),
    }


def fmt_params(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return DASH
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{int(n):,}"


def _share(student: Any, teacher: Any) -> str:
    if isinstance(student, (int, float)) and isinstance(teacher, (int, float)) and teacher > 0:
        return f" ({student / teacher:.0%})"
    return ""


def _num(x: Any, unit: str, digits: int = 1) -> str:
    if not isinstance(x, (int, float)):
        return DASH
    if unit == "MB" and x < 10:
        digits = 2
    return f"{x:,.{digits}f} {unit}"


def _pct(x: Any, intervals: Any = None) -> str:
    """A share with ± half its 95% interval (intervals["quality_retained"], when the run
    recorded one); above 100% says so (metrics.format_quality), never bare."""
    from kdstudio.core.metrics import format_quality, interval_of

    return (format_quality(x, interval=interval_of(intervals, "quality_retained"))
            if isinstance(x, (int, float)) else DASH)


def _pm(text: str, intervals: Any, name: str, metric: str) -> str:
    """A figure's cell with ± half its 95% interval, when the run recorded one."""
    from kdstudio.core.metrics import interval_of, plus_minus

    if text == DASH:
        return text
    pct = metric in PERCENT_METRICS or name == "quality_retained"
    return text + plus_minus(interval_of(intervals, name), pct)


def fmt_metric(metric: str, x: Any) -> str:
    if not isinstance(x, (int, float)):
        return DASH
    return f"{x:.1%}" if metric in PERCENT_METRICS else f"{x:,.3f}"


def fmt_speedup(x: Any) -> str:
    if not isinstance(x, (int, float)) or x <= 0:
        return DASH
    return f"{x:.2f}x faster" if x >= 1 else f"{1 / x:.2f}x slower"


def _latency(summary: dict[str, Any], role: str, fallback: Any) -> str:
    """The median with its spread (a run from before timing sessions: the median alone)."""
    from kdstudio.core.timing import summary_latency

    lat = summary_latency(summary, role) if summary else None
    return lat.text() if lat is not None else _num(fallback, "ms")


def _speedup(summary: dict[str, Any], x: Any) -> str:
    spread = (summary or {}).get("speedup_spread")
    text = fmt_speedup(x)
    if text != DASH and isinstance(spread, list) and len(spread) == 2:
        text += f" ({spread[0]:.2f}\u2013{spread[1]:.2f}x)"
    elif text != DASH:
        from kdstudio.core.timing import few_rounds

        text += few_rounds((summary or {}).get("speedup_rounds"))
    return text


class FiguresTable(QTableWidget):
    """Rows of figures, a Teacher and a Student column, and a Plain training column when the
    run trained a baseline (objectName compareTable)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(len(ROWS), len(COLUMNS), parent)
        self.setObjectName("compareTable")
        self.setAccessibleName("Teacher and student figures")
        name_parts(self, "compareTable")
        self.setHorizontalHeaderLabels(list(COLUMNS))
        self.horizontalHeaderItem(2).setToolTip(PLAIN_TIP)
        self.setColumnHidden(2, True)
        self.setVerticalHeaderLabels([label for _, label, _ in ROWS])
        for i, (_, _, tip) in enumerate(ROWS):
            self.verticalHeaderItem(i).setToolTip(tip)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ContiguousSelection)
        self.setAlternatingRowColors(True)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.verticalHeader().setDefaultSectionSize(ROW_H)
        self.setWordWrap(False)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.metric_label = ""
        self._hint_h = 0
        self.clear_figures()

    def sizeHint(self) -> QSize:
        header = max(self.horizontalHeader().height(), self.horizontalHeader().sizeHint().height())
        rows = sum(self.rowHeight(r) for r in range(self.rowCount()))
        return QSize(300, header + rows + 2 * self.frameWidth())

    def minimumSizeHint(self) -> QSize:
        # 276: the right-hand column's 300px less the group box's margins.
        return QSize(max(276, self._fit_width()), self.sizeHint().height())

    def _fit_width(self) -> int:
        # The columns share the width evenly (Stretch): each needs room for the widest cell
        # of any column, such as "100.4% (above the teacher) ± 0.3%".
        shown = [c for c in range(self.columnCount()) if not self.isColumnHidden(c)]
        if not shown:
            return 0
        header = self.horizontalHeader()
        widest = max(max(self.sizeHintForColumn(c), header.sectionSizeHint(c)) for c in shown)
        return self.verticalHeader().sizeHint().width() + widest * len(shown) + 2 * self.frameWidth()

    def updateGeometries(self) -> None:
        super().updateGeometries()
        # The header's real height is known only once it is laid out: ask for room again.
        if self.sizeHint().height() != self._hint_h:
            self._hint_h = self.sizeHint().height()
            self.updateGeometry()

    def clear_figures(self) -> None:
        for r in range(self.rowCount()):
            for c in range(len(COLUMNS)):
                self._set(r, c, DASH)
        self._fit_rows()
        self.setColumnHidden(2, True)

    def has_baseline(self) -> bool:
        return not self.isColumnHidden(2)

    def cell(self, key: str, column: int) -> str:
        """The text shown for a row key ('parameters', ...) in column 0 (teacher), 1 (student)
        or 2 (plain training, shown only when the run trained a baseline)."""
        row = [k for k, _, _ in ROWS].index(key)
        return self.item(row, column).data(ONE_LINE)

    def set_figures(self, table: dict[str, Any], summary: dict[str, Any]) -> None:
        """Fill from a Comparer.table() dict; the metric values come from the summary."""
        t_par, s_par = table.get("parameters") or (None, None)
        t_mb, s_mb = table.get("size_mb") or (None, None)
        t_ms, s_ms = table.get("latency_ms") or (None, None)
        metric = table.get("headline_metric") or ""
        t_val = (summary.get("teacher_metrics") or {}).get(metric)
        s_val = (summary.get("student_metrics") or {}).get(metric)
        before = (summary.get("student_metrics_before") or {}).get(metric)
        q = table.get("quality_retained")
        plain = summary.get("baseline_metrics")
        plain = plain if isinstance(plain, dict) and plain else None
        b_val = plain.get(metric) if plain else None
        b_info = summary.get("baseline") if isinstance(summary.get("baseline"), dict) else {}
        b_q = b_info.get("quality_retained")
        if not isinstance(b_q, (int, float)) and plain and isinstance(t_val, (int, float)) \
                and isinstance(b_val, (int, float)) and t_val > 0 and b_val > 0:
            b_q = t_val / b_val if metric == "perplexity" else b_val / t_val
        # The 95% intervals the run recorded (none for older runs: the figures alone).
        ivs, ivs_before = summary.get("intervals"), summary.get("intervals_before")
        ivs_plain = b_info.get("intervals")
        student_par, student_mb = fmt_params(s_par) + _share(s_par, t_par), _num(s_mb, "MB") + _share(s_mb, t_mb)
        values = {
            "parameters": (fmt_params(t_par), student_par, student_par),
            "size_mb": (_num(t_mb, "MB"), student_mb, student_mb),
            "latency_ms": (_latency(summary, "teacher", t_ms), _latency(summary, "student", s_ms),
                           _latency(summary, "student", s_ms)),
            "speedup": ("1x", _speedup(summary, table.get("speedup")),
                        _speedup(summary, table.get("speedup"))),
            "metric": (_pm(fmt_metric(metric, t_val), ivs, f"teacher.{metric}", metric),
                       _pm(fmt_metric(metric, s_val), ivs, metric, metric),
                       _pm(fmt_metric(metric, b_val), ivs_plain, metric, metric)),
            "before": (DASH, _pm(fmt_metric(metric, before), ivs_before, metric, metric),
                       fmt_metric(metric, before)),
            "quality_retained": ("100%", _pct(q, ivs), _pct(b_q, ivs_plain)),
        }
        self.metric_label = METRIC_LABELS.get(metric) or metric.replace("_", " ").capitalize()
        for r, (key, _, _) in enumerate(ROWS):
            for c in range(len(COLUMNS)):
                self._set(r, c, values[key][c])
        self._fit_rows()
        self.setColumnHidden(2, plain is None)
        self.updateGeometry()  # the widest figure sets the table's least width
        if plain is not None:
            for key in ("parameters", "size_mb", "latency_ms", "speedup"):
                self.item([k for k, _, _ in ROWS].index(key), 2).setToolTip(SAME_SHAPE)
            self.item([k for k, _, _ in ROWS].index("before"), 2).setToolTip(
                "It starts from the same student as the distilled one.")
        for key in ("speedup", "quality_retained"):
            self.item([k for k, _, _ in ROWS].index(key), 0).setToolTip("The teacher is the reference.")
        session = summary_session(summary)
        if session is not None:
            row = [k for k, _, _ in ROWS].index("latency_ms")
            where = (f"Timed together on {session.device} at {session.timed_at}"
                     + (f", {session.load.words()}" if session.load.busy else "") + ".")
            for c in range(len(COLUMNS)):
                self.item(row, c).setToolTip(f"{self.cell('latency_ms', c)}. {where}")
        if isinstance(t_par, (int, float)) and isinstance(s_par, (int, float)):
            self.item(0, 0).setToolTip(f"{int(t_par):,} parameters")
            self.item(0, 1).setToolTip(f"{int(s_par):,} parameters, {s_par / t_par:.1%} of the "
                                       "teacher's")

    def _set(self, row: int, col: int, text: str) -> None:
        one_line = text
        if ROWS[row][0] in TWO_LINES and " (" in text:
            # The spread on a line of its own: one line each made the table (and so the page)
            # wider than a 1280-px window.
            head, spread = text.split(" (", 1)
            text = f"{head}\n{spread.removesuffix(')')}"
        item = QTableWidgetItem(text)
        item.setData(ONE_LINE, one_line)
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        item.setToolTip(one_line)
        self.setItem(row, col, item)

    def _fit_rows(self) -> None:
        """A row with a two-line cell gets the height of two lines; the others one."""
        for r in range(self.rowCount()):
            two = any((it := self.item(r, c)) is not None and "\n" in it.text()
                      for c in range(self.columnCount()))
            self.setRowHeight(r, ROW_H * 2 - 6 if two else ROW_H)


class FiguresPanel(QGroupBox):
    """The table with a note naming the score and where the figures come from."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("What the student saves and keeps", parent)
        self.setObjectName("compareFigures")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 10, 8, 10)
        lay.setSpacing(6)
        self.table = FiguresTable()
        self.note = QLabel()
        self.note.setObjectName("compareFiguresNote")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: palette(placeholder-text);")
        lay.addWidget(self.table)
        lay.addWidget(self.note)

    def set_figures(self, table: dict[str, Any], summary: dict[str, Any]) -> None:
        self.table.set_figures(table, summary)
        score = f"Score: {self.table.metric_label}. " if self.table.metric_label else ""
        plain = (" Plain training: the same student trained for the same steps without the "
                 "teacher." if self.table.has_baseline() else "")
        self.note.setText(f"{score}Measured on the evaluation data at the end of training.{plain}")
        self._fit_note()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit_note()

    def _fit_note(self) -> None:
        # Layouts size a wrapped label by its one-line hint; ask for the lines it really needs,
        # or the table above it gets squeezed.
        self.note.setMinimumHeight(max(0, self.note.heightForWidth(max(50, self.note.width()))))
