"""Plot titles that fit: across the whole plot, wrapped to its width.

pyqtgraph puts the title over the view box only, in one line, in a row 30 px high; a title
longer than that ("Nearest-neighbour topic accuracy" in a 190 px plot) widened the plot past
its widget and was cut at both ends.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QTextOption

PAD = 4  # pixels kept free either side of a title


def fit_title(plot: Any, width: int | None = None) -> None:
    """Wrap the title of a PlotWidget to ``width`` (the widget's own when None)."""
    item = plot.getPlotItem()
    label = item.titleLabel
    if not label.isVisible():
        return
    text = label.item
    text.setTextWidth(-1)
    room = max(1, (plot.width() if width is None else width) - 2 * PAD)
    if text.boundingRect().width() > room:
        text.setTextWidth(room)
    label.updateMin()
    height = max(30, int(label.itemRect().height()) + 1)
    label.setMaximumHeight(height)
    item.layout.setRowFixedHeight(0, height)
    label.resizeEvent(None)


class _Fitter(QObject):
    """Refits a plot's title before the plot lays itself out at a new size."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize:
            fit_title(obj, event.size().width())
        return False


def fitting_titles(plot: Any) -> None:
    """Make a PlotWidget's title span the plot and wrap, now and after each setTitle."""
    item = plot.getPlotItem()
    label = item.titleLabel
    item.layout.removeItem(label)
    item.layout.addItem(label, 0, 0, 1, 3)
    label.item.document().setDefaultTextOption(QTextOption(Qt.AlignmentFlag.AlignHCenter))
    set_title = item.setTitle

    def setTitle(title: Any = None, **args: Any) -> None:  # noqa: N802 (pyqtgraph's name)
        set_title(title, **args)
        fit_title(plot)

    item.setTitle = setTitle
    plot._title_fitter = _Fitter(plot)
    plot.installEventFilter(plot._title_fitter)
    fit_title(plot)
