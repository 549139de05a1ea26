"""One model's entity tags, shown on the words of the user's own input (token classification).

``TagView`` shows the sentence as it was typed, word by word; each word inside an entity is
highlighted in its entity type's colour with the type written small after the entity
("Lisbon PLACE"), and the tooltip lists every word's tag and how sure the model was.
"""

from __future__ import annotations

import html
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

# Soft background colours for entity types, picked by the type's name so that a type keeps
# its colour in both boxes and across inputs (readable on light and dark themes alike).
COLOURS = ("#f6c89f", "#a8d8b9", "#a9c8f0", "#f3a6b5", "#d7bdf2", "#f2e394", "#9fe0e0",
           "#c9c9c9")


def _kind(tag: str) -> str:
    """The entity type of a tag ('B-PLACE' -> 'PLACE'); '' outside every entity."""
    if not tag or tag in ("O", "0"):
        return ""
    return tag[2:] if tag[:2] in ("B-", "I-", "E-", "S-", "L-", "U-") else tag


def _starts(tag: str, prev: str) -> bool:
    return tag.startswith(("B-", "S-", "U-")) or _kind(tag) != _kind(prev)


def colour_of(kind: str) -> str:
    return COLOURS[sum(map(ord, kind)) % len(COLOURS)]


def label_colour(kind: str) -> str:
    """The type's colour, darkened so that its name reads on a light or a mid background."""
    return QColor(colour_of(kind)).darker(230).name()


class TagView(QLabel):
    """The words of the input with each entity highlighted and named (set_tags)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._rows: list[tuple[str, str, float]] = []
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def tags(self) -> list[tuple[str, str, float]]:
        return list(self._rows)

    def entities(self) -> list[tuple[str, str]]:
        """(entity words, type) as shown, in order."""
        out: list[tuple[str, str]] = []
        prev = ""
        for word, tag, _ in self._rows:
            kind = _kind(tag)
            if kind and not _starts(tag, prev) and out:
                out[-1] = (out[-1][0] + " " + word, kind)
            elif kind:
                out.append((word, kind))
            prev = tag
        return out

    def set_tags(self, rows: list[tuple[str, str, float]]) -> None:
        """rows: (word, tag, probability of the tag) for each word; tag '' when the model did
        not read the word (past max_length)."""
        self._rows = list(rows)
        parts: list[str] = []
        for i, (word, tag, p) in enumerate(rows):
            kind = _kind(tag)
            nxt = rows[i + 1][1] if i + 1 < len(rows) else ""
            ends = kind and (not _kind(nxt) or _starts(nxt, tag))
            text = html.escape(word)
            if kind:
                text = (f"<span style='background-color: {colour_of(kind)}; color: #1a1a1a'>"
                        f"&nbsp;{text}&nbsp;</span>")
                if ends:
                    text += (f"<sup style='color: {label_colour(kind)}'><b>"
                             f"{html.escape(kind)}</b></sup>")
            elif not tag:
                text = f"<span style='color: palette(placeholder-text)'>{text}</span>"
            parts.append(text)
        self.setText("<div style='line-height: 160%'>" + " ".join(parts) + "</div>")
        found = self.entities()
        self.setToolTip("\n".join(f"{w}: {t} ({p:.0%})" for w, t, p in rows if t))
        self.setAccessibleDescription(
            "; ".join(f"{words} ({kind})" for words, kind in found) or "no entities")
