"""Comparing past runs: how two configs differ, a run's curves, and its before/after figures.

Nothing here imports Qt; the Runs page calls these from background jobs. Reading a run
never fails on a damaged file: a torn or odd line in metrics.jsonl is skipped, a missing
figure is shown as missing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from kdstudio.core.config import RunConfig, load_config
from kdstudio.core.errors import ConfigError
from kdstudio.core.metrics import (
    METRIC_LABELS,
    PERCENT_METRICS,
    format_quality,
    interval_of,
    plus_minus,
    quality_retained,
)
from kdstudio.core.metrics import SELF_AGREEMENT as _SELF_ONE
from kdstudio.core.timing import speedup_text, summary_latency, summary_session

Pair = tuple[np.ndarray, np.ndarray]


# -- config differences ------------------------------------------------------------------------

def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys: {'method': {'temperature': 2}} -> {'method.temperature': 2}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def config_diff(a: RunConfig | dict[str, Any], b: RunConfig | dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The keys whose values differ, as (key, value_a, value_b) in config order; None where absent."""
    fa = flatten(a.to_dict() if isinstance(a, RunConfig) else a)
    fb = flatten(b.to_dict() if isinstance(b, RunConfig) else b)
    keys = list(dict.fromkeys([*fa, *fb]))
    return [(k, fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k) or (k in fa) != (k in fb)]


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's config as a dict with every default filled in; a config that no longer
    validates (written by an older version) is read as plain TOML instead."""
    path = Path(run_dir) / "config.toml"
    try:
        return load_config(path).to_dict()
    except ConfigError:
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            raise ConfigError(f"The config of the run '{Path(run_dir).name}' ({path}) cannot be read.",
                              hint="The file is missing or damaged.") from None


def run_config_diff(run_a: str | Path, run_b: str | Path) -> list[tuple[str, Any, Any]]:
    """config_diff of two run folders."""
    return config_diff(read_run_config(run_a), read_run_config(run_b))


def key_help(key: str) -> str:
    """The help text of a dotted config key ('' when the key is unknown)."""
    cls: Any = RunConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return ""
        tp = typing.get_type_hints(cls)[part]
        if i == len(parts) - 1:
            return fields[part].metadata.get("help", "")
        if not dataclasses.is_dataclass(tp):
            return ""
        cls = tp
    return ""


def format_value(value: Any) -> str:
    """A config value as a person reads it."""
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "(empty)"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


# -- curves ----------------------------------------------------------------------------------

@dataclass
class RunCurves:
    """A run's series from metrics.jsonl, each as (steps, values) arrays sorted by step.

    ``losses`` has one series per loss component ('total' included); ``metrics`` one per
    student eval metric; ``teacher_metrics`` the teacher's figures (flat lines).
    """

    losses: dict[str, Pair] = field(default_factory=dict)
    metrics: dict[str, Pair] = field(default_factory=dict)
    lr: Pair | None = None
    teacher_metrics: dict[str, float] = field(default_factory=dict)
    headline: str = ""

    def series(self, key: str) -> Pair | None:
        """'loss:<component>', 'metric:<name>', or 'headline' (the headline metric)."""
        kind, _, name = key.partition(":")
        if kind == "loss":
            return self.losses.get(name)
        if kind == "metric":
            return self.metrics.get(name)
        if key == "headline":
            return self.metrics.get(self.headline)
        return None


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _arrays(points: dict[int, float]) -> Pair:
    steps = sorted(points)
    return (np.asarray(steps, dtype=float), np.asarray([points[s] for s in steps], dtype=float))


def curves_from_events(events: Iterable[dict[str, Any]], headline: str = "") -> RunCurves:
    """Build the series; a step logged twice (a run resumed from an earlier checkpoint) keeps
    its latest value, so a resumed run draws one clean line."""
    losses: dict[str, dict[int, float]] = {}
    metrics: dict[str, dict[int, float]] = {}
    lr: dict[int, float] = {}
    teacher: dict[str, float] = {}
    for e in events:
        if not isinstance(e, dict):
            continue
        step = e.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            continue
        if e.get("kind") == "step":
            for k, v in (e.get("losses") if isinstance(e.get("losses"), dict) else {}).items():
                if (x := _number(v)) is not None:
                    losses.setdefault(str(k), {})[step] = x
            if (x := _number(e.get("lr"))) is not None:
                lr[step] = x
        elif e.get("kind") == "eval":
            for k, v in (e.get("metrics") if isinstance(e.get("metrics"), dict) else {}).items():
                if (x := _number(v)) is not None:
                    metrics.setdefault(str(k), {})[step] = x
            for k, v in (e.get("teacher_metrics") if isinstance(e.get("teacher_metrics"), dict) else {}).items():
                if (x := _number(v)) is not None:
                    teacher[str(k)] = x
    return RunCurves(losses={k: _arrays(v) for k, v in losses.items()},
                     metrics={k: _arrays(v) for k, v in metrics.items()},
                     lr=_arrays(lr) if lr else None, teacher_metrics=teacher, headline=headline)


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every readable line of a run's metrics.jsonl, each step once (Run.events: the steps a
    resume redid are dropped; torn or damaged lines are skipped)."""
    from kdstudio.core.runs import Run

    try:
        return Run(Path(run_dir)).events()
    except OSError:
        return []


