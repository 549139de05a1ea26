"""Before and around a sweep: how long it will take, and which student sizes fit a budget.

Both prefer what was measured on this machine (finished runs of the same teacher) and fall
back to estimates from the models' shapes, and both say which is which. torch is imported
only inside functions that need it (model shapes, the device), so the app can import this.
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from kdstudio.core.errors import KDStudioError
from kdstudio.core.plan.memory import MB, ModelShape, derived_student_params
from kdstudio.core.runs import Run, runs_dir
from kdstudio.core.sweep.queue import Sweep, SweepEntry, SweepError

# A rough guess when nothing was measured: sustained training FLOP/s and per-run set-up
# seconds (loading models, the first evaluation, the final measurement).
ROUGH_FLOPS = {"cpu": 1e11, "mps": 2e12, "cuda": 2e13}
ROUGH_SETUP_S = {"cpu": 20.0, "mps": 20.0, "cuda": 30.0}
BUDGET_KINDS = {
    "memory": ("memory to distill it", "MB"),
    "latency": ("latency per sample", "ms"),
    "size": ("size on disk", "MB"),
}
_WITHIN = {"memory": "With at most {} of memory for distilling",
           "latency": "For at most {} per sample", "size": "For at most {} on disk"}


def format_duration(seconds: float) -> str:
    """'under a minute', 'about 4 min', 'about 1 h 20 min'."""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    h, m = divmod(minutes, 60)
    return f"about {h} h" + (f" {m} min" if m else "")


def _device_type(device: str) -> str:
    return device.split(":", 1)[0] or "cpu"


def _resolved_device(config: Any) -> str:
    from kdstudio.core.plan.memory import resolve_device

    return resolve_device(config.training.device)


# -- finished runs of the same teacher -----------------------------------------------------------

@dataclass
class PastRun:
    """A finished run's figures and the settings that decide its speed."""

    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    wall_s: float | None = None

    @property
    def device_type(self) -> str:
        return _device_type(str(self.summary.get("device", "cpu")))

    @property
    def derived_layers(self) -> int | None:
        student = self.config.get("student", {})
        kept = self.summary.get("kept_layers")
        if student.get("name") or student.get("hidden_size") or not isinstance(kept, list):
            return None
        return len(kept)


