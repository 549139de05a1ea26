"""Token by token: where the student's next-token probabilities part from the teacher's.

``TokenStrip`` draws a text as a row of cells, one per token, each coloured by the KL
divergence between the teacher's and the student's predictions for it (white: they agree,
red: they disagree most); the prompt's tokens are in grey italics. Hovering a cell (or
moving to it with the arrow keys) gives both probabilities. ``TokenPanel`` adds a legend, the
current token's figures and the list of the largest disagreements. It takes a
core.compare.TokenView (read by attribute: this module never imports the engine).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QLinearGradient,
    QPainter,
    QPalette,
    QPen,
)
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSizePolicy,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.widgets.common import named

HOT = QColor(214, 39, 40)     # the colour of the largest disagreement
PAD_X, PAD_Y, GAP = 4.0, 3.0, 3.0
MIN_SCALE = 0.01              # nats: below this everywhere, the text stays nearly white


def shown(piece: str) -> str:
    """A token's piece as a cell shows it: line breaks and tabs visible, never empty."""
    text = piece.replace("\n", "↵").replace("\t", "⇥")
    return text if text.strip() else (text.replace(" ", "␣") or "·")


def percent(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.1%}" if p >= 0.001 else f"{p:.2g}"[:7].replace("e-0", "e-")


def nats(x: float, unit: bool = True) -> str:
    """A KL divergence for people: three significant figures, small values too."""
    text = "0" if x <= 0 else f"{x:.3f}" if x >= 0.01 else f"{x:.2g}"
    return f"{text} nats" if unit else text


def describe(r: Any) -> str:
    """One token's figures in a sentence or three (tooltips, the detail line, screen readers)."""
    where = "your prompt" if r.in_prompt else "the continuation"
    head = f"“{shown(r.text)}” ({where})"
    if r.p_teacher is None:
        return f"{head}: the first token, with no text before it to predict it from."
    lines = [f"{head}: teacher {percent(r.p_teacher)}, student {percent(r.p_student)}",
             f"Disagreement (KL divergence of their predictions): {nats(r.kl)}"]
    t_tok, t_p = r.teacher_top
    s_tok, s_p = r.student_top
    if t_tok or s_tok:
        lines.append(f"Most likely here: teacher “{shown(t_tok)}” ({percent(t_p)}), "
                     f"student “{shown(s_tok)}” ({percent(s_p)})")
    return "\n".join(lines)


def heat(kl: float, scale: float, base: QColor) -> QColor:
    """From the background colour (agree) to HOT (the largest disagreement)."""
    t = max(0.0, min(1.0, kl / scale)) if scale > 0 else 0.0
    t = t ** 0.7  # small differences still show
    return QColor(round(base.red() + (HOT.red() - base.red()) * t),
                  round(base.green() + (HOT.green() - base.green()) * t),
                  round(base.blue() + (HOT.blue() - base.blue()) * t))


