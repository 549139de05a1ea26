"""One model's answer on the Compare page: text, class probabilities, nearest neighbours or
entity tags.

``AnswerView`` is the box titled "Teacher" or "Student". It shows a generated continuation
(causal-lm), horizontal probability bars (classification), the closest sentences with
their cosines (sentence embeddings) or the input's words with their entity tags (token
classification, tags.py), and a line of figures (latency, tokens/s, memory).
``verdict`` says in one sentence how the two answers differ.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QFont, QFontMetrics, QPainter, QPalette
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QLabel,
    QSizePolicy,
    QStackedWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.tasks import Task, get_task
from kdstudio.core.timing import too_few_rounds
from kdstudio.ui.pages.compare.tags import TagView

MAX_BARS = 10
ROW_H = 22


MEMORY_LABELS = {
    "gpu": ("peak GPU memory", "The most GPU memory PyTorch held while this model answered: "
            "the weights of both loaded models plus this model's working memory."),
    "process": ("process peak memory", "The most memory (resident set, RSS) the whole KD Studio "
                "process held while this model answered: it includes both loaded models and the "
                "app itself, so compare the two figures rather than read either as one model's "
                "size."),
}


def figures_text(answer: Any) -> str:
    """'Latency 12.3 ms · 81.0 tokens/s · peak GPU memory 310 MB' (only what was measured)."""
    lat = getattr(answer, "latency", None)
    parts = [f"Latency {lat.text('.3g') if lat is not None else f'{answer.latency_ms:,.1f} ms'}"]
    if answer.tokens_per_s:
        parts.append(f"{answer.tokens_per_s:,.1f} tokens/s")
    if answer.peak_memory_mb:
        label = MEMORY_LABELS.get(getattr(answer, "memory_scope", "") or "gpu", ("peak memory", ""))[0]
        parts.append(f"{label} {answer.peak_memory_mb:,.0f} MB")
    return "  ·  ".join(parts)


def figures_tip(answer: Any) -> str:
    """What each figure of figures_text measures."""
    lat = getattr(answer, "latency", None)
    tips = ["Latency: one pass of the model over your input, the median of repeats timed in "
            "turns with the other model after a warm-up; p10\u2013p90 is the middle 80% of "
            "the repeats." if lat is not None else
            "Latency: the time from your input to the whole answer."]
    if lat is not None and lat.load.busy:
        tips.append(f"Under load: {lat.load.words()}, so this figure is slower than usual.")
    if answer.tokens_per_s:
        tips.append("Tokens/s: new tokens written per second.")
    if answer.peak_memory_mb:
        tips.append(MEMORY_LABELS.get(getattr(answer, "memory_scope", "") or "gpu", ("", ""))[1])
    return "\n".join(t for t in tips if t)


class ProbabilityBars(QWidget):
    """Class probabilities as horizontal bars, the most likely class first and in bold."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._rows: list[tuple[str, float]] = []
        self._more = 0
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def rows(self) -> list[tuple[str, float]]:
        return list(self._rows)

    def set_rows(self, rows: list[tuple[str, float]]) -> None:
        self._rows = list(rows[:MAX_BARS])
        self._more = max(0, len(rows) - MAX_BARS)
        desc = ", ".join(f"{name} {p:.0%}" for name, p in self._rows)
        self.setAccessibleDescription(desc + (f", and {self._more} more classes" if self._more else ""))
        self.setToolTip("\n".join(f"{name}: {p:.2%}" for name, p in rows))
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(240, (len(self._rows) + (1 if self._more else 0)) * ROW_H + 4)

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fm = QFontMetrics(self.font())
        label_w = min(max((fm.horizontalAdvance(n) for n, _ in self._rows), default=0) + 12,
                      int(self.width() * 0.4))
        pct_w = fm.horizontalAdvance("100.0%") + 8
        bar_w = max(10, self.width() - label_w - pct_w)
        bold = QFont(self.font())
        bold.setBold(True)
        for i, (name, prob) in enumerate(self._rows):
            y = i * ROW_H + 2
            p.setFont(bold if i == 0 else self.font())
            p.setPen(pal.color(QPalette.ColorRole.WindowText))
            text = fm.elidedText(name, Qt.TextElideMode.ElideRight, label_w - 8)
            p.drawText(QRectF(0, y, label_w - 8, ROW_H), Qt.AlignmentFlag.AlignVCenter
                       | Qt.AlignmentFlag.AlignRight, text)
            track = QRectF(label_w, y + 4, bar_w, ROW_H - 8)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(pal.color(QPalette.ColorRole.Midlight))
            p.drawRoundedRect(track, 3, 3)
            fill = QRectF(track.x(), track.y(), max(2.0, bar_w * max(0.0, min(1.0, prob))), track.height())
            colour = pal.color(QPalette.ColorRole.Highlight)
            if i > 0:
                colour.setAlpha(150)
            p.setBrush(colour)
            p.drawRoundedRect(fill, 3, 3)
            p.setPen(pal.color(QPalette.ColorRole.WindowText))
            p.drawText(QRectF(label_w + bar_w, y, pct_w, ROW_H), Qt.AlignmentFlag.AlignVCenter
                       | Qt.AlignmentFlag.AlignRight, f"{prob:.1%}")
        if self._more:
            p.setFont(self.font())
            p.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            p.drawText(QRectF(label_w, len(self._rows) * ROW_H + 2, bar_w, ROW_H),
                       Qt.AlignmentFlag.AlignVCenter, f"and {self._more} less likely classes")
        p.end()


