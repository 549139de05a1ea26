"""The tradeoff chart: quality retained against parameters, latency or size on disk.

``draw_tradeoff`` draws it on any pyqtgraph PlotItem: one point per student run (filled on
the Pareto front, hollow off it, coloured by the second-axis value), each int8 export as a
diamond of its student's colour joined to it by a thin line (filled on the front, hollow
off it), the front as a dashed line, the teacher as a red star at 100%. The Tradeoff page shows it in ``TradeoffChart``
(points clickable); ``render_png`` draws the same chart off screen for the command line.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget

from kdstudio.core.sweep.figures import COSTS, TableRow, front_rows
from kdstudio.core.sweep.queue import axis_label

COLORS = ["#2f6fb3", "#d9822b", "#2e8b57", "#8e44ad", "#b8860b", "#16a085", "#6d4c41"]
TEACHER_COLOR = "#c62828"
INT8_NAME = "int8 export"  # the legend entry of the int8 points
INT8_LEGEND_COLOR = "#555555"
FRONT_COLOR = "#2f6fb3"
Y_TITLE = "Quality retained (% of the teacher)"
_APPS: list[Any] = []  # a QApplication made here must outlive the call that made it


def x_scale(rows: Sequence[TableRow], cost: str) -> tuple[float, str]:
    """(divisor, axis title): parameters read in thousands, millions or billions."""
    title = COSTS[cost][1]
    if cost != "params":
        return 1.0, title
    top = max((r.params or 0 for r in rows), default=0)
    for div, word in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")):
        if top >= div:
            return div, f"Parameters ({word})"
    return 1.0, "Parameters"


def _tip(row: TableRow) -> str:
    parts = [row.label if not row.is_teacher else f"teacher {row.model}"]
    if row.is_int8:
        parts[0] += ": the student exported as int8 ONNX"
    if row.quality_retained is not None:
        from kdstudio.core.metrics import plus_minus

        iv = ((row.quality_low, row.quality_high)
              if row.quality_low is not None and row.quality_high is not None else None)
        parts.append(f"quality retained {row.quality_retained:.1%}{plus_minus(iv, True)}"
                     + (f" (the student: {row.student_quality:.1%})"
                        if row.is_int8 and row.student_quality is not None else ""))
    if row.params is not None:
        parts.append(f"{row.params:,} parameters")
    if row.size_mb is not None:
        parts.append(f"{row.size_mb:.3g} MB on disk")
    if row.latency_ms is not None:
        parts.append(f"{row.latency_ms:.3g} ms per sample"
                     + (f" (p10\u2013p90 {row.latency_p10:.3g}\u2013{row.latency_p90:.3g})"
                        if row.latency_p10 is not None and row.latency_p90 is not None else "")
                     + (" (ONNX Runtime)" if row.is_int8 else ""))
        if row.load:
            parts.append(row.load)
    if row.is_int8 and row.max_abs_diff is not None:
        parts.append(f"largest difference from the student's outputs {row.max_abs_diff:.2g}")
    if row.note:
        parts.append(row.note)
    if not row.is_teacher:
        parts.append("click to open the run")
    return "\n".join(parts)


def _quality_bars(plot_item: Any, placed: list[tuple[TableRow, tuple[float, float]]]) -> None:
    """Each point's 95% interval of quality retained, where its run recorded one."""
    import numpy as np
    import pyqtgraph as pg

    bars = [(x, y, r.quality_low * 100, r.quality_high * 100) for r, (x, y) in placed
            if r.quality_low is not None and r.quality_high is not None]
    if not bars:
        return
    a = np.array(bars, dtype=float)
    item = pg.ErrorBarItem(x=a[:, 0], y=a[:, 1], top=np.maximum(a[:, 3] - a[:, 1], 0),
                           bottom=np.maximum(a[:, 1] - a[:, 2], 0), beam=0.0,
                           pen=pg.mkPen("#555555", width=1))
    item.setObjectName("qualityErrorBars")
    plot_item.addItem(item)