class TokenStrip(QWidget):
    """The tokens as wrapped cells coloured by disagreement. Emits current_changed(index)."""

    current_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._tokens: list[Any] = []
        self._top: list[int] = []
        self._scale = MIN_SCALE
        self._current = -1
        self._rects: list[QRectF] = []
        self._laid_width = -1
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        sp = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        sp.setHeightForWidth(True)
        self.setSizePolicy(sp)

    # -- data --------------------------------------------------------------------------------
    def set_view(self, view: Any | None) -> None:
        self._tokens = list(view.tokens) if view is not None else []
        self._top = list(view.top) if view is not None else []
        kls = [r.kl for r in self._tokens if r.p_teacher is not None]
        self._scale = max(max(kls, default=0.0), MIN_SCALE)
        self._current = -1
        self._laid_width = -1
        if self._tokens:
            worst = ", ".join(f"“{shown(self._tokens[i].text)}”" for i in self._top[:3])
            self.setAccessibleDescription(
                f"{len(self._tokens)} tokens. " + (f"They disagree most at {worst}." if worst else
                                                   "Teacher and student agree on every token."))
        else:
            self.setAccessibleDescription("")
        self.updateGeometry()
        self.update()

    def tokens(self) -> list[Any]:
        return list(self._tokens)

    def scale(self) -> float:
        """The KL divergence drawn in the fullest red (the largest in this text, at least 0.01)."""
        return self._scale

    def cell_colour(self, index: int) -> QColor:
        r = self._tokens[index]
        base = self.palette().color(QPalette.ColorRole.Base)
        return base if r.p_teacher is None else heat(r.kl, self._scale, base)

    def current(self) -> int:
        return self._current

    def set_current(self, index: int) -> None:
        index = max(-1, min(index, len(self._tokens) - 1))
        if index != self._current:
            self._current = index
            self.update()
            self.current_changed.emit(index)

    # -- layout ------------------------------------------------------------------------------
    def _metrics(self) -> QFontMetricsF:
        return QFontMetricsF(self.font())

    def _layout(self, width: float) -> tuple[list[QRectF], float]:
        fm = self._metrics()
        h = fm.height() + 2 * PAD_Y
        x = y = 0.0
        rects = []
        for r in self._tokens:
            w = min(fm.horizontalAdvance(shown(r.text)) + 2 * PAD_X, max(20.0, width))
            if x > 0 and x + w > width:
                x, y = 0.0, y + h + GAP
            rects.append(QRectF(x, y, w, h))
            x += w + GAP
        return rects, (y + h if rects else h)

    def _ensure_layout(self) -> None:
        if self._laid_width != self.width():
            self._rects, _ = self._layout(float(self.width()))
            self._laid_width = self.width()

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return int(self._layout(float(max(width, 50)))[1]) + 4

    def sizeHint(self) -> QSize:
        return QSize(400, self.heightForWidth(max(self.width(), 400)))

    def minimumSizeHint(self) -> QSize:
        return QSize(120, self.heightForWidth(max(self.width(), 120)))

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._laid_width = -1
        if self.height() < self.heightForWidth(self.width()):
            self.updateGeometry()

    def index_at(self, pos: QPointF) -> int:
        self._ensure_layout()
        for i, rect in enumerate(self._rects):
            if rect.contains(pos):
                return i
        return -1

    def cell_rect(self, index: int) -> QRectF:
        self._ensure_layout()
        return QRectF(self._rects[index])

    # -- drawing and input -------------------------------------------------------------------
    def paintEvent(self, _event: Any) -> None:
        self._ensure_layout()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        prompt_font = QFont(self.font())
        prompt_font.setItalic(True)
        top = set(self._top)
        for i, (r, rect) in enumerate(zip(self._tokens, self._rects)):
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(self.cell_colour(i))
            p.drawRoundedRect(rect, 3, 3)
            if i in top or i == self._current:
                pen = QPen(pal.color(QPalette.ColorRole.Highlight) if i == self._current
                           else HOT.darker(140), 2 if i == self._current else 1.2)
                p.setPen(pen)
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawRoundedRect(rect.adjusted(0.6, 0.6, -0.6, -0.6), 3, 3)
            hot = r.p_teacher is not None and r.kl / self._scale > 0.6
            colour = (QColor("white") if hot else pal.color(QPalette.ColorRole.Text))
            if r.in_prompt and not hot:
                colour = pal.color(QPalette.ColorRole.PlaceholderText)
            p.setPen(colour)
            p.setFont(prompt_font if r.in_prompt else self.font())
            p.drawText(rect.adjusted(PAD_X, 0, -PAD_X + 1, 0),
                       int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), shown(r.text))
        if self.hasFocus() and self._current < 0 and self._rects:
            p.setPen(QPen(pal.color(QPalette.ColorRole.Highlight), 1, Qt.PenStyle.DotLine))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(self.rect().adjusted(0, 0, -1, -1))
        p.end()

    def event(self, e: Any) -> bool:
        if e.type() == e.Type.ToolTip:
            i = self.index_at(QPointF(e.pos()))
            if i >= 0:
                QToolTip.showText(e.globalPos(), describe(self._tokens[i]), self,
                                  self.cell_rect(i).toAlignedRect())
            else:
                QToolTip.hideText()
                e.ignore()
            return True
        return super().event(e)

    def mousePressEvent(self, e: Any) -> None:
        i = self.index_at(e.position())
        if i >= 0:
            self.set_current(i)
        super().mousePressEvent(e)

    def keyPressEvent(self, e: Any) -> None:
        n = len(self._tokens)
        moves = {Qt.Key.Key_Right: self._current + 1, Qt.Key.Key_Left: max(0, self._current - 1),
                 Qt.Key.Key_Home: 0, Qt.Key.Key_End: n - 1}
        if n and e.key() in moves:
            self.set_current(min(n - 1, moves[e.key()]))
            return
        super().keyPressEvent(e)


class _Legend(QWidget):
    """A small gradient from 'agree' to 'disagree most', with the KL at the red end."""

    def __init__(self, strip: TokenStrip, parent: QWidget | None = None):
        super().__init__(parent)
        self.strip = strip
        self.setFixedHeight(self.fontMetrics().height() + 6)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def text(self) -> tuple[str, str]:
        return "agree", f"disagree most (KL {nats(self.strip.scale())})"

    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        pal = self.palette()
        fm = self.fontMetrics()
        left, right = self.text()
        lw, rw = fm.horizontalAdvance(left) + 8, fm.horizontalAdvance(right) + 8
        bar = QRectF(lw, 4, max(30, min(160, self.width() - lw - rw)), self.height() - 8)
        grad = QLinearGradient(bar.topLeft(), bar.topRight())
        base = pal.color(QPalette.ColorRole.Base)
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            grad.setColorAt(t, heat(t, 1.0, base))
        p.setPen(QPen(pal.color(QPalette.ColorRole.Mid), 1))
        p.setBrush(grad)
        p.drawRect(bar)
        p.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
        p.drawText(QRectF(0, 0, lw - 4, self.height()), int(Qt.AlignmentFlag.AlignVCenter
                                                           | Qt.AlignmentFlag.AlignRight), left)
        p.drawText(QRectF(bar.right() + 6, 0, rw, self.height()),
                   int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), right)
        p.end()


