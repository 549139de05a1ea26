"""A sweep's figures: the table (teacher + one row per finished run, and one per int8
export of a run), the Pareto front, the plain-sentence summary and the CSV export. No torch,
no Qt: the app calls these freely.
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

from kdstudio.core.metrics import METRIC_LABELS, interval_of, plus_minus, quality_retained
from kdstudio.core.runs import Run, atomic_write_text
from kdstudio.core.sweep.spec import axis_label, int8_export
from kdstudio.core.sweep.store import Sweep
from kdstudio.core.sweep.timed import apply_session, run_timing, timing_sentence
from kdstudio.core.timing import MIN_SPREAD_ROUNDS, Session, too_few_rounds

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
    """One point of the tradeoff: the teacher, a finished student run, or its int8 export."""

    label: str
    role: str                        # "teacher", "student" or "int8" (the student's int8 ONNX)
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
    student_quality: float | None = None  # int8 rows: the fp32 student's quality retained
    max_abs_diff: float | None = None     # int8 rows: largest difference from the student
    note: str = ""                         # int8 rows: how its figures were found (lines)
    # The latency's p10-p90 spread and the speed-up's (the ratio round by round), and
    # whether the row was timed in the sweep's one session with the teacher (timing.py).
    latency_p10: float | None = None
    latency_p90: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None
    timed_together: bool = False
    speed_rounds: int | None = None        # timed rounds behind the speed-up (None: not recorded)
    load: str = ""                         # the timing's load in words ('' when quiet)
    # The 95% interval of quality retained (a paired bootstrap over the eval rows); None
    # when the run recorded none (older runs, int8 rows).
    quality_low: float | None = None
    quality_high: float | None = None

    @property
    def is_teacher(self) -> bool:
        return self.role == "teacher"

    @property
    def is_int8(self) -> bool:
        return self.role == "int8"

    @property
    def key(self) -> str:
        """Tells the rows apart: an int8 row shares its student's run folder."""
        if self.is_teacher:
            return "teacher"
        return f"{self.run_dir}#int8" if self.is_int8 else self.run_dir

    def cost(self, key: str) -> float | None:
        v = getattr(self, COSTS[key][0])
        return float(v) if _finite(v) else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num(v: Any) -> float | None:
    return float(v) if _finite(v) else None


def _share(a: Any, b: Any) -> float | None:
    return a / b if _finite(a) and _finite(b) and b > 0 else None


def int8_label(label: str) -> str:
    """'2 layers, T=2' -> '2 layers (int8), T=2': the student's part stays first."""
    head, sep, rest = label.partition(", ")
    return f"{head} (int8){sep}{rest}"


def int8_row(student: TableRow, summary: dict[str, Any], export: dict[str, Any],
             teacher_latency: float | None = None) -> TableRow:
    """The int8 export of a student as a point of its own: the export's size on disk, its
    quality as a share of the teacher's headline figure, and its latency on the student's
    footing (below)."""
    headline = student.headline_metric
    metric, value = export.get("metric"), _num(export.get("value"))
    teacher_metrics = summary.get("teacher_metrics") or {}
    quality, notes = None, []
    if metric == headline and value is not None:
        # As the run's own quality_retained: the export's figure against the teacher's.
        quality = quality_retained(headline, teacher_metrics, {headline: value})
    if quality is None and _finite(export.get("quality_kept")) and student.quality_retained is not None:
        # Another figure (e.g. cosine to the PyTorch student, with no teacher at hand): the
        # student's share of the teacher times the share of the student the export keeps.
        quality = student.quality_retained * float(export["quality_kept"])
        notes.append(f"quality: the student's {student.quality_retained:.1%} times the "
                     f"{float(export['quality_kept']):.1%} of it the export keeps ({metric})")
    size_mb = _num(export.get("size_mb"))
    if size_mb is None and _finite(export.get("size_bytes")):
        size_mb = float(export["size_bytes"]) / 2**20
    latency, speedup = _num(export.get("latency_ms")), None
    ratio = _share(export.get("latency_ms"), export.get("student_latency_ms"))
    if ratio is not None and student.latency_ms is not None:
        # Timings taken at different moments of a busy machine differ more than int8 and
        # fp32 do; the export and the PyTorch student were timed side by side, taking turns,
        # so their ratio carries over to the student's own latency (and speed-up).
        notes.append(f"latency: the student's {student.latency_ms:.3g} ms times {ratio:.2f}, "
                     f"as ONNX Runtime took {float(export['latency_ms']):.3g} ms against "
                     f"PyTorch's {float(export['student_latency_ms']):.3g} ms side by side")
        latency = student.latency_ms * ratio
        speedup = student.speedup / ratio if student.speedup is not None else None
    if speedup is None:
        teacher_latency = teacher_latency if teacher_latency is not None else _num(
            summary.get("teacher_latency_ms"))
        speedup = _share(teacher_latency, latency)
    return TableRow(
        label=int8_label(student.label), role="int8", params=student.params, size_mb=size_mb,
        latency_ms=latency, quality_retained=quality, speedup=speedup, headline_metric=headline,
        headline_value=value if metric == headline else None, layers=student.layers,
        model=student.model, axis_value=student.axis_value, params_share=student.params_share,
        size_share=_share(size_mb, summary.get("teacher_size_mb")), run_dir=student.run_dir,
        duration_s=student.duration_s, student_quality=student.quality_retained,
        max_abs_diff=_num(export.get("max_abs_diff")), note="\n".join(notes))


