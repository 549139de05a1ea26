"""The Runs page's detail panel: the selected run's before/after figures and its curves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSplitter,
    QStackedWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.pages.runs.model import STATUS_COLORS, short_model
from kdstudio.ui.pages.runs.summary_table import SummaryTable
from kdstudio.ui.widgets.common import make_plot as _make_plot

# Distinct, colour-blind-friendly line colours (Tableau 10), then generated hues.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


PLOTS_MIN = 380  # the two training-curve plots side by side, at their narrowest


def colour(i: int, n: int = 10) -> Any:
    return pg.mkColor(PALETTE[i]) if i < len(PALETTE) else pg.intColor(i, hues=max(n, 12))


def make_plot(name: str, title: str, x_label: str, y_label: str) -> pg.PlotWidget:
    """The Runs page's plots: with a faint grid (they are redrawn rarely)."""
    return _make_plot(name, title, x_label, y_label, grid=True)


def legend_below(plot: pg.PlotWidget) -> pg.LegendItem:
    """A legend under the plot, outside the curves: in a corner it covered the last point
    of a rising quality curve."""
    item = plot.getPlotItem()
    legend = pg.LegendItem(labelTextColor="#333333", colCount=4)
    # The row under the bottom axis, across the whole plot: under the view box alone its
    # entries widened a narrow plot past its widget, cutting the title.
    item.layout.addItem(legend, 4, 0, 1, 3)
    item.legend = legend  # curves plotted with a name join it
    return legend


@dataclass
class RunDetails:
    """What the panel shows for one run (read in a background job)."""

    path: Path
    summary: dict[str, Any]
    rows: list[tuple[str, str, str, str]]
    curves: Any  # core.run_compare.RunCurves
    labels: dict[str, str] = field(default_factory=dict)
    # A sequence-level run's teacher continuations (prompt, continuation), the first few.
    generations: list[tuple[str, str]] = field(default_factory=list)
    generations_total: int = 0


def load_details(path: str | Path) -> RunDetails:
    """Read summary.json and metrics.jsonl of one run (run it in a job)."""
    from kdstudio.core.errors import KDStudioError
    from kdstudio.core.lm import GENERATIONS_FILE, load_generations
    from kdstudio.core.run_compare import (
        METRIC_LABELS,
        read_summary,
        run_curves,
        summary_rows,
    )

    summary = read_summary(path)
    curves = run_curves(path)
    d = RunDetails(Path(path), summary, summary_rows(summary), curves, dict(METRIC_LABELS))
    if (Path(path) / GENERATIONS_FILE).exists():
        try:
            prompts, conts = load_generations(path)
            d.generations = list(zip(prompts, conts))[:GENERATIONS_SHOWN]
            d.generations_total = len(prompts)
        except KDStudioError:  # a damaged file: the run's figures still show
            pass
    return d


GENERATIONS_SHOWN = 50


