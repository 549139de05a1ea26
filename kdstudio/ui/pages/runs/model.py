"""The Runs table: reading the run store (in a background job) and the Qt model that shows it."""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QBrush, QColor, QFont

STATUS_COLORS = {
    "finished": "#1b7f3b", "stopped": "#b26a00", "interrupted": "#b26a00",
    "failed": "#c62828", "running": "#1565c0", "damaged": "#6d6d6d", "unknown": "#6d6d6d",
}
STATUS_HELP = {
    "finished": "The run trained to the end and its student was measured.",
    "stopped": "The run was stopped; it kept a checkpoint, so it can be resumed.",
    "interrupted": "The program running it ended unexpectedly; it can be resumed from its last checkpoint.",
    "failed": "The run stopped on an error; select it to read the message.",
    "running": "The run is training now.",
    "damaged": "The run's summary.json is missing or damaged, so its figures cannot be shown.",
}
RESUMABLE = ("stopped", "interrupted")
PATH_ROLE = Qt.ItemDataRole.UserRole + 1

COLUMNS = [
    ("created", "Date", "When the run was started."),
    ("name", "Name", "The run's name (from its config)."),
    ("task", "Task", "The task family: language model, classification or sentence embedding."),
    ("teacher", "Teacher", "The large model the student learned from."),
    ("student", "Student", "The small model that was trained."),
    ("status", "Status", "finished, stopped, interrupted, failed or running."),
    ("headline", "Headline metric", "The one figure that sums up the student for its task "
                                    "(perplexity: lower is better; accuracies: higher is better)."),
    ("quality_retained", "Quality retained", "The student's headline figure as a share of the "
                                              "teacher's (100% = as good as the teacher)."),
    ("speedup", "Speed-up", "How many times faster the student answers than the teacher."),
]
COL = {key: i for i, (key, _, _) in enumerate(COLUMNS)}


@dataclass
class RunRow:
    """One run as the table shows it; built off the GUI thread."""

    path: Path
    name: str
    created: _dt.datetime | None
    task: str
    teacher: str
    student: str
    status: str
    headline: str = ""
    headline_label: str = ""
    headline_value: float | None = None
    quality_retained: float | None = None
    # 95% intervals [low, high] of the headline figure and of quality retained (None: the run
    # recorded none, as runs from before intervals).
    headline_interval: tuple[float, float] | None = None
    quality_interval: tuple[float, float] | None = None
    speedup: float | None = None
    speedup_spread: list[float] | None = None  # p10-p90 of the ratio, timed in turns
    speedup_rounds: int | None = None          # rounds behind it (fewer than 5: no spread)
    has_checkpoint: bool = False
    has_student: bool = False
    error: str = ""

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE and self.has_checkpoint


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _date(created: Any, folder: str) -> _dt.datetime | None:
    """The start time from summary.json, else from the folder name (YYYYmmdd-HHMMSS-...)."""
    if isinstance(created, str) and created:
        try:
            return _dt.datetime.fromisoformat(created)
        except ValueError:
            pass
    try:
        return _dt.datetime.strptime(folder[:15], "%Y%m%d-%H%M%S")
    except ValueError:
        return None


_LOCAL_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|[/~\\]|\.{1,2}[\\/])")


def short_model(text: str) -> str:
    """Local folder paths inside a model description shortened to their last part; Hub ids
    such as 'org/model' stay as they are."""
    parts = []
    for token in text.split(" "):
        if _LOCAL_PATH.match(token):
            token = re.split(r"[\\/]", token.rstrip("/\\"))[-1] or token
        parts.append(token)
    return " ".join(parts)


def read_row(path: Path, labels: dict[str, str]) -> RunRow:
    """One run folder as a row; a damaged summary gives a 'damaged' row instead of an error."""
    from kdstudio.core.run_compare import read_summary
    from kdstudio.core.runs import Run

    run = Run(path)
    s = read_summary(path)
    try:
        status = run.status() if s else "damaged"
    except (AttributeError, TypeError, ValueError):
        status = "damaged"
    if not isinstance(status, str):
        status = "damaged"
    from kdstudio.core.metrics import interval_of

    head = _text(s.get("headline_metric"))
    after = s.get("student_metrics") if isinstance(s.get("student_metrics"), dict) else {}
    try:
        has_cp = run.latest_checkpoint() is not None
    except (OSError, ValueError, IndexError):
        has_cp = False
    return RunRow(
        path=path, name=_text(s.get("name")) or path.name, created=_date(s.get("created"), path.name),
        task=_text(s.get("task")), teacher=_text(s.get("teacher")), student=_text(s.get("student")),
        status=status, headline=head, headline_label=labels.get(head, head).split(" (")[0],
        headline_value=_num(after.get(head)), quality_retained=_num(s.get("quality_retained")),
        headline_interval=interval_of(s.get("intervals"), head),
        quality_interval=interval_of(s.get("intervals"), "quality_retained"),
        speedup=_num(s.get("speedup")), speedup_spread=s.get("speedup_spread"),
        speedup_rounds=s.get("speedup_rounds"),
        has_checkpoint=has_cp,
        has_student=(run.student_dir / "config.json").is_file(), error=_text(s.get("error")))


