"""Dialogs of the Runs page: the config difference of two runs, and curves of several runs overlaid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.pages.runs.details import colour, make_plot, plot_curve


def load_diff(path_a: str | Path, path_b: str | Path) -> list[tuple[str, Any, Any, str]]:
    """(key, value_a, value_b, help) for every differing key (reads two files: run it in a job)."""
    from kdstudio.core.run_compare import key_help, run_config_diff

    return [(k, a, b, key_help(k)) for k, a, b in run_config_diff(path_a, path_b)]


class ConfigDiffDialog(QDialog):
    """A table of the settings that differ between two runs."""

    def __init__(self, name_a: str, name_b: str, diff: list[tuple[str, Any, Any, str]],
                 parent: QWidget | None = None):
        from kdstudio.core.run_compare import format_value

        super().__init__(parent)
        self.setObjectName("configDiffDialog")
        self.setAccessibleName("Config difference")
        self.setWindowTitle(f"Config difference: {name_a} and {name_b}")
        self.resize(760, max(240, min(560, 150 + 30 * len(diff))))
        intro = QLabel(f"<b>{len(diff)}</b> setting{'s' if len(diff) != 1 else ''} differ between "
                       f"<b>{_esc(name_a)}</b> and <b>{_esc(name_b)}</b>. Hover over a setting to "
                       "read what it does." if diff else
                       f"<b>{_esc(name_a)}</b> and <b>{_esc(name_b)}</b> were run with the same config.")
        intro.setObjectName("configDiffIntro")
        intro.setWordWrap(True)
        self.table = QTableWidget(len(diff), 3)
        self.table.setObjectName("configDiffTable")
        self.table.setAccessibleName("Settings that differ")
        self.table.setHorizontalHeaderLabels(["Setting", name_a, name_b])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        for r, (key, a, b, help_text) in enumerate(diff):
            for c, text in enumerate((key, format_value(a), format_value(b))):
                item = QTableWidgetItem(text)
                item.setToolTip(help_text if c == 0 and help_text else text)
                self.table.setItem(r, c, item)
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        head.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        head.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setVisible(bool(diff))
        self.table.setCurrentItem(None)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.setObjectName("configDiffButtons")
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.Close).setAccessibleName("Close")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(14, 14, 14, 14)
        lay.addWidget(intro)
        lay.addWidget(self.table, 1)
        if not diff:
            lay.addStretch(1)
        lay.addWidget(buttons)

    def keys(self) -> list[str]:
        return [self.table.item(r, 0).text() for r in range(self.table.rowCount())]


@dataclass
class OverlayRun:
    name: str
    path: Path
    curves: Any  # core.run_compare.RunCurves


def load_overlay(runs: list[tuple[str, str]]) -> tuple[list[OverlayRun], dict[str, str]]:
    """Curves of several runs, given as (name, path), and the metric labels (run it in a job)."""
    from kdstudio.core.run_compare import METRIC_LABELS, run_curves

    return [OverlayRun(name, Path(p), run_curves(p)) for name, p in runs], dict(METRIC_LABELS)


class OverlayDialog(QDialog):
    """One plot with one curve per run: total loss or the headline metric, by step."""

    SERIES = (("loss:total", "Total loss"), ("headline", "Headline metric"))

    def __init__(self, runs: list[OverlayRun], labels: dict[str, str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("overlayDialog")
        self.setAccessibleName("Overlay curves")
        self.setWindowTitle(f"Curves of {len(runs)} runs")
        self.resize(900, 560)
        self.runs, self.labels = runs, labels
        self.series_combo = QComboBox()
        self.series_combo.setObjectName("overlaySeries")
        self.series_combo.setAccessibleName("Series to overlay")
        self.series_combo.setToolTip("Which curve to draw for every selected run.")
        for key, text in self.SERIES:
            self.series_combo.addItem(text, key)
        self.series_combo.currentIndexChanged.connect(lambda _i: self.draw())
        self.note = QLabel()
        self.note.setObjectName("overlayNote")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #666666;")
        self.plot = make_plot("overlayPlot", "Total loss", "step", "")
        self.legend = self.plot.getPlotItem().addLegend(offset=(-10, 10), labelTextColor="#333333",
                                                        brush=pg.mkBrush(255, 255, 255, 210))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.setObjectName("overlayButtons")
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.Close).setAccessibleName("Close")
        top = QHBoxLayout()
        label = QLabel("Show:")
        label.setBuddy(self.series_combo)
        top.addWidget(label)
        top.addWidget(self.series_combo)
        top.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(14, 14, 14, 14)
        lay.addLayout(top)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.note)
        lay.addWidget(buttons)
        self.curves: list[pg.PlotDataItem] = []
        self.draw()

    def set_series(self, key: str) -> None:
        self.series_combo.setCurrentIndex(self.series_combo.findData(key))

    def draw(self) -> None:
        """One curve per run that has the series; a note names the runs without it."""
        item = self.plot.getPlotItem()
        item.clear()
        self.curves = []
        key = self.series_combo.currentData()
        heads = {r.curves.headline for r in self.runs if r.curves.headline}
        missing = []
        for i, run in enumerate(self.runs):
            data = run.curves.series(key)
            if data is None or not len(data[0]):
                missing.append(run.name)
                continue
            name = run.name
            if key == "headline" and len(heads) > 1:
                name += f" ({self.labels.get(run.curves.headline, run.curves.headline).split(' (')[0]})"
            self.curves.append(plot_curve(item, data, colour(i, len(self.runs)), name,
                                          symbols=key == "headline"))
        if key == "headline":
            title = (self.labels.get(next(iter(heads)), next(iter(heads))) if len(heads) == 1
                     else "Headline metric of each run")
        else:
            title = "Total loss"
        item.setTitle(title, color="#333333", size="10pt")
        notes = []
        if key == "headline" and len(heads) > 1:
            notes.append("These runs measure different things (different tasks), so their lines "
                         "are not on the same scale.")
        if missing:
            notes.append(f"No data to draw for: {', '.join(missing)}.")
        self.note.setText(" ".join(notes))
        self.note.setVisible(bool(notes))


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