def draw_tradeoff(plot_item: Any, rows: Sequence[TableRow], cost: str = "params", axis: str = "",
                  on_click: Callable[[str], None] | None = None) -> list[Any]:
    """Draw the chart on ``plot_item`` (cleared first); returns the clickable scatter items:
    one per group of students, then the int8 exports' (named INT8_NAME) when there are any.

    ``on_click(run_dir)`` is called when a student or int8 point is clicked.
    """
    import pyqtgraph as pg

    plot_item.clear()
    # Top left: the corner a student rarely reaches (tiny and as good as the teacher).
    legend = plot_item.legend if plot_item.legend is not None else plot_item.addLegend(offset=(10, 10))
    legend.clear()
    div, x_title = x_scale(rows, cost)
    plot_item.getAxis("bottom").setLabel(x_title, color="#444444")
    plot_item.getAxis("left").setLabel(Y_TITLE, color="#444444")

    def xy(r: TableRow) -> tuple[float, float] | None:
        c = r.cost(cost)
        if c is None or r.quality_retained is None:
            return None
        return c / div, r.quality_retained * 100

    placed = [(r, xy(r)) for r in rows]
    placed = [(r, p) for r, p in placed if p is not None]
    ref = pg.InfiniteLine(pos=100, angle=0, pen=pg.mkPen("#bbbbbb", width=1, style=Qt.PenStyle.DotLine))
    plot_item.addItem(ref)
    if not placed:
        return []
    _quality_bars(plot_item, placed)
    front = front_rows([r for r, _ in placed], cost)
    front_ids = {id(r) for r in front}
    if len(front) >= 2:
        pts = [xy(r) for r in front]
        plot_item.addItem(pg.PlotDataItem([p[0] for p in pts], [p[1] for p in pts],
                                          pen=pg.mkPen(FRONT_COLOR, width=2, style=Qt.PenStyle.DashLine),
                                          name="Pareto front"))

    values: list[Any] = []
    for r, _ in placed:
        if not r.is_teacher and r.axis_value not in values:
            values.append(r.axis_value)
    scatters = []
    for i, value in enumerate(values):
        color = COLORS[i % len(COLORS)]
        spots = []
        for r, (x, y) in placed:
            if r.role != "student" or r.axis_value != value:
                continue
            on = id(r) in front_ids
            # Later groups drawn smaller: runs of one student at one x show as rings, not one dot.
            spots.append({"pos": (x, y), "data": r.run_dir, "size": max(7, 15 - 4 * i),
                          "brush": pg.mkBrush(color if on else "#ffffff"),
                          "pen": pg.mkPen(color, width=2), "symbol": "o"})
        if not spots:
            continue
        name = f"students, {axis_label(axis, value)}" if value is not None else "students"
        tips = {r.run_dir: _tip(r) for r, _ in placed if r.role == "student"}
        # The item's own pen and brush are what its legend entry shows.
        s = pg.ScatterPlotItem(spots=spots, name=name, hoverable=True, symbol="o", size=11,
                               pen=pg.mkPen(color, width=2), brush=pg.mkBrush(color),
                               hoverPen=pg.mkPen("#222222", width=2),
                               tip=lambda x, y, data, tips=tips: tips.get(data, ""))
        if on_click is not None:
            s.sigClicked.connect(lambda _item, points, _ev: on_click(points[0].data()) if len(points) else None)
        plot_item.addItem(s)
        scatters.append(s)
    int8 = _draw_int8(plot_item, placed, values, front_ids, on_click)
    if int8 is not None:
        scatters.append(int8)
    # One label per student above its highest point: with a second axis the runs of one
    # student share an x, and the colours (legend) tell the axis values apart.
    labels: dict[tuple[str, float], float] = {}
    for r, (x, y) in placed:
        if r.is_teacher:
            teacher_tip = _tip(r)
            t = pg.ScatterPlotItem([x], [y], symbol="star", size=20, brush=pg.mkBrush(TEACHER_COLOR),
                                   pen=pg.mkPen("#7f0000"), name="teacher", hoverable=True,
                                   tip=lambda x, y, data, text=teacher_tip: text)
            plot_item.addItem(t)
            labels[("teacher", x)] = y
            continue
        if r.is_int8:
            continue  # the legend and the line to its student say what it is
        text = r.label.split(", ")[0] if len(values) > 1 else r.label
        labels[(text, x)] = max(y, labels.get((text, x), -math.inf))
    for (text, x), y in labels.items():
        label = pg.TextItem(text, color=TEACHER_COLOR if text == "teacher" else "#333333",
                            anchor=(0.5, 1.4))
        label.setPos(x, y)
        plot_item.addItem(label)

    xs = [p[0] for _, p in placed]
    ys = [p[1] for _, p in placed]
    lo, hi = min(ys + [100.0]), max(ys + [100.0])
    pad = max(4.0, (hi - lo) * 0.15)
    plot_item.setXRange(0, max(xs) * 1.12 or 1, padding=0)
    plot_item.setYRange(lo - pad, hi + pad * 1.6, padding=0)
    return scatters


