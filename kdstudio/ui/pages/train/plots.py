"""Live training plots: losses, the student's headline metric, learning rate, speed, memory.

Events only append to growing numpy buffers; a single-shot QTimer redraws at most every
REDRAW_MS (about 6 times a second), whatever the event rate. Curves are created once (loss
curves as their component first appears) and fed with setData; peak downsampling and
clip-to-view keep long runs cheap to draw (pyqtgraph's scrolling-plots recipe).

pyqtgraph paints in Python, so while the training thread holds the GIL a repaint of all five
plots can stall the window for 50 ms and more. Each tick therefore redraws the loss plot
(and the quality plot when it has a new point) and one of the three small plots in turn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QGridLayout, QWidget

from kdstudio.ui.widgets.common import make_plot

REDRAW_MS = 150
LOSS_COLOURS = {"total": "#3c3c3c", "logit": "#1f77b4", "hard_label": "#ff7f0e",
                "hidden": "#2ca02c", "embedding": "#9467bd"}
EXTRA_COLOURS = ("#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
INVISIBLE = pg.mkPen(0, 0, 0, 0)  # drawn (so auto-range counts it) but not seen
LOSS_NAMES = {"total": "total", "logit": "logits (imitate teacher)", "hard_label": "true labels",
              "hidden": "hidden states", "embedding": "embeddings"}


class Series:
    """x/y values in numpy arrays that double when full, so appending is cheap."""

    def __init__(self) -> None:
        self._x = np.empty(256)
        self._y = np.empty(256)
        self.n = 0

    def append(self, x: float, y: float) -> None:
        if self.n == len(self._x):
            self._x = np.resize(self._x, 2 * self.n)
            self._y = np.resize(self._y, 2 * self.n)
        self._x[self.n], self._y[self.n] = x, y
        self.n += 1

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        return self._x[:self.n], self._y[:self.n]


def _plot(name: str, title: str, left: str) -> pg.PlotWidget:
    # No grid: its lines are redrawn (in Python) with the axes, the biggest part of a repaint.
    return make_plot(name, title, "step", left, min_size=(120, 110))


class TrainPlots(QWidget):
    """The five plots of the Train page; ``redrawn`` after each capped-rate redraw."""

    redrawn = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("trainPlots")
        # A short title: the long one was cut in a small window; the meaning is on hover.
        self.loss_plot = _plot("lossPlot", "Loss", "loss")
        closer = "Loss: lower means the student is closer to the teacher."
        self.loss_plot.setToolTip(closer)
        self.loss_plot.getPlotItem().titleLabel.setToolTip(closer)
        self.loss_legend = self.loss_plot.addLegend(offset=(-10, 10), labelTextColor="#333",
                                                 brush=pg.mkBrush(255, 255, 255, 210))
        self.eval_plot = _plot("evalPlot", "Student quality", "")
        self.eval_legend = self.eval_plot.addLegend(offset=(10, 10), labelTextColor="#333",
                                                 brush=pg.mkBrush(255, 255, 255, 210))
        self.lr_plot = _plot("lrPlot", "Learning rate", "")
        self.speed_plot = _plot("throughputPlot", "Speed", "samples / s")
        self.memory_plot = _plot("memoryPlot", "Memory", "MB")
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(6)
        grid.addWidget(self.loss_plot, 0, 0, 1, 2)
        grid.addWidget(self.eval_plot, 0, 2)
        grid.addWidget(self.lr_plot, 1, 0)
        grid.addWidget(self.speed_plot, 1, 1)
        grid.addWidget(self.memory_plot, 1, 2)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 2)
        for c in range(3):
            grid.setColumnStretch(c, 1)

        self.hint = pg.TextItem("The curves appear here once training starts.", color="#999",
                                anchor=(0.5, 0.5))
        self.hint.setPos(0.5, 0.5)
        # Outside auto-range: a hint that moved the range would be re-centred, move the range
        # again and repaint the plot without end (about 100 repaints a second).
        self.loss_plot.addItem(self.hint, ignoreBounds=True)
        # The hint lives in data coordinates: keep it in the middle of whatever range is shown
        # (a run's start fixes the x-axis to its steps, which would leave it on the left edge),
        # wrapped to the plot's width when the plot is narrow.
        self._hint_width = self.hint.textItem.boundingRect().width()
        vb = self.loss_plot.getPlotItem().getViewBox()
        vb.sigRangeChanged.connect(self._centre_hint)
        vb.sigResized.connect(self._centre_hint)
        self.loss_curves: dict[str, pg.PlotDataItem] = {}
        self.eval_curve = self.eval_plot.plot([], [], name="student", pen=pg.mkPen("#1f77b4", width=2),
                                              symbol="o", symbolSize=6, symbolBrush="#1f77b4")
        # Each evaluation's 95% interval (bootstrapped over the eval rows), when it has one.
        self.eval_bars = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), beam=0.0,
                                         pen=pg.mkPen("#1f77b4", width=1))
        self.eval_bars.setObjectName("evalErrorBars")
        self.eval_plot.addItem(self.eval_bars)
        self.teacher_line: pg.InfiniteLine | None = None
        # InfiniteLines do not count for auto-range; this invisible twin keeps the line in view.
        self.teacher_anchor = self.eval_plot.plot([], [], pen=INVISIBLE)
        self.lr_curve = self.lr_plot.plot([], [], pen=pg.mkPen("#8c564b", width=2))
        self.speed_curve = self.speed_plot.plot([], [], pen=pg.mkPen("#17becf", width=2))
        self.memory_curve = self.memory_plot.plot([], [], pen=pg.mkPen("#e377c2", width=2))
        # Speed and memory are amounts: keep 0 in view so small wobbles do not look dramatic.
        self.zero_anchors = [plot.plot([], [], pen=INVISIBLE)
                             for plot in (self.speed_plot, self.memory_plot)]
        self._timer = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self._timer.timeout.connect(lambda: self.flush(everything=False))
        self.reset()

    def _centre_hint(self, *_: Any) -> None:
        if not self.hint.isVisible():
            return
        vb = self.loss_plot.getPlotItem().getViewBox()
        room = vb.sceneBoundingRect().width() - 12
        width = max(60.0, room) if room < self._hint_width else -1
        if width != getattr(self, "_hint_text_width", None):  # re-wrapping costs a relayout
            self._hint_text_width = width
            self.hint.setTextWidth(width)
        (x0, x1), (y0, y1) = vb.viewRange()
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        if centre != getattr(self, "_hint_centre", None):
            self._hint_centre = centre
            self.hint.setPos(*centre)

    # -- data in -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty every plot for a new run (curves are removed; they come back as data arrives)."""
        self._timer.stop()
        for curve in self.loss_curves.values():
            self.loss_plot.removeItem(curve)
            self.loss_legend.removeItem(curve)
        self.loss_curves.clear()
        self.losses: dict[str, Series] = {}
        self.evals = Series()
        self.eval_intervals: list[tuple[float, float, float, float]] = []  # x, y, low, high
        self.lr, self.speed, self.memory = Series(), Series(), Series()
        if self.teacher_line is not None:
            self.eval_plot.removeItem(self.teacher_line)
            self.teacher_line = None
        self.teacher_value: float | None = None
        self._steps_dirty = self._evals_dirty = True
        self._small_dirty = [True, True, True]  # lr, speed, memory
        self._turn = 0
        self.metric_key = ""
        self.eval_plot.getPlotItem().setTitle("Student quality", color="#333", size="10pt")
        for plot in self._plots():
            plot.getPlotItem().enableAutoRange()
        self.flush()

    def set_total_steps(self, total: int, start: int = 0) -> None:
        """Fix every x-axis to the whole run: the curves grow into a still frame, and the
        axes need not redraw their ticks as each step arrives (costly while training)."""
        for plot in self._plots():
            vb = plot.getPlotItem().getViewBox()
            vb.enableAutoRange(axis="y")
            vb.setXRange(min(0, start), max(1, total), padding=0.02)

    def _plots(self) -> tuple[pg.PlotWidget, ...]:
        return (self.loss_plot, self.eval_plot, self.lr_plot, self.speed_plot, self.memory_plot)

    def add_step(self, e: Any) -> None:
        for name, value in e.losses.items():
            self.losses.setdefault(name, Series()).append(e.step, value)
        self.lr.append(e.step, e.lr)
        self.speed.append(e.step, e.samples_per_s)
        self.memory.append(e.step, e.memory_mb)
        self._steps_dirty = True
        self._small_dirty = [True, True, True]
        self._schedule()

    def set_metric(self, metric: str, label: str) -> None:
        # A long title would force the plot wider than its column (pyqtgraph then clips it):
        # keep the title short and name the metric along the axis.
        self.metric_key = metric
        item = self.eval_plot.getPlotItem()
        item.setTitle("Student quality", color="#333", size="10pt")
        item.setLabel("left", label.split(" (")[0])
        self.eval_plot.setToolTip(label)

    def add_eval(self, step: int, value: float | None, teacher: float | None,
                 interval: tuple[float, float] | None = None) -> None:
        """One evaluation's point, the teacher's figure, and the point's 95% interval (None:
        an older run's events, or a figure without one: the point alone)."""
        if value is not None:
            self.evals.append(step, value)
            if interval is not None:
                self.eval_intervals.append((step, value, interval[0], interval[1]))
        if teacher is not None:
            self.teacher_value = teacher
        self._evals_dirty = True
        self._schedule()

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    # -- drawing -------------------------------------------------------------------------------
    def _loss_curve(self, name: str) -> pg.PlotDataItem:
        curve = self.loss_curves.get(name)
        if curve is None:
            colour = LOSS_COLOURS.get(name) or EXTRA_COLOURS[len(self.loss_curves) % len(EXTRA_COLOURS)]
            # The total is a wide translucent band beneath the parts: with a single part the
            # two are equal, and the part must still show.
            pen = pg.mkPen(60, 60, 60, 120, width=4) if name == "total" else pg.mkPen(colour, width=1.5)
            curve = self.loss_plot.plot([], [], name=LOSS_NAMES.get(name, name), pen=pen)
            curve.setZValue(-1 if name == "total" else 0)
            curve.setObjectName(f"lossCurve_{name}")
            self.loss_curves[name] = curve
        return curve

    def flush(self, everything: bool = True) -> None:
        """Hand the buffered points to the curves: all of them (on demand), or on a timer tick
        the loss curves and one small plot. Only plots with new points are touched."""
        self._timer.stop()
        if self._steps_dirty:
            self._steps_dirty = False
            self.hint.setVisible(not self.losses)
            for name, series in self.losses.items():
                self._loss_curve(name).setData(*series.data())
        small = ((self.lr_curve, self.lr), (self.speed_curve, self.speed),
                 (self.memory_curve, self.memory))
        for i in range(3) if everything else [self._turn]:
            if self._small_dirty[i]:
                self._small_dirty[i] = False
                xs, ys = small[i][1].data()
                small[i][0].setData(xs, ys)
                if i > 0:
                    self.zero_anchors[i - 1].setData(xs[:1], [0.0] * min(1, len(xs)))
        self._turn = (self._turn + 1) % 3
        if self._evals_dirty:
            self._evals_dirty = False
            self._draw_evals()
        if any(self._small_dirty):
            self._schedule()  # the small plots not drawn this tick follow on the next
        self.redrawn.emit()

    def _draw_evals(self) -> None:
        self.eval_curve.setData(*self.evals.data())
        bars = np.array(self.eval_intervals, dtype=float).reshape(-1, 4)
        # A percentile interval need not be centred on the figure: top and bottom apart.
        self.eval_bars.setData(x=bars[:, 0], y=bars[:, 1], top=np.maximum(bars[:, 3] - bars[:, 1], 0),
                               bottom=np.maximum(bars[:, 1] - bars[:, 2], 0), beam=0.0)
        if self.teacher_value is not None:
            if self.teacher_line is None:
                self.teacher_line = pg.InfiniteLine(
                    pos=self.teacher_value, angle=0, movable=False,
                    pen=pg.mkPen("#d62728", width=2, style=Qt.PenStyle.DashLine),
                    label="teacher", labelOpts={"position": 0.97, "color": "#d62728",
                                                "anchors": [(1, 1), (1, 1)]})
                self.teacher_line.setObjectName("teacherLine")
                self.eval_plot.addItem(self.teacher_line)
            self.teacher_line.setValue(self.teacher_value)
            xs = self.evals.data()[0]
            span = [float(xs.min()), float(xs.max())] if len(xs) else [0.0, 0.0]
            self.teacher_anchor.setData(span, [self.teacher_value] * 2)
        else:
            self.teacher_anchor.setData([], [])
