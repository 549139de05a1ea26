"""Walk every page of the main window and list the text that is cut (test_text_fits.py).

Run as a module in a process of its own: KD_FITS_SIZES (JSON list of [w, h]) gives the
window sizes, KD_FITS_OUT the JSON file the findings go to, QT_SCALE_FACTOR the scale.

Text is cut when its widget is smaller than the text needs, or when the widget reaches past an
ancestor that clips it. Text a scroll area holds out of view is not cut: it scrolls.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QRect, Qt  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QAbstractButton,
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHeaderView,
    QLabel,
    QLineEdit,
    QStyle,
    QStyleOptionComboBox,
    QWidget,
)

SLACK = 1  # pixels of rounding


def _where(w: QWidget) -> str:
    names, p = [], w
    while p is not None and len(names) < 4:
        if p.objectName():
            names.append(p.objectName())
        p = p.parentWidget()
    return "/".join(reversed(names)) or type(w).__name__


def _plain(text: str) -> str:
    from PySide6.QtGui import QTextDocument

    if "<" in text and ">" in text:
        doc = QTextDocument()
        doc.setHtml(text)
        return doc.toPlainText()
    return text


def _shown(w: QWidget, win: QWidget) -> bool:
    return w.isVisibleTo(win) and w.isVisible() and QWidget.width(w) > 0 and QWidget.height(w) > 0


def _too_narrow(kind: str, w: QWidget, need: int, text: str) -> str:
    """'label x needs 120px, has 100: ...' when w is narrower than its text needs, else ''."""
    if need > QWidget.width(w) + SLACK:
        return f"{kind} {_where(w)} needs {need}px, has {QWidget.width(w)}: {text!r}"
    return ""


def label_cut(lab: QLabel) -> str:
    text = lab.text()
    if not text or lab.pixmap() is not None and not lab.pixmap().isNull():
        return ""
    if lab.wordWrap():
        need = lab.heightForWidth(QWidget.width(lab))
        if need > QWidget.height(lab) + SLACK:
            return f"label {_where(lab)} needs {need}px of height, has {QWidget.height(lab)}: {_plain(text)[:60]!r}"
        return ""
    return _too_narrow("label", lab, lab.sizeHint().width(), _plain(text)[:60])


def line_edit_cut(e: QLineEdit) -> str:
    text = e.text() or e.placeholderText()
    if not text:
        return ""
    margins = e.textMargins()
    # QLineEdit's own inner margin (2px a side) and the frame's width.
    room = e.contentsRect().width() - margins.left() - margins.right() - 4
    if e.hasFrame():
        room -= 2 * e.style().pixelMetric(QStyle.PixelMetric.PM_DefaultFrameWidth, None, e)
    need = e.fontMetrics().horizontalAdvance(text)
    if need > room + SLACK:
        return f"line edit {_where(e)} shows {need}px of text in {room}: {text!r}"
    return ""


def clipped(w: QWidget, win: QWidget) -> str:
    """A widget reaching past an ancestor that clips it (not a scroll area's viewport)."""
    rect, p = w.rect(), w
    while p is not win and p.parentWidget() is not None:
        rect = rect.translated(p.pos())
        parent = p.parentWidget()
        if parent.objectName() == "qt_scrollarea_viewport":
            return ""
        if not parent.rect().adjusted(-SLACK, -SLACK, SLACK, SLACK).contains(rect):
            return (f"{type(w).__name__} {_where(w)} reaches past {_where(parent)} "
                    f"({rect.getRect()} in {parent.rect().getRect()})")
        p = parent
    return ""


def plot_text_cuts(win: QWidget) -> list[str]:
    """Text items drawn inside a pyqtgraph plot (placeholders) must lie inside the plot, and
    the plot's title inside the widget (a long title widens the plot past its view)."""
    import pyqtgraph as pg

    out = []
    for plot in win.findChildren(pg.PlotWidget):
        if not _shown(plot, win):
            continue
        title = plot.getPlotItem().titleLabel
        if title.isVisible() and title.text:
            view = plot.mapToScene(plot.viewport().rect()).boundingRect()
            if not view.adjusted(-SLACK, -SLACK, SLACK, SLACK).contains(title.item.sceneBoundingRect()):
                out.append(f"plot title {_where(plot)} needs {title.item.boundingRect().width():.0f}px, "
                           f"has {view.width():.0f}: {_plain(title.text)[:60]!r}")
        vb = plot.getPlotItem().getViewBox()
        box = vb.sceneBoundingRect().adjusted(-SLACK, -SLACK, SLACK, SLACK)
        for item in vb.addedItems:
            if isinstance(item, pg.TextItem) and item.isVisible() and item.toPlainText():
                if not box.contains(item.sceneBoundingRect()):
                    out.append(f"plot text {_where(plot)} lies partly outside the plot: "
                               f"{item.toPlainText()[:60]!r}")
    return out


def button_cut(b: QAbstractButton) -> str:
    if not b.text():
        return ""
    return _too_narrow("button", b, b.sizeHint().width(), b.text())


def combo_cut(c: QComboBox) -> str:
    text = c.currentText()
    if not text:
        return ""
    opt = QStyleOptionComboBox()
    c.initStyleOption(opt)
    field = c.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, opt,
                                     QStyle.SubControl.SC_ComboBoxEditField, c)
    need = c.fontMetrics().horizontalAdvance(text)
    if need > field.width() + SLACK:
        return f"combo {_where(c)} shows {need}px of text in {field.width()}: {text!r}"
    return ""