def run_curves(run_dir: str | Path, headline: str = "") -> RunCurves:
    """The curves of one run folder; ``headline`` defaults to the one in summary.json."""
    if not headline:
        summary = read_summary(run_dir)
        headline = summary.get("headline_metric", "") if isinstance(summary.get("headline_metric"), str) else ""
    return curves_from_events(read_events(run_dir), headline)


# -- the before/after figures ----------------------------------------------------------------

def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """summary.json as a dict; {} when it is missing or damaged."""
    try:
        data = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _quality(v: float | None, interval: tuple[float, float] | None = None) -> str:
    """A quality-retained cell, with ± half its 95% interval where given: above 100% says so
    after both (metrics.format_quality)."""
    return (format_quality(v, interval=interval) if v is not None and math.isfinite(v)
            else _fmt(v, True))


def _fmt(v: Any, pct: bool = False) -> str:
    if isinstance(v, bool) or v is None:
        return ""
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.1%}" if pct else f"{v:,.4g}"
    return str(v)


def _metrics(s: dict[str, Any], key: str) -> dict[str, float]:
    """The numeric entries of one metrics dict of the summary (damaged entries dropped)."""
    v = s.get(key)
    if not isinstance(v, dict):
        return {}
    return {str(k): x for k, x0 in v.items() if (x := _number(x0)) is not None}


BASELINE_COLUMN = "plain training (no teacher)"


def summary_columns(s: dict[str, Any]) -> list[str]:
    """The column headings of summary_rows: teacher, student before and after distillation,
    and, when the run trained a baseline (evaluation.baseline), the same student trained for
    the same steps on the plain loss alone."""
    cols = ["teacher", "student before", "student after"]
    if _metrics(s, "baseline_metrics"):
        cols.append(BASELINE_COLUMN)
    return cols