class TokenPanel(QGroupBox):
    """The strip, its legend, the current token's figures and the top disagreements."""

    PLACEHOLDER = ("After Compare, your prompt and the teacher's continuation appear here, token "
                   "by token, each coloured by how differently the two models predict it.")

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Token by token: where the student parts from the teacher", parent)
        self.setObjectName("tokenPanel")
        self.status = QLabel(self.PLACEHOLDER)
        self.status.setObjectName("tokenStatus")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("color: palette(placeholder-text);")
        self.strip = named(TokenStrip(), "tokenStrip", "Tokens coloured by disagreement",
                           "Each token of your prompt (grey) and of the teacher's continuation, "
                           "coloured by how far apart the teacher's and the student's predictions "
                           "are. Hover over a token, or click it, for both probabilities.")
        self.legend = _Legend(self.strip)
        self.legend.setObjectName("tokenLegend")
        self.detail = QLabel()
        self.detail.setObjectName("tokenDetail")
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.top_list = named(QListWidget(), "tokenTopList", "Largest disagreements",
                              "The tokens where the teacher's and the student's predictions "
                              "differ most. Click one to see it in the text.")
        self.top_list.setMinimumWidth(180)
        self.top_list.setMaximumHeight(150)
        self.top_list.setWordWrap(True)
        self.top_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.top_list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.top_list.currentRowChanged.connect(self._top_chosen)
        self.strip.current_changed.connect(self._show_current)

        left = QVBoxLayout()
        left.setSpacing(6)
        left.addWidget(self.strip)
        left.addWidget(self.legend)
        left.addWidget(self.detail)
        right = QVBoxLayout()
        right.setSpacing(4)
        self.top_label = QLabel("Largest disagreements:")
        self.top_label.setBuddy(self.top_list)
        right.addWidget(self.top_label)
        right.addWidget(self.top_list)
        right.addStretch(1)
        row = QHBoxLayout()
        row.setSpacing(12)
        row.addLayout(left, 3)
        row.addLayout(right, 2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        lay.setSpacing(6)
        lay.addWidget(self.status)
        lay.addLayout(row)
        self.clear()

    def clear(self, message: str = "") -> None:
        """No view: the placeholder, or a message saying why there is none."""
        self.strip.set_view(None)
        self.top_list.clear()
        self.status.setText(message or self.PLACEHOLDER)
        self._set_parts_visible(False)

    def _set_parts_visible(self, on: bool) -> None:
        for w in (self.strip, self.legend, self.detail, self.top_list, self.top_label):
            w.setVisible(on)

    def set_view(self, view: Any) -> None:
        self.strip.set_view(view)
        self._set_parts_visible(True)
        cut = " (cut to the models' context length)" if view.truncated else ""
        self.status.setText(f"Your prompt (grey) and the teacher's continuation{cut}, scored by "
                            f"both models: on average the student's predictions are "
                            f"{nats(view.mean_kl)} (KL divergence) from the teacher's.")
        self.top_list.blockSignals(True)
        self.top_list.clear()
        for rank, i in enumerate(view.top, start=1):
            r = view.tokens[i]
            item = QListWidgetItem(f"{rank}. “{shown(r.text)}”  KL {nats(r.kl, unit=False)}: "
                                   f"teacher {percent(r.p_teacher)}, student {percent(r.p_student)}")
            item.setData(Qt.ItemDataRole.UserRole, i)
            item.setToolTip(describe(r))
            self.top_list.addItem(item)
        if not view.top:
            item = QListWidgetItem("None: they predict every token alike.")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.top_list.addItem(item)
        self.top_list.blockSignals(False)
        self.detail.setText("Hover over a token, or click it, to see how likely each model finds it.")
        self.updateGeometry()

    def _top_chosen(self, row: int) -> None:
        item = self.top_list.item(row)
        index = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if isinstance(index, int):
            self.strip.set_current(index)

    def _show_current(self, index: int) -> None:
        tokens = self.strip.tokens()
        if 0 <= index < len(tokens):
            self.detail.setText(describe(tokens[index]).replace("\n", " · "))
