"""Which derived-student sizes fit a budget of memory, latency or size on disk.

Measured figures of earlier runs of the same teacher win over estimates from the model's
shape, and the advice says which is which. Arithmetic on figures and shapes: no torch.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from kdstudio.core.errors import SweepError
from kdstudio.core.plan.measured import Figures
from kdstudio.core.plan.memory import MB, ModelShape, derived_student_params

BUDGET_KINDS = {
    "memory": ("memory to distill it", "MB"),
    "latency": ("latency per sample", "ms"),
    "size": ("size on disk", "MB"),
}
_WITHIN = {"memory": "With at most {} of memory for distilling",
           "latency": "For at most {} per sample", "size": "For at most {} on disk"}


@dataclass
class Candidate:
    layers: int
    params: int
    value: float | None   # the budgeted figure: MB or ms
    source: str           # "measured" or "estimated"
    fits: bool


@dataclass
class BudgetAdvice:
    kind: str
    limit: float
    candidates: list[Candidate]
    proposed: list[int]   # layer counts worth trying, smallest first
    text: str


def _latency_model(teacher: ModelShape, fig: Figures) -> Any:
    """latency(layers): a straight line through the measured points (the teacher's included),
    else the teacher's latency scaled by the share of layers; None when nothing was timed."""
    pts = [(float(k), d["latency_ms"]) for k, d in fig.students.items() if "latency_ms" in d]
    if "latency_ms" in fig.teacher:
        pts.append((float(teacher.num_layers), fig.teacher["latency_ms"]))
    if not pts:
        return None
    xs = {x for x, _ in pts}
    if len(xs) >= 2:
        mx = statistics.fmean(x for x, _ in pts)
        my = statistics.fmean(y for _, y in pts)
        sxx = sum((x - mx) ** 2 for x, _ in pts)
        b = sum((x - mx) * (y - my) for x, y in pts) / sxx
        a = my - b * mx
        floor = min(y for _, y in pts) * 0.25  # timing noise must not give zero or less
        return lambda k: max(floor, a + b * k)
    x0, y0 = pts[0]
    return lambda k: y0 * k / x0


def fit_budget(kind: str, limit: float, teacher: ModelShape, *, figures: Figures | None = None,
               config: Any = None, device: str = "cpu",
               layer_options: list[int] | None = None) -> BudgetAdvice:
    """The derived-student layer counts worth trying within a limit.

    kind is "memory" (MB to distill it here, always estimated), "latency" (ms per sample)
    or "size" (MB on disk). Measured figures of earlier runs win over estimates: parameters
    from derived_student_params, size as parameters x the teacher's bytes per parameter,
    latency along a line through the measured points (or the teacher's, scaled by layers).
    """
    if kind not in BUDGET_KINDS:
        raise SweepError(f"The budget kind is {kind!r}; it can be "
                         f"{', '.join(repr(k) for k in BUDGET_KINDS)}.")
    what, unit = BUDGET_KINDS[kind]
    if not (isinstance(limit, (int, float)) and limit > 0 and math.isfinite(limit)):
        raise SweepError(f"The {what} limit is {limit!r}; give a positive number of {unit}.")
    if kind == "memory" and config is None:
        raise SweepError("A memory budget needs the run's settings (batch size, length) to "
                         "estimate the memory of training.")
    fig = figures or Figures()
    options = layer_options or list(range(1, teacher.num_layers))
    latency = _latency_model(teacher, fig) if kind == "latency" else None
    if kind == "latency" and latency is None:
        return BudgetAdvice(kind, limit, [], [],
                            "The latency cannot be estimated yet: nothing of this teacher has "
                            "been timed on this machine. Run one student (or a sweep) first.")
    sizes = [(d["size_mb"] * MB / d["params"]) for d in [fig.teacher, *fig.students.values()]
             if d.get("size_mb") and d.get("params")]
    bytes_per_param = statistics.median(sizes) if sizes else 4.0

    cands = []
    for k in options:
        m = fig.students.get(k, {})
        params = int(m.get("params") or derived_student_params(teacher, k))
        value: float | None
        if kind == "size":
            value, source = ((m["size_mb"], "measured") if "size_mb" in m
                             else (params * bytes_per_param / MB, "estimated"))
        elif kind == "latency":
            value, source = ((m["latency_ms"], "measured") if "latency_ms" in m
                             else (latency(k), "estimated"))
        else:
            value, source = _memory_mb(config, teacher, k, params, device), "estimated"
        cands.append(Candidate(k, params, value, source, value is not None and value <= limit))
    fitting = sorted(c.layers for c in cands if c.fits)
    proposed = fitting[-3:]  # the largest that fit keep the most quality; two below as fallbacks
    return BudgetAdvice(kind, limit, cands, proposed, _budget_text(kind, limit, cands, proposed))


def _memory_mb(config: Any, teacher: ModelShape, layers: int, params: int, device: str) -> float:
    import copy

    from kdstudio.core.plan.memory import estimate_memory

    cfg = copy.deepcopy(config)
    cfg.student.name, cfg.student.layers, cfg.student.layer_indices = "", float(layers), []
    # available_mb given: only the need is wanted, so the device is never queried.
    est = estimate_memory(cfg, teacher.params, params, teacher.hidden_size, teacher.num_layers,
                          device if device != "auto" else "cpu", vocab_size=teacher.vocab_size,
                          available_mb=1.0)
    return est.needed_mb


def _fmt(kind: str, v: float) -> str:
    if kind == "latency":
        return f"{v:.3g} ms"
    return f"{v / 1024:.1f} GB" if v >= 1024 else f"{v:.3g} MB"


def _budget_text(kind: str, limit: float, cands: list[Candidate], proposed: list[int]) -> str:
    what, _unit = BUDGET_KINDS[kind]
    by = {c.layers: c for c in cands}
    if not cands:
        return "The teacher has no layers to drop."
    if not proposed:
        smallest = min(cands, key=lambda c: c.layers)
        return (f"Even a {smallest.layers}-layer student needs about "
                f"{_fmt(kind, smallest.value or 0)} of {what} ({smallest.source}), over the "
                f"limit of {_fmt(kind, limit)}. Choose a smaller teacher, or a student model "
                "of its own.")
    parts = [f"{k} layer{'s' if k != 1 else ''}: {_fmt(kind, by[k].value or 0)} ({by[k].source})"
             for k in reversed(proposed)]
    counts = " or ".join(", ".join(str(k) for k in reversed(proposed)).rsplit(", ", 1))
    noun = "layer" if proposed == [1] else "layers"
    text = f"{_WITHIN[kind].format(_fmt(kind, limit))}, try {counts} {noun} ({'; '.join(parts)})."
    over = [c for c in cands if not c.fits and c.layers > proposed[-1]]
    if over:
        nxt = min(over, key=lambda c: c.layers)
        text += (f" {nxt.layers} layers would need about {_fmt(kind, nxt.value or 0)} "
                 f"({nxt.source}).")
    return text