def load_run_rows() -> list[RunRow]:
    """Every run in the store, newest first (runs in a job: it reads every summary)."""
    from kdstudio.core.run_compare import METRIC_LABELS
    from kdstudio.core.runs import runs_dir

    base = runs_dir()
    if not base.is_dir():
        return []
    rows = [read_row(p, METRIC_LABELS) for p in base.iterdir() if (p / "config.toml").is_file()]
    return sorted(rows, key=lambda r: (r.created or _dt.datetime.min, r.path.name), reverse=True)


class RunsTableModel(QAbstractTableModel):
    """The rows of the Runs table; sort keys keep numbers as numbers and dates as dates."""

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self.rows: list[RunRow] = []

    def set_rows(self, rows: list[RunRow]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def row_at(self, row: int) -> RunRow:
        return self.rows[row]

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][1]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][2] + " Click to sort."
        return None

    def display(self, r: RunRow, key: str) -> str:
        if key == "created":
            return r.created.strftime("%Y-%m-%d %H:%M") if r.created else "unknown"
        if key in ("teacher", "student"):
            return short_model(getattr(r, key)) or "-"
        if key == "headline":
            from kdstudio.core.metrics import plus_minus

            if r.headline_value is None:
                return "-"
            return f"{r.headline_label} {r.headline_value:.4g}{plus_minus(r.headline_interval)}"
        if key == "quality_retained":
            from kdstudio.core.metrics import format_quality

            return format_quality(r.quality_retained, interval=r.quality_interval)
        if key == "speedup":
            from kdstudio.core.timing import speedup_text

            return speedup_text(r.speedup, r.speedup_spread, r.speedup_rounds)
        return getattr(r, key) or "-"

    def sort_key(self, row: int, column: int) -> Any:
        """The value a column sorts by; None (missing) always sorts last."""
        r, key = self.rows[row], COLUMNS[column][0]
        if key == "created":
            return r.created.timestamp() if r.created else None
        if key == "headline":
            return r.headline_value
        if key in ("quality_retained", "speedup"):
            return getattr(r, key)
        value = getattr(r, key)
        return value.casefold() if value else None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r, key = self.rows[index.row()], COLUMNS[index.column()][0]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.display(r, key)
        if role == PATH_ROLE:
            return str(r.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            if key == "status":
                return STATUS_HELP.get(r.status, r.status) + (f"\n{r.error}" if r.error else "")
            if key in ("teacher", "student"):
                return getattr(r, key) or None
            if key == "name":
                return str(r.path)
            if key == "quality_retained":
                from kdstudio.core.metrics import quality_note
                from kdstudio.core.objective import baseline_possible

                return quality_note(r.quality_retained, baseline=baseline_possible(r.task),
                                    teacher=r.teacher or "") or None
            return None
        if role == Qt.ItemDataRole.ForegroundRole and key == "status":
            return QBrush(QColor(STATUS_COLORS.get(r.status, STATUS_COLORS["unknown"])))
        if role == Qt.ItemDataRole.FontRole and key == "status":
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and key in ("headline", "quality_retained", "speedup"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class RunsSortProxy(QSortFilterProxyModel):
    """Sorts by the model's sort keys; missing values go last in either direction."""

    def lessThan(self, left: QModelIndex | QPersistentModelIndex, right: QModelIndex | QPersistentModelIndex) -> bool:
        model = self.sourceModel()
        a, b = model.sort_key(left.row(), left.column()), model.sort_key(right.row(), right.column())
        if a is None or b is None:
            if a is None and b is None:
                return model.rows[left.row()].path.name < model.rows[right.row()].path.name
            # Missing is "greater" in ascending order, "smaller" in descending: last either way.
            return (a is None) == (self.sortOrder() == Qt.SortOrder.DescendingOrder)
        if a == b:
            return model.rows[left.row()].path.name < model.rows[right.row()].path.name
        return a < b