# What the scores mean, and the score below which two sentences are about different things.
SCORE_MEANING = ("Scores are cosine similarity to your input: 1 = the same meaning, below "
                 "about 0.5 = unrelated.")
CLOSE_SCORE = 0.5


def neighbours_note(best: float) -> str:
    """The words above the closest sentences: what the numbers are, and whether any is close."""
    if best < CLOSE_SCORE:
        return (f"Nothing in the data is close in meaning to your input (the best score is "
                f"{best:.2f}). " + SCORE_MEANING)
    return SCORE_MEANING


class NeighbourList(QWidget):
    """The closest sentences of the evaluation data, each with its cosine similarity, under
    a line that says what the scores mean (and when nothing is close)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._rows: list[tuple[str, float]] = []
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setHorizontalSpacing(10)
        self.grid.setVerticalSpacing(8)
        self.grid.setColumnStretch(1, 1)

    def rows(self) -> list[tuple[str, float]]:
        return list(self._rows)

    def set_rows(self, rows: list[tuple[str, float]]) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self._rows = list(rows)
        self.note = QLabel(neighbours_note(max(c for _, c in rows)) if rows else "")
        self.note.setObjectName("neighboursNote")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: palette(placeholder-text);")
        self.grid.addWidget(self.note, 0, 0, 1, 2)
        for i, (text, cos) in enumerate(rows, start=1):
            score = QLabel(f"{cos:.3f}")
            score.setToolTip("Cosine similarity to your input: 1 = the same meaning, below "
                             "about 0.5 = unrelated.")
            score.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            if i == 1:
                score.setStyleSheet("font-weight: bold;")
            sentence = QLabel(text)
            sentence.setWordWrap(True)
            sentence.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            sentence.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.grid.addWidget(score, i, 0)
            self.grid.addWidget(sentence, i, 1)
        self.grid.setRowStretch(len(rows) + 1, 1)
        self.setAccessibleDescription(" ".join([self.note.text()] + [
            f"{t} (cosine {c:.3f});" for t, c in rows]).strip())


class ElidedLabel(QLabel):
    """A one-line label that ends in an ellipsis when too narrow (the tooltip holds it all)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._full = ""
        self.setMinimumWidth(10)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def set_full_text(self, text: str) -> None:
        self._full = text
        self.setToolTip(text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        self.setText(self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideMiddle,
                                                   max(10, self.width())))