def _draw_int8(plot_item: Any, placed: list[tuple[TableRow, tuple[float, float]]],
               values: list[Any], front_ids: set[int],
               on_click: Callable[[str], None] | None) -> Any:
    """The int8 exports: a diamond each in its student's colour, a thin line to the student."""
    import numpy as np
    import pyqtgraph as pg

    students = {r.run_dir: p for r, p in placed if r.role == "student"}
    spots, tips, xs, ys = [], {}, [], []
    for r, (x, y) in placed:
        if not r.is_int8:
            continue
        i = values.index(r.axis_value) if r.axis_value in values else 0
        color = COLORS[i % len(COLORS)]
        on = id(r) in front_ids
        # A little larger than its student's circle and drawn beneath it: where the two
        # coincide (parameters: an export keeps them all) the diamond's corners still show.
        spots.append({"pos": (x, y), "data": r.run_dir, "size": max(7, 15 - 4 * i) + 7,
                      "brush": pg.mkBrush(color if on else "#ffffff"),
                      "pen": pg.mkPen(color, width=2), "symbol": "d"})
        tips[r.run_dir] = _tip(r)
        if r.run_dir in students:
            sx, sy = students[r.run_dir]
            xs += [sx, x]
            ys += [sy, y]
    if not spots:
        return None
    if xs:  # drawn first, so the points sit on top of their lines
        joins = pg.PlotDataItem(np.array(xs), np.array(ys), connect="pairs",
                                pen=pg.mkPen("#888888", width=1, style=Qt.PenStyle.SolidLine))
        joins.setZValue(-1)
        plot_item.addItem(joins)
    s = pg.ScatterPlotItem(spots=spots, name=INT8_NAME, hoverable=True, symbol="d", size=12,
                           pen=pg.mkPen(INT8_LEGEND_COLOR, width=2), brush=pg.mkBrush("#ffffff"),
                           hoverPen=pg.mkPen("#222222", width=2),
                           tip=lambda x, y, data, tips=tips: tips.get(data, ""))
    s.setZValue(-0.5)
    if on_click is not None:
        s.sigClicked.connect(lambda _item, points, _ev: on_click(points[0].data()) if len(points) else None)
    plot_item.addItem(s)
    return s


class TradeoffChart(QWidget):
    """The chart on the Tradeoff page; ``point_clicked(run_dir)`` when a student is clicked."""

    point_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        from kdstudio.ui.widgets.common import make_plot

        self.plot = make_plot("tradeoffPlot", "Quality retained against parameters", COSTS["params"][1],
                              Y_TITLE, grid=True, min_size=(360, 300))
        self.plot.setToolTip("Each point is a student (a diamond: its int8 export, joined to "
                             "it by a thin line); the dashed line joins the points no other "
                             "beats on both quality and cost. Click a point to open its run.")
        self.plot.getPlotItem().setMenuEnabled(False)
        self.scatters: list[Any] = []
        self.rows: list[TableRow] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot)

    def set_rows(self, rows: Sequence[TableRow], cost: str = "params", axis: str = "") -> None:
        self.rows = list(rows)
        titles = {"params": "Quality retained against parameters",
                  "latency": "Quality retained against latency",
                  "size": "Quality retained against size on disk"}
        item = self.plot.getPlotItem()
        item.setTitle(titles[cost], color="#333333", size="10pt")
        self.scatters = draw_tradeoff(item, rows, cost, axis, self._clicked)

    @property
    def int8_scatter(self) -> Any:
        """The int8 exports' points, or None when no student has one on show."""
        return next((s for s in self.scatters if s.name() == INT8_NAME), None)

    def _clicked(self, run_dir: str) -> None:
        if run_dir:
            self.point_clicked.emit(run_dir)


def ensure_app() -> Any:
    """A QApplication for drawing off screen (the offscreen platform when there is no display)."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                     or os.environ.get("WAYLAND_DISPLAY")):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QApplication(["kdstudio"])
        _APPS.append(app)
    return app


def render_png(rows: Sequence[TableRow], path: str | Path, cost: str = "params", *,
               axis: str = "", title: str = "", size: tuple[int, int] = (1000, 640)) -> Path:
    """Draw the chart off screen and save it as PNG (written under a temporary name first)."""
    from PySide6.QtWidgets import QApplication

    from kdstudio.ui.widgets.common import make_plot

    ensure_app()
    path = Path(path)
    plot = make_plot("tradeoffPng", title or "Quality retained against size", COSTS[cost][1],
                     Y_TITLE, grid=True)
    plot.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen)
    plot.resize(*size)
    plot.show()  # laid out like a window, never on screen
    draw_tradeoff(plot.getPlotItem(), rows, cost, axis)
    QApplication.processEvents()
    pixmap = plot.grab()
    plot.close()
    plot.deleteLater()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    if not pixmap.save(str(tmp), "PNG"):
        tmp.unlink(missing_ok=True)
        raise OSError(f"The chart could not be written to '{path}'.")
    os.replace(tmp, path)
    return path