def view_cuts(v: QAbstractItemView) -> list[str]:
    model = v.model()
    if model is None:
        return []
    out = []
    header = getattr(v, "horizontalHeader", None) or getattr(v, "header", None)
    h: QHeaderView | None = header() if header else None
    fm = v.fontMetrics()
    # The item delegate's text margin: (focus frame margin + 1) on each side.
    margin = (v.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, v) + 1) * 2
    from PySide6.QtCore import QModelIndex

    cols = model.columnCount(QModelIndex()) if not hasattr(v, "modelColumn") else 1
    if h is not None and h.isVisible():
        hfm = h.fontMetrics()
        for c in range(cols):
            if h.isSectionHidden(c) or h.sectionSize(c) <= 0:
                continue
            text = str(model.headerData(c, Qt.Orientation.Horizontal) or "")
            pad = h.style().pixelMetric(QStyle.PixelMetric.PM_HeaderMargin, None, h) * 2
            need = max((hfm.horizontalAdvance(line) for line in text.split("\n")), default=0) + pad
            if text and need > h.sectionSize(c) + SLACK:
                out.append(f"header {_where(v)} column {text!r} needs {need}px, "
                           f"has {h.sectionSize(c)}")
    for r in range(min(model.rowCount(QModelIndex()), 40)):
        for c in range(cols):
            if h is not None and h.isSectionHidden(c):
                continue
            idx = model.index(r, c)
            text = idx.data(Qt.ItemDataRole.DisplayRole)
            if text is None or str(text) == "":
                continue
            text = str(text)
            width = v.columnWidth(c) if hasattr(v, "columnWidth") else v.viewport().width()
            if hasattr(v, "indentation") and c == 0:
                width -= v.indentation()
            if idx.data(Qt.ItemDataRole.DecorationRole) is not None:
                width -= v.iconSize().width() + 4
            if v.wordWrap() and " " in text:
                rect = fm.boundingRect(QRect(0, 0, max(1, width - margin), 100000),
                                       int(Qt.TextFlag.TextWordWrap), text)
                height = v.rowHeight(r) if hasattr(v, "rowHeight") else v.visualRect(idx).height()
                if rect.height() > height + SLACK:
                    out.append(f"cell {_where(v)} [{r},{c}] needs {rect.height()}px of height, "
                               f"has {height}: {text[:60]!r}")
                continue
            need = max(fm.horizontalAdvance(line) for line in text.split("\n")) + margin
            if need > width + SLACK:
                out.append(f"cell {_where(v)} [{r},{c}] needs {need}px, has {width}: {text[:60]!r}")
    return out