class AnswerView(QFrame):
    """The box for one model ('teacher' or 'student'); its objectName is '<role>Output'."""

    def __init__(self, role: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.role = role
        who = role.capitalize()
        self.setObjectName(f"{role}Output")
        self.setAccessibleName(f"{who}'s answer")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 10, 12, 10)
        lay.setSpacing(6)
        self.heading = QLabel(f"<b>{who}</b>")
        self.model_label = ElidedLabel()
        self.model_label.setObjectName(f"{role}ModelName")
        self.model_label.setStyleSheet("color: palette(placeholder-text);")
        lay.addWidget(self.heading)
        lay.addWidget(self.model_label)

        self.stack = QStackedWidget()
        self.placeholder = QLabel()
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setStyleSheet("color: palette(placeholder-text);")
        self.text = QTextBrowser()
        self.text.setObjectName(f"{role}Text")
        self.text.setAccessibleName(f"{who}'s generated text")
        self.text.setFrameShape(QFrame.Shape.NoFrame)
        self.bars = ProbabilityBars()
        self.bars.setObjectName(f"{role}Probabilities")
        self.bars.setAccessibleName(f"{who}'s class probabilities")
        self.neighbours = NeighbourList()
        self.neighbours.setObjectName(f"{role}Neighbours")
        self.neighbours.setAccessibleName(f"{who}'s nearest sentences")
        self.tags = TagView()
        self.tags.setObjectName(f"{role}Tags")
        self.tags.setAccessibleName(f"{who}'s entity tags")
        for w in (self.placeholder, self.text, _top(self.bars), _top(self.neighbours),
                  _top(self.tags)):
            self.stack.addWidget(w)
        lay.addWidget(self.stack, 1)
        self.figures = QLabel("")
        self.figures.setObjectName(f"{role}Figures")
        self.figures.setAccessibleName(f"{who}'s speed")
        self.figures.setWordWrap(True)  # a long memory figure must not widen the page
        lay.addWidget(self.figures)
        self.clear()

    def set_model_name(self, name: str) -> None:
        self.model_label.set_full_text(name)

    def clear(self, message: str = "Type an input above, or click an example, and press "
                                   "Compare: the answer appears here.") -> None:
        self.placeholder.setText(message)
        self.stack.setCurrentWidget(self.placeholder)
        self.text.clear()
        self.bars.set_rows([])
        self.neighbours.set_rows([])
        self.tags.set_tags([])
        self.figures.setText("")
        self.figures.setToolTip("")

    def show_answer(self, task: str | Task, prompt: str, answer: Any) -> None:
        """Show a core.compare.ModelAnswer for the given task: a continuation of the prompt,
        class probabilities, or the nearest sentences."""
        view = get_task(task).compare_view
        if view == "continuation":
            cont = answer.text if answer.text.strip() else ""
            body = (f"<span style='color: palette(placeholder-text)'>{html.escape(prompt)}</span>"
                    f"<b>{html.escape(cont)}</b>")
            if not cont:
                body += ("<br><br><i>(no new text: the model ended the text straight away)</i>")
            self.text.setHtml(f"<div style='white-space: pre-wrap'>{body}</div>")
            self.stack.setCurrentWidget(self.text)
        elif view == "probabilities":
            self.bars.set_rows(answer.probabilities)
            self.stack.setCurrentIndex(2)
        elif view == "neighbours":
            self.neighbours.set_rows(answer.neighbours)
            self.stack.setCurrentIndex(3)
        elif view == "tags":
            self.tags.set_tags(answer.tags)
            self.stack.setCurrentIndex(4)
        else:  # "text": the answer's one readable line
            self.text.setPlainText(answer.text)
            self.stack.setCurrentWidget(self.text)
        self.figures.setText(figures_text(answer))
        self.figures.setToolTip(figures_tip(answer))


def verdict(task: str | Task, cmp: Any) -> str:
    """One plain sentence on how the two answers differ (the task words the difference)."""
    t, s = cmp.teacher, cmp.student
    ratio = getattr(cmp, "speedup", None)
    if ratio is not None:
        # Only a difference beyond the spread of the paired timings is called one.
        if not ratio.sure and not 0.95 < ratio.value < 1.05:
            word, times = (("faster", ratio.value) if ratio.value > 1
                           else ("slower", 1 / ratio.value))
            speed = (f"On this input the student answered {times:.1f}x {word} than the teacher "
                     f"{too_few_rounds(ratio.rounds)}")
        elif ratio.faster:
            speed = f"On this input the student answered {ratio.value:.1f}x faster than the teacher"
        elif ratio.slower:
            speed = (f"On this input the student answered {1 / ratio.value:.1f}x slower than "
                     "the teacher")
        else:
            speed = "On this input the student answered about as fast as the teacher"
        busy = cmp.timing.load.words() if cmp.timing.load.busy else ""
        if busy:
            speed += f" ({busy})"
    elif s.latency_ms > 0 and t.latency_ms > 0:
        ratio = t.latency_ms / s.latency_ms
        speed = (f"On this input the student answered {ratio:.1f}x faster than the teacher"
                 if ratio >= 1 else
                 f"On this input the student answered {1 / ratio:.1f}x slower than the teacher")
    else:
        speed = "Both models answered"
    return speed + get_task(task).compare_verdict(t, s)


def _top(widget: QWidget) -> QWidget:
    """Keep a fixed-height widget at the top of the box instead of centred in it."""
    holder = QWidget()
    lay = QVBoxLayout(holder)
    lay.setContentsMargins(0, 4, 0, 0)
    lay.addWidget(widget)
    lay.addStretch(1)
    return holder
