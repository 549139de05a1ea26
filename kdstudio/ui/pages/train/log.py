"""The Train page's log pane and the plain sentences it makes of engine events."""

from __future__ import annotations

import html
import time
from typing import Any

from PySide6.QtWidgets import QPlainTextEdit, QWidget

from kdstudio.core.events import Checkpoint, Eval, Failed, Finished, Health, Log, Stage, Started

MAX_LINES = 5000
COLOURS = {"warning": "#8a5a00", "error": "#b3261e", "done": "#1b6e2d"}


def format_duration(seconds: float | None) -> str:
    """0:42, 12:05, 1 h 03 min: short and readable."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "\u2013"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def format_metric(value: float | None) -> str:
    if value is None:
        return "\u2013"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.4g}"


def describe(e: Any, metric: str = "") -> tuple[str, str] | None:
    """(sentence, level) for the events worth a log line; None for steps and progress."""
    if isinstance(e, Stage):
        return f"{e.name.capitalize()}" + (f": {e.detail}" if e.detail else ""), "info"
    if isinstance(e, Log):
        return e.message, "warning" if e.level == "warning" else "info"
    if isinstance(e, Started):
        where = f"from step {e.start_step} " if e.start_step else ""
        return (f"Training {e.student} ({e.student_params:,} parameters) to imitate {e.teacher} "
                f"({e.teacher_params:,}) on {e.device} in {e.precision}: {e.total_steps} steps "
                f"{where}on {e.train_samples:,} training and {e.eval_samples:,} evaluation "
                "examples."), "info"
    if isinstance(e, Eval):
        shown = metric if metric in e.metrics else next(iter(e.metrics), "")
        if not shown:
            return f"Evaluation at step {e.step}.", "info"
        text = f"Evaluation at step {e.step}: {shown} {format_metric(e.metrics[shown])}"
        teacher = (e.teacher_metrics or {}).get(shown)
        if teacher is not None:
            text += f" (teacher {format_metric(teacher)})"
        return text + ".", "info"
    if isinstance(e, Checkpoint):
        return f"Checkpoint saved at step {e.step} ({e.path}).", "info"
    if isinstance(e, Finished):
        if e.status == "stopped":
            return "Stopped. A checkpoint was kept: Resume continues from it.", "warning"
        q = (e.summary or {}).get("quality_retained")
        kept = ""
        if isinstance(q, (int, float)):
            from kdstudio.core.metrics import format_quality, quality_note
            from kdstudio.core.objective import baseline_possible

            # One decimal above 100%: "keeps 100%" beside a note on figures above 100% puzzles.
            kept = (f" The student keeps {format_quality(q, 1 if 1 < q < 1.005 else 0)} of "
                    "the teacher's quality.")
            note = quality_note(q, baseline=baseline_possible(e.summary.get("task")),
                                teacher=e.summary.get("teacher") or "")
            # The engine's note names the config key; the app names its control.
            note = note.replace("(evaluation.baseline)", "(\u201cCompare with plain training\u201d "
                                "on the Method page)")
            kept += f" {note}" if note else ""
        # Which step's student the run kept (training.keep), and why.
        keep = (e.summary or {}).get("keep")
        if isinstance(keep, dict) and isinstance(keep.get("why"), str):
            kept += f" {keep['why']}"
        return f"Finished.{kept}", "done"
    if isinstance(e, Failed):
        return f"{e.title}: {e.message}", "error"
    if isinstance(e, Health):
        return f"{e.message} {e.advice}".strip(), "error" if e.level == "error" else "warning"
    return None


class LogPane(QPlainTextEdit):
    """Read-only, bounded (old lines fall off the top), timestamped and coloured by level."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("logPane")
        self.setAccessibleName("Training log")
        self.setToolTip("What the run is doing, evaluations, checkpoints and any problems.")
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_LINES)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.setPlaceholderText("The run's progress is written here.")

    def add(self, text: str, level: str = "info", *, stamp: bool = True) -> None:
        """One line; replayed past runs have no times recorded, so they go without a stamp."""
        colour = COLOURS.get(level)
        body = html.escape(text)
        if colour:
            body = f'<span style="color:{colour}">{body}</span>'
        if stamp:
            body = f'<span style="color:#888">{time.strftime("%H:%M:%S")}</span>&nbsp; {body}'
        self.appendHtml(body)