class RunDetailsPanel(QWidget):
    """Summary figures on the left, loss and eval-metric curves on the right."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("runDetails")
        self.items: list[RunDetails] = []
        self.names: list[str] = []
        self.stack = QStackedWidget()
        self.placeholder = QLabel("Select a run above to see its figures and training curves.\n"
                                  "Select two or more to compare them.")
        self.placeholder.setObjectName("detailsPlaceholder")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setStyleSheet("color: #666666; font-size: 11pt;")
        self.placeholder.setWordWrap(True)
        self.stack.addWidget(self.placeholder)
        self.stack.addWidget(self._build_content())
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.stack)

    def _build_content(self) -> QWidget:
        self.title_label = QLabel()
        self.title_label.setObjectName("runTitle")
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info_label = QLabel()
        self.info_label.setObjectName("runInfo")
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label = QLabel()
        self.error_label.setObjectName("runError")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(f"color: {STATUS_COLORS['failed']};")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.summary_table = SummaryTable(0, 4)
        self.summary_table.setObjectName("summaryTable")
        self.summary_table.setAccessibleName("Before and after distillation")
        self.summary_table.setToolTip("The teacher, the student before training and the student after "
                                      "training, measured on the same held-out data.")
        self.summary_table.setHorizontalHeaderLabels(["", "Teacher", "Student before", "Student after"])
        self.summary_table.verticalHeader().setVisible(False)
        self.summary_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.summary_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.summary_table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.summary_table.setAlternatingRowColors(True)
        self.summary_table.setShowGrid(False)
        # Long metric names wrap onto a second line instead of being cut in a narrow panel.
        self.summary_table.setWordWrap(True)
        self.summary_table.verticalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.summary_note = QLabel()
        self.summary_note.setObjectName("summaryNote")
        self.summary_note.setWordWrap(True)
        self.summary_note.setStyleSheet("color: #666666;")
        self.generations_view = QTextBrowser()
        self.generations_view.setObjectName("runGenerations")
        self.generations_view.setAccessibleName("The teacher's continuations")
        self.generations_view.setToolTip("Sequence-level distillation: the texts the teacher wrote "
                                         "and the student trained on (prompt in bold). All of them "
                                         "are in generations.jsonl in the run folder.")
        self.generations_view.setVisible(False)

        self.loss_plot = make_plot("runLossPlot", "Loss by step", "step", "loss")
        legend_below(self.loss_plot)
        self.metric_plot = make_plot("metricPlot", "Evaluation", "step", "")
        legend_below(self.metric_plot)
        self.metric_combo = QComboBox()
        self.metric_combo.setObjectName("metricCombo")
        self.metric_combo.setAccessibleName("Evaluation metric to plot")
        self.metric_combo.setToolTip("Which evaluation figure of the student to draw by step.")
        # As wide as its longest metric name ("Nearest-neighbour topic accuracy"), never cut.
        self.metric_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.metric_combo.currentIndexChanged.connect(lambda _i: self._draw_metric())

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 6, 0)
        ll.addWidget(self.summary_table, 1)
        ll.addWidget(self.summary_note)
        ll.addWidget(self.generations_view, 1)
        right = QWidget()
        rl = QGridLayout(right)
        rl.setContentsMargins(6, 0, 0, 0)
        curves_label = QLabel("<b>Training curves</b>")
        curves_label.setObjectName("curvesHeading")
        # Heading and metric picker share a row across both plots: the picker squeezed above
        # one plot cut its longest names.
        pick = QHBoxLayout()
        pick.addWidget(curves_label)
        pick.addStretch(1)
        metric_label = QLabel("Metric:")
        metric_label.setBuddy(self.metric_combo)
        pick.addWidget(metric_label)
        pick.addWidget(self.metric_combo)
        rl.addLayout(pick, 0, 0, 1, 2)
        self._pick = pick
        rl.addWidget(self.loss_plot, 1, 0)
        rl.addWidget(self.metric_plot, 1, 1)
        rl.setColumnStretch(0, 1)
        rl.setColumnStretch(1, 1)
        rl.setRowStretch(1, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.setObjectName("detailsSplitter")
        split.setChildrenCollapsible(False)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([500, 560])
        self.split = split

        content = QWidget()
        lay = QVBoxLayout(content)
        lay.setContentsMargins(0, 4, 0, 0)
        lay.setSpacing(4)
        lay.addWidget(self.title_label)
        lay.addWidget(self.info_label)
        lay.addWidget(self.error_label)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        lay.addWidget(line)
        lay.addWidget(split, 1)
        return content

    # -- showing ---------------------------------------------------------------------------------
    def clear(self, message: str = "") -> None:
        self.items = []
        self.placeholder.setText(message or "Select a run above to see its figures and training curves.\n"
                                            "Select two or more to compare them.")
        self.stack.setCurrentIndex(0)

    @property
    def details(self) -> RunDetails | None:
        return self.items[0] if len(self.items) == 1 else None

    def show_details(self, d: RunDetails, status: str) -> None:
        """One run: its before/after table and its curves."""
        self.items, self.names = [d], [_name(d)]
        s = d.summary
        self.title_label.setText(f"<span style='font-size: 13pt; font-weight: 600;'>{_esc(_name(d))}</span>")
        color = STATUS_COLORS.get(status, STATUS_COLORS["unknown"])
        bits = [f"<b style='color: {color};'>{_esc(status)}</b>"]
        for key in ("created", "task"):
            if isinstance(s.get(key), str) and s[key]:
                bits.append(_esc(s[key].replace("T", " ")))
        teacher, student = s.get("teacher"), s.get("student")
        if isinstance(teacher, str) and isinstance(student, str):
            bits.append(f"{_esc(short_model(teacher))} &rarr; {_esc(short_model(student))}")
        steps, total = s.get("steps"), s.get("total_steps")
        if isinstance(total, int):
            bits.append(f"{steps if isinstance(steps, int) else '?'} of {total} steps")
        targets = s.get("teacher_targets")
        if isinstance(targets, dict) and targets.get("mode") in ("live", "cache"):
            bits.append("teacher cache" if targets["mode"] == "cache" else "live teacher")
        self.info_label.setText(" &middot; ".join(bits))
        if isinstance(targets, dict) and isinstance(targets.get("why"), str):
            self.info_label.setToolTip(f"{d.path}\n{targets['why']}")
            has_why = True
        else:
            has_why = False
        if not has_why:
            self.info_label.setToolTip(str(d.path))
        error = s.get("error") if isinstance(s.get("error"), str) else ""
        self.error_label.setText(error)
        self.error_label.setVisible(bool(error))
        from kdstudio.core.run_compare import summary_columns

        columns = [c[0].upper() + c[1:] for c in summary_columns(s)]
        # Bold the distilled student's column (the third), also when a baseline follows it.
        self._fill_table(["", *columns], [(r[0], list(r[1:])) for r in d.rows], bold_last=True,
                         bold_column=3)
        notes = []
        if status == "damaged":
            notes.append("This run's summary.json is missing or damaged, so its figures cannot be shown; "
                         "its curves come from metrics.jsonl.")
        elif not d.rows:
            notes.append("No figures were recorded for this run yet.")
        elif status in ("stopped", "interrupted"):
            notes.append("The run did not finish, so the student was not measured after training. "
                         "Resume it to finish training and measure it.")
        elif status == "running":
            notes.append("The run is still training; the figures after training come when it ends.")
        from kdstudio.core.plan.record import estimate_check

        if status == "finished" and estimate_check(s):  # how far off the plan's estimate was
            notes.append(estimate_check(s))
        self._set_note(" ".join(notes))
        self._show_generations(d)
        self._draw_all()

    def _show_generations(self, d: RunDetails | None) -> None:
        shown = bool(d and d.generations)
        self.generations_view.setVisible(shown)
        if not shown:
            return
        head = (f"<p><b>The teacher's continuations</b> ({len(d.generations)} of "
                f"{d.generations_total}; the student trained on these)</p>")
        body = "".join(f"<p><b>{_esc(p)}</b>{_esc(c)}</p>" for p, c in d.generations)
        self.generations_view.setHtml(head + body)

    def show_many(self, items: list[RunDetails]) -> None:
        """Several runs: their students side by side, and their curves on one plot each."""
        from kdstudio.core.run_compare import compare_rows

        self.items, self.names = list(items), _unique([_name(d) for d in items])
        self.title_label.setText(f"<span style='font-size: 13pt; font-weight: 600;'>{len(items)} runs "
                                 "selected</span>")
        self.info_label.setText("The students after training, side by side. <b>Overlay curves</b> opens a "
                                "larger plot" + ("; <b>Compare configs</b> lists how their settings differ."
                                                 if len(items) == 2 else "."))
        self.info_label.setToolTip("")
        self.error_label.setVisible(False)
        self._fill_table(["", *self.names], compare_rows([d.summary for d in items]), bold_last=False)
        tasks = {d.summary.get("task") for d in items if d.summary.get("task")}
        self._set_note("These runs are of different tasks, so their metrics differ." if len(tasks) > 1 else "")
        self._show_generations(None)
        self._draw_all()

    def _fill_table(self, header: list[str], rows: list[tuple[str, list[str]]], bold_last: bool,
                    bold_column: int = 0) -> None:
        self.summary_table.fill(header, rows, bold_last, bold_column)
        QTimer.singleShot(0, self._give_table_room)  # once the page has laid itself out

    def _give_table_room(self) -> None:
        """The figures first: the table takes the width it needs, the curves keep at least
        PLOTS_MIN (a 1280-px window showed "Student after" only by scrolling sideways)."""
        sizes, need = self.split.sizes(), self.summary_table.needed_width() + 8
        keep = max(PLOTS_MIN, self._pick.sizeHint().width() + 12)  # the metric picker uncut
        if sum(sizes) > 0 and sizes[0] < need:
            left = min(need, sum(sizes) - keep)
            if left > sizes[0]:
                self.split.setSizes([left, sum(sizes) - left])

    def _set_note(self, text: str) -> None:
        self.summary_note.setText(text)
        self.summary_note.setVisible(bool(text))

    def _draw_all(self) -> None:
        self._draw_loss()
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        if len(self.items) == 1:
            d = self.items[0]
            names = list(d.curves.metrics)
            if d.curves.headline in names:
                names.remove(d.curves.headline)
                names.insert(0, d.curves.headline)
            for m in names:
                self.metric_combo.addItem(d.labels.get(m, m), m)
        else:
            common = set.intersection(*(set(d.curves.metrics) for d in self.items))
            self.metric_combo.addItem("Headline metric of each run", "headline")
            for m in sorted(common):
                self.metric_combo.addItem(self.items[0].labels.get(m, m), m)
        self.metric_combo.setEnabled(self.metric_combo.count() > 1)
        self.metric_combo.blockSignals(False)
        self._draw_metric()
        self.stack.setCurrentIndex(1)

    def _draw_loss(self) -> None:
        item = self.loss_plot.getPlotItem()
        item.clear()
        if len(self.items) > 1:
            drawn = 0
            for i, d in enumerate(self.items):
                if (data := d.curves.losses.get("total")) is not None:
                    plot_curve(item, data, colour(i, len(self.items)), self.names[i])
                    drawn += 1
            item.setTitle("Total loss by step" if drawn else "Total loss (no steps recorded)",
                          color="#333333", size="10pt")
            return
        losses = self.items[0].curves.losses if self.items else {}
        names = sorted(losses, key=lambda k: (k == "total", k))
        total = losses.get("total")
        if total is not None:  # a component equal to the total (the only term, weight 1) adds nothing
            names = [n for n in names if n == "total" or not _same(losses[n], total)]
        for i, name in enumerate(names):
            plot_curve(item, losses[name], "#222222" if name == "total" else colour(i), name,
                  width=2.5 if name == "total" else 1.5)
        item.setTitle("Loss by step" if names else "Loss by step (no steps recorded)",
                      color="#333333", size="10pt")

    def _draw_metric(self) -> None:
        item = self.metric_plot.getPlotItem()
        item.clear()
        metric = self.metric_combo.currentData()
        if not self.items or metric is None:
            item.setTitle("Evaluation (no evaluations recorded)", color="#333333", size="10pt")
            return
        if len(self.items) > 1:
            for i, d in enumerate(self.items):
                if (data := d.curves.series("headline" if metric == "headline" else f"metric:{metric}")) is not None:
                    plot_curve(item, data, colour(i, len(self.items)), self.names[i], symbols=True)
            item.setTitle(self.metric_combo.currentText(), color="#333333", size="10pt")
            return
        d = self.items[0]
        x, _y = d.curves.metrics[metric]
        plot_curve(item, d.curves.metrics[metric], PALETTE[0], "student", symbols=True)
        teacher = d.curves.teacher_metrics.get(metric)
        if teacher is not None and len(x):
            item.plot([x.min(), max(x.max(), x.min() + 1)], [teacher, teacher],
                      pen=pg.mkPen(PALETTE[1], width=1.5, style=Qt.PenStyle.DashLine), name="teacher")
        item.setTitle(d.labels.get(metric, metric), color="#333333", size="10pt")


def plot_curve(item: Any, data: Any, color: Any, name: str, *, width: float = 2.0, symbols: bool = False) -> Any:
    """One curve; points get markers when there are few of them (a single step is still seen)."""
    x, y = data
    marks = symbols or len(x) <= 30
    return item.plot(x, y, pen=pg.mkPen(color, width=width), name=name, connect="finite",
                     symbol="o" if marks else None, symbolSize=6 if symbols else 5,
                     symbolBrush=pg.mkBrush(color), symbolPen=None)


def _name(d: RunDetails) -> str:
    name = d.summary.get("name")
    return name if isinstance(name, str) and name else d.path.name


def _unique(names: list[str]) -> list[str]:
    """Names with a number added where two runs share one, so legends stay readable."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n} ({seen[n]})")
    return out


def _same(a: Any, b: Any) -> bool:
    return a[0].shape == b[0].shape and np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1], equal_nan=True)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