def cuts_in(win: QWidget, state: str) -> list[str]:
    found = plot_text_cuts(win)
    for w in win.findChildren(QWidget):
        if not _shown(w, win):
            continue
        if isinstance(w, QLabel):
            found.append(label_cut(w))
        elif isinstance(w, QAbstractButton):
            found.append(button_cut(w))
        elif isinstance(w, QComboBox):
            found.append(combo_cut(w))
        elif isinstance(w, QLineEdit):
            found.append(line_edit_cut(w))
        elif isinstance(w, QAbstractItemView) and not isinstance(w, QHeaderView):
            found.extend(view_cuts(w))
        else:
            continue
        if not (isinstance(w, QLabel) and not w.text()):
            found.append(clipped(w, win))
    return [f"{state}: {c}" for c in found if c]


def settle(app: QApplication, win, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if win.jobs.active() == 0 and win.pages["models"].is_idle():
            break
        time.sleep(0.02)
    for _ in range(5):
        app.processEvents()


def first_evaluation(win, run_dir: str) -> None:
    """The Train page as a run starts: the run's own Started event, then the evaluation
    before the first step (what the engine emits, without waiting on a real run)."""
    from kdstudio.core.events import Stage, Started, event_from_record
    from kdstudio.core.run_compare import read_events

    started = next(e for e in map(event_from_record, read_events(run_dir))
                   if isinstance(e, Started))
    win.ctx.run_started.emit()
    win.ctx.run_event.emit(started)
    win.ctx.run_event.emit(Stage("evaluate", "teacher and student before distillation"))


def page_states(app, win, key: str, runs: list[str]):
    """Show each state of a page worth walking; yield its name once it has settled."""
    page = win.pages[key]
    if key == "runs":
        for path in runs:
            page.select_paths([path])
            settle(app, win)
            yield f"runs {Path(path).name}"
    elif key == "compare":
        for path in runs:
            page.open_run(path)
            settle(app, win)
            yield f"compare {Path(path).name}"
    elif key == "method":
        page.advanced.set_open(True)
        for task in list(page.task_buttons):
            page.task_buttons[task].click()
            settle(app, win)
            yield f"method {task}"
        page.task_buttons["sentence-embedding"].click()
        page.advanced.set_open(False)
        settle(app, win)
    elif key == "train":
        yield "train"
        if runs:
            first_evaluation(win, runs[0])
            settle(app, win)
            yield "train, the first evaluation"
    else:
        yield key


def walk(sizes: list[tuple[int, int]]) -> list[str]:
    from kdstudio.core.runs import list_runs
    from kdstudio.ui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    win = MainWindow(demo=True)
    win.show()
    settle(app, win)
    runs = [str(r.path) for r in list_runs()]
    found: list[str] = []
    for w, h in sizes:
        win.resize(w, h)
        settle(app, win)
        size = f"{w}x{h}"
        for key in win.pages:
            win.show_page(key)
            settle(app, win)
            for state in page_states(app, win, key, runs):
                if (win.width(), win.height()) != (w, h):  # the window cannot be that small
                    found.append(f"{size} {state}: the window is {win.width()}x{win.height()}")
                found += cuts_in(win, f"{size} {state}")
    win.close()
    return sorted(set(found))


if __name__ == "__main__":
    sizes = [tuple(s) for s in json.loads(os.environ.get("KD_FITS_SIZES", "[[1280, 800]]"))]
    Path(os.environ["KD_FITS_OUT"]).write_text(json.dumps(walk(sizes), indent=1))
