"""The Runs details' before/after table: figures as wide as their text, labels that wrap."""

from __future__ import annotations

import re
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QHeaderView, QStyle, QTableWidget, QTableWidgetItem

SENTENCE_WORDS = 5  # a value with this many words of letters is a sentence, not a figure


def is_sentence(text: str) -> bool:
    """'timed while other programs used 83% of the CPU', not '100.2% ± 0.1% (above the teacher)'."""
    return sum(bool(re.search(r"[^\W\d_]{2}", w)) for w in text.split()) >= SENTENCE_WORDS


class SummaryTable(QTableWidget):
    """Each figure column as wide as its figures; the labels (column 0) take the room left and
    wrap, never narrower than their longest word. A stretched label column got the crumbs
    (26 px: "Parameters" cut) once figures carried intervals and latency spreads. A sentence
    among the figures wraps in its column instead of widening it."""

    def fill(self, header: list[str], rows: list[tuple[str, list[str]]], bold_last: bool,
             bold_column: int = 0) -> None:
        """Labels and figures; bold_last bolds the last column, or bold_column when given."""
        self.clear()
        self.setColumnCount(len(header))
        self.setHorizontalHeaderLabels(header)
        self.setRowCount(len(rows))
        for r, (label, values) in enumerate(rows):
            self.setItem(r, 0, QTableWidgetItem(label))
            for c, text in enumerate(values, start=1):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if bold_last and c == (bold_column or len(values)):
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.setItem(r, c, item)
        self.fit()

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self.fit()

    def _margin(self) -> int:
        # The delegate's text margin as the view draws it, +2 for the font's rounding.
        return (self.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, self) + 1) * 2 + 2

    def _need(self, r: int, c: int) -> int:
        item = self.item(r, c)
        if item is None or not item.text():
            return 0
        fm = QFontMetrics(item.font().resolve(self.font()))
        text = item.text()
        if c > 0 and is_sentence(text):
            return max(fm.horizontalAdvance(w) for w in text.split()) + self._margin()
        return fm.horizontalAdvance(text) + self._margin()

    def fit(self) -> None:
        n = self.columnCount()
        if n == 0:
            return
        head = self.horizontalHeader()
        head.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        rows = range(self.rowCount())
        rest = 0
        for c in range(1, n):
            width = max([head.sectionSizeHint(c)] + [self._need(r, c) for r in rows])
            head.resizeSection(c, width)
            rest += width
        fm = self.fontMetrics()
        labels = [it.text() for r in rows if (it := self.item(r, 0))]
        word = max((fm.horizontalAdvance(w) for t in labels for w in t.split()), default=0) + self._margin()
        head.resizeSection(0, max(word, self.viewport().width() - rest))
        self.resizeRowsToContents()
        self._needed = rest + word

    def needed_width(self) -> int:
        """The width that shows every column without a sideways scroll (labels wrapped to
        their longest word): what the details' splitter gives the table where it can."""
        bar = self.verticalScrollBar()
        extra = bar.sizeHint().width() if bar.isVisible() else 0
        return getattr(self, "_needed", 0) + 2 * self.frameWidth() + extra