def summary_rows(s: dict[str, Any]) -> list[tuple[str, ...]]:
    """The before/after table as (label, teacher, student before, student after[, plain
    training]) strings, the same figures 'kdstudio show' prints; summary_columns names them.
    The plain-training column is there only when the summary has "baseline_metrics"."""
    t, b, a = _metrics(s, "teacher_metrics"), _metrics(s, "student_metrics_before"), _metrics(s, "student_metrics")
    p = _metrics(s, "baseline_metrics")
    base = s.get("baseline") if isinstance(s.get("baseline"), dict) else {}
    rows: list[tuple[str, ...]] = []

    def add(label: str, teacher: str, before: str, after: str, plain: str = "") -> None:
        rows.append((label, teacher, before, after, plain) if p else (label, teacher, before, after))

    for m in dict.fromkeys([*b, *a, *p]):
        tv = t.get(m)
        if tv is None and m in _SELF_ONE:
            tv = 1.0
        if tv is None and m == "kl_to_teacher":
            tv = 0.0
        pct = m in PERCENT_METRICS
        # With the 95% interval where the run recorded one (older runs: the figure alone).
        iv_a, iv_b = s.get("intervals"), s.get("intervals_before")
        t_iv = interval_of(iv_a, f"teacher.{m}") or interval_of(iv_b, f"teacher.{m}")
        add(METRIC_LABELS.get(m, m), _fmt(tv, pct) + (plus_minus(t_iv, pct) if tv is not None else ""),
            _fmt(b.get(m), pct) + (plus_minus(interval_of(iv_b, m), pct) if m in b else ""),
            _fmt(a.get(m), pct) + (plus_minus(interval_of(iv_a, m), pct) if m in a else ""),
            _fmt(p.get(m), pct) + (plus_minus(interval_of(base.get("intervals"), m), pct)
                                   if m in p else ""))
    tp, sp = s.get("teacher_params"), s.get("student_params")
    if tp is not None or sp is not None:
        add("Parameters", _fmt(tp), _fmt(sp), _fmt(sp), _fmt(sp))  # the baseline is the same model shape
    if s.get("teacher_size_mb") is not None or s.get("student_size_mb") is not None:
        add("Weights on disk (MB)", _fmt(s.get("teacher_size_mb")), "", _fmt(s.get("student_size_mb")))
    t_lat, s_lat = summary_latency(s, "teacher"), summary_latency(s, "student")
    if t_lat is not None or s_lat is not None:
        # The median with its p10-p90 spread (older runs: the median alone), both timed in turns.
        add("Latency per sample", t_lat.text() if t_lat else "", "", s_lat.text() if s_lat else "")
    speedup = _number(s.get("speedup"))
    if speedup is not None:
        add("Speed-up", "1x", "", speedup_text(speedup, s.get("speedup_spread"), s.get("speedup_rounds")))
    session = summary_session(s)
    if session is not None and session.load.busy:
        add("Timing", "", "", session.load.words())
    if p:
        steps, b_steps = s.get("steps"), base.get("steps")
        add("Training steps", "", "", _fmt(steps) if isinstance(steps, int) else "",
            _fmt(b_steps) if isinstance(b_steps, int) else "")
        dur, b_dur = _number(s.get("duration_s")), _number(base.get("duration_s"))
        if dur is not None or b_dur is not None:
            add("Training time (s)", "", "", f"{dur:,.1f}" if dur is not None else "",
                f"{b_dur:,.1f}" if b_dur is not None else "")
    kept = _number(s.get("quality_retained"))
    head = s.get("headline_metric", "") if isinstance(s.get("headline_metric"), str) else ""
    b_kept = _number(base.get("quality_retained"))
    if b_kept is None and p:
        b_kept = quality_retained(head, t, p)
    if kept is not None or (p and b_kept is not None):
        name = METRIC_LABELS.get(head, head).split(" (")[0].lower()
        add(f"Quality retained ({name})" if name else "Quality retained", "100%",
            _quality(quality_retained(head, t, b),
                     interval_of(s.get("intervals_before"), "quality_retained")),
            _quality(kept, interval_of(s.get("intervals"), "quality_retained")),
            _quality(b_kept, interval_of(base.get("intervals"), "quality_retained")))
    return rows


def compare_rows(summaries: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Several runs side by side: (label, one figure per run) for the students after training."""
    after = [_metrics(s, "student_metrics") for s in summaries]

    def row(label: str, values: list[str]) -> None:
        if any(values):
            rows.append((label, values))

    rows: list[tuple[str, list[str]]] = []
    heads = []
    for s, a in zip(summaries, after):
        head = s.get("headline_metric") if isinstance(s.get("headline_metric"), str) else ""
        v = a.get(head) if head else None
        name = METRIC_LABELS.get(head, head).split(" (")[0]
        heads.append(f"{name} {_fmt(v, head in PERCENT_METRICS)}" if v is not None else "")
    row("Headline metric", heads)
    row("Quality retained", [_quality(_number(s.get("quality_retained"))) for s in summaries])
    row("Speed-up", [f"{x:.2f}x" if (x := _number(s.get("speedup"))) is not None else "" for s in summaries])
    for m in dict.fromkeys(k for a in after for k in a):
        row(METRIC_LABELS.get(m, m), [_fmt(a.get(m), m in PERCENT_METRICS) for a in after])
    row("Student parameters", [_fmt(s.get("student_params")) for s in summaries])
    row("Weights on disk (MB)", [_fmt(s.get("student_size_mb")) for s in summaries])
    row("Latency per sample (ms)", [_fmt(s.get("student_latency_ms")) for s in summaries])
    row("Steps", [f"{s['steps']} of {s['total_steps']}" if isinstance(s.get("steps"), int)
                  and isinstance(s.get("total_steps"), int) else "" for s in summaries])
    return rows