def past_runs(task: str, teacher: str) -> list[PastRun]:
    """Finished runs of this teacher for this task, in the run store."""
    base = runs_dir()
    if not base.is_dir():
        return []
    out = []
    for p in base.iterdir():
        run = Run(p)
        s = run.summary()
        if s.get("status") != "finished" or s.get("task") != task or s.get("teacher") != teacher:
            continue
        try:
            cfg = tomllib.loads(run.config_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        out.append(PastRun(p, s, cfg, _wall_time(run, s)))
    return out


def _wall_time(run: Run, s: dict[str, Any]) -> float | None:
    """Seconds from the run folder's creation to its last summary write (None if resumed)."""
    try:
        created = _dt.datetime.fromisoformat(s["created"]).timestamp()
        wall = run.summary_path.stat().st_mtime - created
    except (KeyError, ValueError, OSError):
        return None
    duration = s.get("duration_s") or 0
    # Far longer than its training: resumed on another day, not a measure of the run.
    return wall if 0 < wall < duration * 3 + 600 else None


def _similar(ref: PastRun, config: Any, device_type: str) -> bool:
    c = ref.config
    data, tr = c.get("data", {}), c.get("training", {})
    return (ref.device_type == device_type
            and data.get("dataset") == config.data.dataset
            and data.get("max_length") == config.data.max_length
            and tr.get("batch_size") == config.training.batch_size
            and tr.get("grad_accum_steps", 1) == config.training.grad_accum_steps)


# -- time ----------------------------------------------------------------------------------------

@dataclass
class TimeEstimate:
    total_s: float
    per_entry: dict[int, float]
    method: str       # "measured", "rough" or "unknown"
    note: str         # how it was estimated, in a sentence

    @property
    def text(self) -> str:
        n = len(self.per_entry)
        runs = f"{n} run" + ("" if n == 1 else "s")
        if self.method == "unknown":
            return f"{runs}; the time cannot be estimated ({self.note})."
        return f"{runs}, {format_duration(self.total_s)} on this machine ({self.note})."


def _work(shape: ModelShape, task: str, layers: float | None = None) -> float:
    """Parameters that cost compute per token: the transformer blocks (all, or ``layers`` of
    them) plus a language model's output head; embedding lookups are nearly free."""
    head = shape.vocab_size * shape.hidden_size if task == "causal-lm" else 0
    blocks = (shape.layer_params if layers is None
              else shape.layer_params / max(1, shape.num_layers) * layers)
    return float(blocks + head)


def _entry_work(shape: ModelShape, entry: SweepEntry, config: Any) -> float:
    spec = entry.spec
    if spec.derived:
        layers = spec.layers if spec.layers >= 1 else max(1, round(spec.layers * shape.num_layers))
        return _work(shape, config.task, layers)
    from kdstudio.core.plan.memory import model_shape

    try:
        return _work(model_shape(spec.name, config.task), config.task)
    except Exception:  # noqa: BLE001 - an unreachable Hub id: assume half the teacher
        return _work(shape, config.task) / 2


def _planned_steps(config: Any, refs: list[PastRun]) -> tuple[int | None, str]:
    tc = config.training
    if tc.max_steps:
        return tc.max_steps, ""
    for r in refs:  # same data and batch: the steps per epoch are the same
        rt = r.config.get("training", {})
        same_data = all(r.config.get("data", {}).get(k) == v for k, v in _data_keys(config).items())
        if not rt.get("max_steps") and rt.get("epochs") and r.summary.get("total_steps") and same_data:
            return max(1, round(r.summary["total_steps"] * tc.epochs / rt["epochs"])), ""
    try:
        from kdstudio.core.plan.memory import estimate_tokens, teacher_tokenizer

        tok = teacher_tokenizer(config) if config.task == "causal-lm" and config.data.pack else None
        est = estimate_tokens(config, tok, sample=400)
        n = (est.used_tokens // config.data.max_length if tok is not None and est.used_tokens
             else est.train_rows)
    except Exception:  # noqa: BLE001 - any unreadable data: say so, estimate nothing
        return None, "the data could not be counted"
    per_epoch = math.ceil(max(1, n) / min(tc.batch_size, max(1, n)))
    return max(1, math.ceil(tc.epochs * per_epoch / tc.grad_accum_steps)), ""


def _data_keys(config: Any) -> dict[str, Any]:
    d = config.data
    return {"dataset": d.dataset, "config_name": d.config_name, "split": d.split,
            "max_train_samples": d.max_train_samples, "max_length": d.max_length, "pack": d.pack,
            "eval_fraction": d.eval_fraction, "eval_split": d.eval_split}


def estimate_time(sweep: Sweep, entries: list[SweepEntry] | None = None, *,
                  teacher_shape: ModelShape | None = None, device: str = "") -> TimeEstimate:
    """Seconds the entries (default: the unfinished ones) will take on this machine.

    Measured when finished runs of this teacher on the same data, batch and device exist
    (the sweep's own finished runs count: the estimate sharpens as it goes), scaled by the
    work per step (teacher forward + student forward and backward: T + 3S parameters);
    otherwise a rough guess from the models' sizes and a typical device speed.
    """
    config = sweep.base
    entries = sweep.todo(retry_failed=True) if entries is None else entries
    if not entries:
        return TimeEstimate(0.0, {}, "measured", "nothing left to run")
    device = device or _resolved_device(config)
    dtype = _device_type(device)
    walls = {e.run_dir: e.wall_s for e in sweep.entries if e.run_dir and e.wall_s}
    refs = [r for r in past_runs(config.task, config.teacher.name) if _similar(r, config, dtype)]
    for r in refs:
        r.wall_s = walls.get(str(r.path), r.wall_s)
    if teacher_shape is None:
        try:
            from kdstudio.core.plan.memory import model_shape

            teacher_shape = model_shape(config.teacher.name, config.task,
                                        revision=config.teacher.revision,
                                        trust_remote_code=config.teacher.trust_remote_code)
        except Exception:  # noqa: BLE001 - an unreadable teacher: use the past runs
            teacher_shape = None
    if teacher_shape is None:
        return TimeEstimate(0.0, {e.index: 0.0 for e in entries}, "unknown",
                            f"the teacher '{config.teacher.name}' could not be read")
    steps, why = _planned_steps(config, refs)
    if steps is None:
        return TimeEstimate(0.0, {e.index: 0.0 for e in entries}, "unknown", why)
    # A step costs a teacher forward (2 FLOPs per parameter and token) and a student forward
    # and backward (6): time scales with T + 3S in compute parameters.
    task = config.task
    t_work = _work(teacher_shape, task)
    work = {e.index: _entry_work(teacher_shape, e, config) for e in entries}

    def ref_work(r: PastRun) -> float:
        if r.derived_layers:
            return _work(teacher_shape, task, r.derived_layers)
        share = (r.summary.get("student_params") or 0) / max(1, r.summary.get("teacher_params") or 1)
        return t_work * (share or 0.5)

    per: dict[int, float] = {}
    for e in entries if refs else []:
        guesses = []
        for r in refs:
            r_steps = int(r.summary.get("steps") or r.summary.get("total_steps") or 0)
            dur = float(r.summary.get("duration_s") or 0)
            if r_steps <= 0 or dur <= 0:
                continue
            ratio = (t_work + 3 * work[e.index]) / (t_work + 3 * ref_work(r))
            setup = max(0.0, (r.wall_s or dur) - dur)
            # Same length: the whole duration carries over (its final measurement too).
            train = dur if r_steps == steps else dur / r_steps * steps
            guesses.append(setup + train * ratio)
        if guesses:
            per[e.index] = statistics.median(guesses)
    if refs and len(per) == len(entries):
        n = len(refs)
        note = (f"measured from {n} earlier run" + ("" if n == 1 else "s")
                + f" of this teacher on this data, {dtype.upper() if dtype != 'cpu' else 'CPU'}")
        return TimeEstimate(sum(per.values()), per, "measured", note)

    flops = ROUGH_FLOPS.get(dtype, ROUGH_FLOPS["cpu"])
    tokens = config.training.batch_size * config.data.max_length * config.training.grad_accum_steps
    for e in entries:
        per[e.index] = (ROUGH_SETUP_S.get(dtype, 20.0)
                        + steps * tokens * (2 * t_work + 6 * work[e.index]) / flops)
    where = "a CPU" if dtype == "cpu" else "a GPU"
    return TimeEstimate(sum(per.values()), per, "rough",
                        f"a rough guess from the models' sizes and a typical speed of {where}; "
                        "it is measured once the first run finishes")


# -- fit my budget -------------------------------------------------------------------------------

@dataclass
class Figures:
    """Measured figures of a teacher and of derived students, by layers kept."""

    teacher: dict[str, float] = field(default_factory=dict)   # params, size_mb, latency_ms
    students: dict[int, dict[str, float]] = field(default_factory=dict)


def known_figures(task: str, teacher: str, device_type: str = "") -> Figures:
    """Medians of what finished runs of this teacher measured (latency only on this device)."""
    fig = Figures()
    runs = past_runs(task, teacher)
    t: dict[str, list[float]] = {}
    per: dict[int, dict[str, list[float]]] = {}
    for r in runs:
        s = r.summary
        same_device = not device_type or r.device_type == device_type
        for key, src in (("params", "teacher_params"), ("size_mb", "teacher_size_mb"),
                         ("latency_ms", "teacher_latency_ms")):
            if isinstance(s.get(src), (int, float)) and (key != "latency_ms" or same_device):
                t.setdefault(key, []).append(float(s[src]))
        k = r.derived_layers
        if k is None:
            continue
        for key, src in (("params", "student_params"), ("size_mb", "student_size_mb"),
                         ("latency_ms", "student_latency_ms"),
                         ("quality_retained", "quality_retained")):
            if isinstance(s.get(src), (int, float)) and (key != "latency_ms" or same_device):
                per.setdefault(k, {}).setdefault(key, []).append(float(s[src]))
    fig.teacher = {k: statistics.median(v) for k, v in t.items()}
    fig.students = {k: {key: statistics.median(v) for key, v in d.items()} for k, d in per.items()}
    return fig


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


def teacher_shape_for(config: Any) -> ModelShape:
    """The teacher's shape from its config files; errors say which model could not be read."""
    from kdstudio.core.plan.memory import model_shape

    t = config.teacher
    try:
        return model_shape(t.name, config.task, revision=t.revision,
                           trust_remote_code=t.trust_remote_code)
    except KDStudioError:
        raise
    except Exception as exc:
        raise SweepError(f"The teacher '{t.name}' could not be read to count its layers: {exc}",
                         hint="Check the teacher on the Models page.") from exc
