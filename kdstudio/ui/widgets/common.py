"""Small helpers every page uses."""

from __future__ import annotations

from typing import Any, TypeVar

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QAbstractSpinBox, QCheckBox, QComboBox, QLabel, QLineEdit, QWidget

W = TypeVar("W", bound=QWidget)


def named(widget: W, name: str, accessible: str, tip: str = "") -> W:
    """Give a widget its objectName, accessible name and tooltip (tests and screen readers use them)."""
    widget.setObjectName(name)
    if isinstance(widget, QComboBox):  # its popup list is a widget of its own
        widget.view().setObjectName(f"{name}Popup")
    widget.setAccessibleName(accessible)
    if tip:
        widget.setToolTip(tip)
    return widget


class _KeepLines(QObject):
    def eventFilter(self, obj: Any, event: Any) -> bool:
        if event.type() == QEvent.Type.Resize:
            need = obj.heightForWidth(obj.width())
            if need > 0 and need != obj.minimumHeight():
                obj.setMinimumHeight(need)
        return False


def keep_lines(label: QLabel) -> QLabel:
    """Keep a word-wrapped label as tall as its lines at its width: some layouts (forms,
    stacked widgets) give it the height of its one-line hint and cut the rest."""
    label.setWordWrap(True)
    label.installEventFilter(_KeepLines(label))
    return label


def fit_placeholder(edit: QLineEdit, text: str) -> QLineEdit:
    """Set ``text`` as the edit's placeholder and keep the edit wide enough to show it whole
    (a layout sizes a line edit by a stock width, whatever its placeholder says)."""
    from PySide6.QtWidgets import QStyle

    edit.setPlaceholderText(text)
    frame = edit.style().pixelMetric(QStyle.PixelMetric.PM_DefaultFrameWidth, None, edit)
    margins = edit.textMargins()
    # 4: QLineEdit's own inner margin (2px a side); 4 more for the cursor and rounding.
    need = edit.fontMetrics().horizontalAdvance(text) + 2 * frame + margins.left() \
        + margins.right() + 8
    edit.setMinimumWidth(max(edit.minimumWidth(), need))
    return edit


def make_plot(name: str, title: str, x_label: str, y_label: str, *, grid: bool = False,
              min_size: tuple[int, int] = (160, 150)) -> Any:
    """A light pyqtgraph plot that fits a page, with peak downsampling and clip-to-view so
    long runs stay cheap to draw. A grid costs repaint time (its lines are drawn in Python)."""
    import pyqtgraph as pg

    plot = pg.PlotWidget(background="w")
    plot.setObjectName(name)
    plot.setAccessibleName(title)
    plot.setMinimumSize(*min_size)
    item = plot.getPlotItem()
    item.setTitle(title, color="#333333", size="10pt")
    for side, text in (("bottom", x_label), ("left", y_label)):
        axis = item.getAxis(side)
        axis.setPen(pg.mkPen("#888888"))
        axis.setTextPen(pg.mkPen("#444444"))
        axis.setLabel(text, color="#444444")
        axis.enableAutoSIPrefix(False)  # "(x0.001)" on an axis puzzles people
    if grid:
        item.showGrid(x=True, y=True, alpha=0.15)
    item.setDownsampling(auto=True, mode="peak")
    item.setClipToView(True)
    from kdstudio.ui.widgets.plot_title import fitting_titles

    fitting_titles(plot)
    return plot


def show_value(widget: QWidget, value: Any) -> None:
    """Put a config value into its control without emitting change signals (a check box, a
    line edit that is not being typed in, a spin box, or a combo box holding values as data)."""
    widget.blockSignals(True)
    try:
        if isinstance(widget, QCheckBox):
            widget.setChecked(bool(value))
        elif isinstance(widget, QLineEdit):
            if not widget.hasFocus():
                widget.setText(str(value))
        elif isinstance(widget, QAbstractSpinBox):
            widget.setValue(value)
        elif isinstance(widget, QComboBox):
            widget.setCurrentIndex(max(0, widget.findData(value)))
    finally:
        widget.blockSignals(False)
