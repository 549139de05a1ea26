"""The one page base: every page of the window is a ``Page``.

    class DataPage(Page):
        title = "Data"                              # the window's tab text
        def __init__(self, ctx, parent=None):
            super().__init__(ctx, "data", parent)   # objectName "dataPage"
            lay = self.page_layout("Data")          # margins, spacing, heading "dataHeading"
            lay.addWidget(...)

``page_layout`` puts the whole page in a scroll area ("<name>Scroll", or ``scroll``; ``self.outer``
is the layout around it, for a bar below): in a window smaller than the page can be, the page
scrolls rather than cutting or squeezing its text. ``scroll_area`` and ``make_splitter`` make
the scrolled columns and the splitters pages hold inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QScrollArea, QSplitter, QVBoxLayout, QWidget

HEADING_STYLE = "font-size: 16pt; font-weight: bold;"


class Page(QWidget):
    """A page: its context, its objectName ("<name>Page"), a heading, its layout."""

    title = ""

    def __init__(self, ctx: Any, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.page_name = name
        self.setObjectName(f"{name}Page")
        self.outer: QVBoxLayout | None = None

    def heading(self, text: str) -> QLabel:
        """The page's heading ("<name>Heading"), in the one heading style."""
        label = QLabel(text)
        label.setObjectName(f"{self.page_name}Heading")
        label.setStyleSheet(HEADING_STYLE)
        return label

    def page_layout(self, heading: str | None, *, scroll: str = "",
             margins: tuple[int, int, int, int] = (16, 12, 16, 12), spacing: int = 10) -> QVBoxLayout:
        """The layout the page fills, its heading (if any) already in it. The content scrolls
        (``scroll``: the scroll area's objectName) and ``self.outer`` holds the scroll area."""
        content = QWidget()
        content.setObjectName(f"{self.page_name}Content")
        lay = QVBoxLayout(content)
        # Below the content's minimum size (a small screen, a large scale factor) it scrolls.
        area = self.scroll_area(content, scroll or f"{self.page_name}Scroll")
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.outer = QVBoxLayout(self)
        self.outer.setContentsMargins(0, 0, 0, 0)
        self.outer.addWidget(area, 1)
        lay.setContentsMargins(*margins)
        lay.setSpacing(spacing)
        if heading is not None:
            lay.addWidget(self.heading(heading))
        return lay

    @staticmethod
    def scroll_area(widget: QWidget, name: str, *, min_width: int = 0,
                    max_width: int = 0) -> QScrollArea:
        """A frameless, resizing scroll area around ``widget`` that scrolls only up and down."""
        area = QScrollArea()
        area.setObjectName(name)
        area.setWidget(widget)
        area.setWidgetResizable(True)
        area.setFrameShape(QScrollArea.Shape.NoFrame)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        if min_width:
            area.setMinimumWidth(min_width)
        if max_width:
            area.setMaximumWidth(max_width)
        return area

    @staticmethod
    def make_splitter(orientation: Qt.Orientation, name: str, widgets: Sequence[QWidget],
                      stretch: Sequence[int] = (), sizes: Sequence[int] = ()) -> QSplitter:
        """A splitter of ``widgets`` whose parts never collapse away."""
        split = QSplitter(orientation)
        split.setObjectName(name)
        split.setChildrenCollapsible(False)
        for w in widgets:
            split.addWidget(w)
        for i, factor in enumerate(stretch):
            split.setStretchFactor(i, factor)
        if sizes:
            split.setSizes(list(sizes))
        return split