def sweep_table(sweep: Sweep) -> list[TableRow]:
    """The teacher first, then each finished entry in queue order, each followed by its
    int8 export when the run has one."""
    rows: list[TableRow] = []
    teacher: dict[str, list[float]] = {"params": [], "size": [], "latency": [], "value": []}
    headline = ""
    int8: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}  # id(student row) -> its export
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
        iv = interval_of(s.get("intervals"), "quality_retained")
        if iv is not None and rows[-1].quality_retained is not None:
            rows[-1].quality_low, rows[-1].quality_high = iv
        run_timing(rows[-1], s)
        export = int8_export(s)
        if export is not None:
            int8[id(rows[-1])] = (s, export)
    if not rows:
        return []
    # Each run times the teacher again; the median evens out a busy moment of the machine.
    med = {k: statistics.median(v) if v else None for k, v in teacher.items()}

    t = TableRow(label="teacher", role="teacher",
                 params=int(med["params"]) if med["params"] is not None else None,
                 size_mb=med["size"], latency_ms=med["latency"], quality_retained=1.0,
                 speedup=1.0, headline_metric=headline, headline_value=med["value"],
                 model=sweep.base.teacher.name, params_share=1.0, size_share=1.0)
    session = Session.from_dict(sweep.timing)
    apply_session([t, *rows], session)
    out = [t]
    for r in rows:
        out.append(r)
        if id(r) in int8:
            out.append(int8_row(r, *int8[id(r)], teacher_latency=t.latency_ms))
            apply_session(out[-1:], session)
    return out


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
        text = f"the student {row.label.split(',')[0].removesuffix(' (int8)')}"
    else:
        text = f"the student '{row.label}'"
    if row.axis_value is not None:
        if axis == "shape":
            text += f" cut by {row.axis_value}"
        elif axis == "temperature" or isinstance(row.axis_value, (int, float)):
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
    """A speed difference is claimed only beyond the spread of the timings (the speed-up's
    p10-p90, round by round), where the row has one."""
    s = row.speedup
    if s is None:
        return "its speed was not measured"
    low, high = row.speedup_low, row.speedup_high
    few = row.speed_rounds
    if few is not None and few < MIN_SPREAD_ROUNDS and not 0.95 < s < 1.05:
        # 1-4 rounds have no spread to judge a difference by: shown, never claimed.
        word, times = ("faster", s) if s > 1 else ("slower", 1 / s)
        return f"ran {times:.1f} times {word} {too_few_rounds(few)}"
    if s >= 1.05 and (low is None or low > 1.0):
        return f"runs {s:.1f} times faster"
    if s <= 1 / 1.05 and (high is None or high < 1.0):
        return f"runs {1 / s:.1f} times slower"
    if low is not None and high is not None and not 0.95 < s < 1.05:
        return "runs about as fast, within the spread of its timings"
    return "runs about as fast"


def _keeps(row: TableRow) -> str:
    q = row.quality_retained or 0.0
    lo, hi = row.quality_low, row.quality_high
    if lo is not None and hi is not None and lo <= 1.0 <= hi:
        # Within its uncertainty of the teacher: no quality difference is claimed either way.
        return (f"matches the teacher's quality within its uncertainty "
                f"({q:.0%}{plus_minus((lo, hi), True)})")
    if q >= 1.005:
        return f"matches the teacher's quality ({q:.0%})"
    return f"keeps {q:.0%}{plus_minus(_interval(row), True)} of the teacher's quality"


def _interval(row: TableRow) -> tuple[float, float] | None:
    if row.quality_low is None or row.quality_high is None:
        return None
    return row.quality_low, row.quality_high


def summary_sentence(rows: Sequence[TableRow], axis: str = "",
                     good_enough: float = GOOD_ENOUGH) -> str:
    """Plain sentences: the smallest student that keeps most of the quality, the smallest,
    and the same pick among the int8 exports when there are some."""
    students = [r for r in rows if r.role == "student" and r.quality_retained is not None]
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
    int8 = [r for r in rows if r.is_int8 and r.quality_retained is not None]
    if int8:
        first += " " + _int8_sentence(int8, axis, good_enough, size)
    timing = timing_sentence(rows)
    return f"{first} {timing}" if timing else first


def _int8_sentence(rows: list[TableRow], axis: str, good_enough: float,
                   size: Any) -> str:
    """The smallest int8 export that keeps most of the quality (else the best one)."""
    good = [r for r in rows if r.quality_retained >= good_enough]
    pick = (min(good, key=lambda r: (size(r), -r.quality_retained)) if good
            else max(rows, key=lambda r: (r.quality_retained, -size(r))))
    q, before = pick.quality_retained, pick.student_quality
    # One decimal where whole percents would hide the (often small) loss.
    spec = ".1%" if before is not None and f"{q:.0%}" == f"{before:.0%}" else ".0%"
    keeps = (f"matches the teacher's quality ({q:{spec}})" if q >= 1.005
             else f"keeps {q:{spec}} of the teacher's quality")
    if before is not None:
        keeps += f" ({before:{spec}} before)"
    figures = f"{keeps} at {_size_phrase(pick)} and {_speed_phrase(pick)}"
    if good:
        return f"Exported as int8 ONNX, {describe_student(pick, axis)} {figures}."
    return (f"No int8 export keeps {good_enough:.0%} of the teacher's quality; the best, "
            f"{describe_student(pick, axis)} as int8 ONNX, {figures}.")


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

