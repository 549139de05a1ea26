"""A sweep's figures: the table (teacher + one row per finished run), the Pareto front,
the plain-sentence summary and the CSV export. No torch, no Qt: the app calls these freely.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdstudio.core.metrics import METRIC_LABELS
from kdstudio.core.runs import Run, atomic_write_text
from kdstudio.core.sweep.spec import axis_label
from kdstudio.core.sweep.store import Sweep

# The costs the chart's x axis can show: key -> (TableRow attribute, axis title).
COSTS = {
    "params": ("params", "Parameters"),
    "latency": ("latency_ms", "Latency per sample (ms)"),
    "size": ("size_mb", "Size on disk (MB)"),
}
# A student "good enough" for the summary keeps this share of the teacher's quality.
GOOD_ENOUGH = 0.9


@dataclass
class TableRow:
    """One point of the tradeoff: the teacher or a finished student run."""

    label: str
    role: str                        # "teacher" or "student"
    params: int | None = None
    size_mb: float | None = None
    latency_ms: float | None = None
    quality_retained: float | None = None
    speedup: float | None = None
    headline_metric: str = ""
    headline_value: float | None = None
    layers: int | None = None        # derived students: layers kept
    model: str = ""                  # other students: the model's name
    axis_value: Any = None
    params_share: float | None = None
    size_share: float | None = None
    run_dir: str = ""
    duration_s: float | None = None

    @property
    def is_teacher(self) -> bool:
        return self.role == "teacher"

    def cost(self, key: str) -> float | None:
        v = getattr(self, COSTS[key][0])
        return float(v) if _finite(v) else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num(v: Any) -> float | None:
    return float(v) if _finite(v) else None


def _share(a: Any, b: Any) -> float | None:
    return a / b if _finite(a) and _finite(b) and b > 0 else None


def sweep_table(sweep: Sweep) -> list[TableRow]:
    """The teacher first, then each finished entry in queue order."""
    rows: list[TableRow] = []
    teacher: dict[str, list[float]] = {"params": [], "size": [], "latency": [], "value": []}
    headline = ""
    for e in sweep.entries:
        if not e.run_dir:
            continue
        s = Run(Path(e.run_dir)).summary()
        if s.get("status") != "finished":
            continue
        headline = s.get("headline_metric", headline)
        for key, src in (("params", "teacher_params"), ("size", "teacher_size_mb"),
                         ("latency", "teacher_latency_ms")):
            if _finite(s.get(src)):
                teacher[key].append(float(s[src]))
        tv = (s.get("teacher_metrics") or {}).get(headline)
        if _finite(tv):
            teacher["value"].append(float(tv))
        spec = e.spec
        kept = s.get("kept_layers")
        rows.append(TableRow(
            label=e.label, role="student",
            params=int(s["student_params"]) if _finite(s.get("student_params")) else None,
            size_mb=_num(s.get("student_size_mb")), latency_ms=_num(s.get("student_latency_ms")),
            quality_retained=_num(s.get("quality_retained")), speedup=_num(s.get("speedup")),
            headline_metric=headline,
            headline_value=_num((s.get("student_metrics") or {}).get(headline)),
            layers=len(kept) if isinstance(kept, list) and spec.derived else None,
            model=spec.name, axis_value=e.axis_value,
            params_share=_share(s.get("student_params"), s.get("teacher_params")),
            size_share=_share(s.get("student_size_mb"), s.get("teacher_size_mb")),
            run_dir=e.run_dir, duration_s=_num(s.get("duration_s"))))
    if not rows:
        return []
    # Each run times the teacher again; the median evens out a busy moment of the machine.
    med = {k: statistics.median(v) if v else None for k, v in teacher.items()}
    t = TableRow(label="teacher", role="teacher",
                 params=int(med["params"]) if med["params"] is not None else None,
                 size_mb=med["size"], latency_ms=med["latency"], quality_retained=1.0,
                 speedup=1.0, headline_metric=headline, headline_value=med["value"],
                 model=sweep.base.teacher.name, params_share=1.0, size_share=1.0)
    return [t, *rows]


# -- the Pareto front ----------------------------------------------------------------------------

def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[int]:
    """Indices of the points (cost, quality) no other point beats: none has a lower or equal
    cost with a higher or equal quality, better in at least one. Sorted by cost; points
    with a missing figure are never on the front."""
    valid = [(c, q, i) for i, (c, q) in enumerate(points) if _finite(c) and _finite(q)]
    valid.sort(key=lambda t: (t[0], -t[1]))
    front: list[int] = []
    best = -math.inf
    last: tuple[float, float] | None = None
    for c, q, i in valid:
        if q > best:
            front.append(i)
            best, last = q, (c, q)
        elif last is not None and (c, q) == last:  # an exact twin of a front point
            front.append(i)
    return front


def front_rows(rows: Sequence[TableRow], cost: str) -> list[TableRow]:
    """The rows on the Pareto front of quality retained against ``cost`` (teacher included)."""
    idx = pareto_front([(r.cost(cost), r.quality_retained) for r in rows])
    return [rows[i] for i in idx]


# -- the summary ---------------------------------------------------------------------------------

def describe_student(row: TableRow, axis: str = "") -> str:
    """'the 2-layer student', 'the student distilgpt2', with its axis value."""
    if row.layers is not None:
        text = f"the {row.layers}-layer student"
    elif row.model:
        text = f"the student {row.label.split(',')[0]}"
    else:
        text = f"the student '{row.label}'"
    if row.axis_value is not None:
        if axis == "temperature" or isinstance(row.axis_value, (int, float)):
            text += f" at temperature {row.axis_value:g}"
        else:
            text += f" trained with {row.axis_value}"
    return text


def _size_phrase(row: TableRow) -> str:
    if row.size_share is not None:
        return f"{row.size_share:.0%} of its size"
    if row.params_share is not None:
        return f"{row.params_share:.0%} of its parameters"
    return "an unknown share of its size"


def _speed_phrase(row: TableRow) -> str:
    s = row.speedup
    if s is None:
        return "its speed was not measured"
    if s >= 1.05:
        return f"runs {s:.1f} times faster"
    if s > 0.95:
        return "runs about as fast"
    return f"runs {1 / s:.1f} times slower"


def _keeps(row: TableRow) -> str:
    q = row.quality_retained or 0.0
    if q >= 1.005:
        return f"matches the teacher's quality ({q:.0%})"
    return f"keeps {q:.0%} of the teacher's quality"


def summary_sentence(rows: Sequence[TableRow], axis: str = "",
                     good_enough: float = GOOD_ENOUGH) -> str:
    """Plain sentences: the smallest student that keeps most of the quality, and the smallest."""
    students = [r for r in rows if not r.is_teacher and r.quality_retained is not None]
    if not students:
        return "No student has finished yet: the summary appears when the first run is measured."

    def size(r: TableRow) -> float:
        return r.size_share if r.size_share is not None else (r.params_share or math.inf)

    good = [r for r in students if r.quality_retained >= good_enough]
    if good:
        pick = min(good, key=lambda r: (size(r), -r.quality_retained))
        who = describe_student(pick, axis)
        first = (f"{who[0].upper()}{who[1:]} {_keeps(pick)} at "
                 f"{_size_phrase(pick)} and {_speed_phrase(pick)}.")
    else:
        pick = max(students, key=lambda r: (r.quality_retained, -size(r)))
        first = (f"No student keeps {good_enough:.0%} of the teacher's quality; the best, "
                 f"{describe_student(pick, axis)}, {_keeps(pick)} at {_size_phrase(pick)} and "
                 f"{_speed_phrase(pick)}.")
    smallest = min(students, key=lambda r: (size(r), -r.quality_retained))
    if smallest is not pick and size(smallest) < size(pick):
        first += (f" The smallest, {describe_student(smallest, axis)}, {_keeps(smallest)} at "
                  f"{_size_phrase(smallest)}.")
    return first


# -- export --------------------------------------------------------------------------------------

CSV_COLUMNS = ["label", "role", "layers", "model", "second_axis", "parameters", "parameters_share",
               "size_mb", "size_share", "latency_ms", "speedup", "quality_retained",
               "headline_metric", "headline_value", "pareto_params", "pareto_latency",
               "pareto_size", "run_dir"]


def table_csv(rows: Sequence[TableRow], axis: str = "") -> str:
    fronts = {key: {id(r) for r in front_rows(rows, key)} for key in COSTS}

    def fmt(v: Any) -> Any:
        if v is None:
            return ""
        return round(v, 6) if isinstance(v, float) else v

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([r.label, r.role, fmt(r.layers), r.model,
                    axis_label(axis, r.axis_value) if r.axis_value is not None else "",
                    fmt(r.params), fmt(r.params_share), fmt(r.size_mb), fmt(r.size_share),
                    fmt(r.latency_ms), fmt(r.speedup), fmt(r.quality_retained),
                    METRIC_LABELS.get(r.headline_metric, r.headline_metric), fmt(r.headline_value),
                    *("yes" if id(r) in fronts[k] else "no" for k in COSTS), r.run_dir])
    return buf.getvalue()


def write_csv(rows: Sequence[TableRow], path: str | Path, axis: str = "") -> Path:
    """The table as CSV (atomically: a reader never sees half a file)."""
    path = Path(path)
    atomic_write_text(path, table_csv(rows, axis))
    return path

