"""How long runs of one teacher will take on this machine.

Measured when finished runs of the same teacher, data, batch and device exist (scaled by
the work per step), else a rough guess from the models' shapes and a typical speed of the
device; the estimate says which. torch is imported only when a model's shape is read.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from kdstudio.core.device import device_type, resolve_device_name
from kdstudio.core.plan.measured import PastRun, machine_speed, past_runs, same_setup
from kdstudio.core.plan.memory import ModelShape
from kdstudio.core.tasks import get_task

# A rough guess when nothing was measured: sustained training FLOP/s and per-run set-up
# seconds (loading models, the first evaluation, the final measurement).
ROUGH_FLOPS = {"cpu": 1e11, "mps": 2e12, "cuda": 2e13}
ROUGH_SETUP_S = {"cpu": 20.0, "mps": 20.0, "cuda": 30.0}


def format_duration(seconds: float) -> str:
    """'under a minute', 'about 4 min', 'about 1 h 20 min'."""
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    h, m = divmod(minutes, 60)
    return f"about {h} h" + (f" {m} min" if m else "")


@dataclass
class TimeEstimate:
    total_s: float
    per_entry: dict[int, float]
    method: str       # "measured", "calibrated" (this machine's speed), "rough" or "unknown"
    note: str         # how it was estimated, in a sentence

    @property
    def text(self) -> str:
        n = len(self.per_entry)
        runs = f"{n} run" + ("" if n == 1 else "s")
        if self.method == "unknown":
            return f"{runs}; the time cannot be estimated ({self.note})."
        return f"{runs}, {format_duration(self.total_s)} on this machine ({self.note})."


def compute_work(shape: ModelShape, task: Any, layers: float | None = None) -> float:
    """Parameters that cost compute per token: the transformer blocks (all, or ``layers`` of
    them) plus the output head of a family that scores the vocabulary at every token;
    embedding lookups are nearly free."""
    head = shape.vocab_size * shape.hidden_size if get_task(task).scores_vocabulary else 0
    blocks = (shape.layer_params if layers is None
              else shape.layer_params / max(1, shape.num_layers) * layers)
    return float(blocks + head)


def _student_work(shape: ModelShape, spec: Any, config: Any) -> float:
    if not spec.name and getattr(spec, "target", 0):  # pruned to a share of the parameters
        return compute_work(shape, config.task) * spec.target
    if not spec.name:
        layers = spec.layers if spec.layers >= 1 else max(1, round(spec.layers * shape.num_layers))
        return compute_work(shape, config.task, layers)
    from kdstudio.core.plan.memory import model_shape

    try:
        return compute_work(model_shape(spec.name, config.task), config.task)
    except Exception:  # noqa: BLE001 - an unreachable Hub id: assume half the teacher
        return compute_work(shape, config.task) / 2


def planned_steps(config: Any, refs: list[PastRun]) -> tuple[int | None, str]:
    """Optimizer steps a run of ``config`` takes (from a past run on the same data, else by
    counting the data); (None, why) when the data cannot be counted."""
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

        packs = get_task(config.task).packs and config.data.pack
        tok = teacher_tokenizer(config) if packs else None
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


def estimate_run_times(config: Any, students: dict[int, Any], *,
                       known_walls: dict[str, float] | None = None,
                       teacher_shape: ModelShape | None = None, device: str = "") -> TimeEstimate:
    """Seconds a run of ``config`` takes on this machine for each student.

    ``students`` maps a key (a sweep entry's index) to a student spec: ``.name`` (another
    model) or ``.layers`` (kept of the teacher's). Measured when finished runs of this teacher
    on the same data, batch and device exist, scaled by the work per step (teacher forward +
    student forward and backward: T + 3S parameters); ``known_walls`` (run folder -> whole
    seconds) sharpens their wall times. Otherwise a rough guess from the models' sizes and a
    typical device speed.
    """
    if not students:
        return TimeEstimate(0.0, {}, "measured", "nothing left to run")
    device = device or resolve_device_name(config.training.device)
    dtype = device_type(device)
    walls = known_walls or {}
    refs = [r for r in past_runs(config.task, config.teacher.name) if same_setup(r, config, dtype)]
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
        return TimeEstimate(0.0, dict.fromkeys(students, 0.0), "unknown",
                            f"the teacher '{config.teacher.name}' could not be read")
    steps, why = planned_steps(config, refs)
    if steps is None:
        return TimeEstimate(0.0, dict.fromkeys(students, 0.0), "unknown", why)
    # A step costs a teacher forward (2 FLOPs per parameter and token) and a student forward
    # and backward (6): time scales with T + 3S in compute parameters.
    task = config.task
    t_work = compute_work(teacher_shape, task)
    work = {key: _student_work(teacher_shape, spec, config) for key, spec in students.items()}

    def ref_work(r: PastRun) -> float:
        if r.derived_layers:
            return compute_work(teacher_shape, task, r.derived_layers)
        share = (r.summary.get("student_params") or 0) / max(1, r.summary.get("teacher_params") or 1)
        return t_work * (share or 0.5)

    per: dict[int, float] = {}
    for key in students if refs else []:
        guesses = []
        for r in refs:
            r_steps = int(r.summary.get("steps") or r.summary.get("total_steps") or 0)
            dur = float(r.summary.get("duration_s") or 0)
            if r_steps <= 0 or dur <= 0:
                continue
            ratio = (t_work + 3 * work[key]) / (t_work + 3 * ref_work(r))
            setup = max(0.0, (r.wall_s or dur) - dur)
            # Same length: the whole duration carries over (its final measurement too).
            train = dur if r_steps == steps else dur / r_steps * steps
            guesses.append(setup + train * ratio)
        if guesses:
            per[key] = statistics.median(guesses)
    if refs and len(per) == len(students):
        n = len(refs)
        note = (f"measured from {n} earlier run" + ("" if n == 1 else "s")
                + f" of this teacher on this data, {dtype.upper() if dtype != 'cpu' else 'CPU'}")
        return TimeEstimate(sum(per.values()), per, "measured", note)

    tokens = config.training.batch_size * config.data.max_length * config.training.grad_accum_steps
    speed = machine_speed(dtype)
    if speed is not None:
        # This machine's own speed, in the currency its runs recorded: whole parameter counts.
        t_all = float(teacher_shape.params)
        setup = speed.setup_s if speed.setup_s >= 0 else ROUGH_SETUP_S.get(dtype, 20.0)
        per = {key: setup + steps * tokens * (2 * t_all + 6 * _student_params(
                   teacher_shape, spec, config)) / speed.flops
               for key, spec in students.items()}
        n = speed.runs
        return TimeEstimate(sum(per.values()), per, "calibrated",
                            f"from the models' sizes and the speed this machine measured in "
                            f"{n} earlier run" + ("" if n == 1 else "s"))
    flops = ROUGH_FLOPS.get(dtype, ROUGH_FLOPS["cpu"])
    for key in students:
        per[key] = (ROUGH_SETUP_S.get(dtype, 20.0)
                    + steps * tokens * (2 * t_work + 6 * work[key]) / flops)
    where = "a CPU" if dtype == "cpu" else "a GPU"
    return TimeEstimate(sum(per.values()), per, "rough",
                        f"a rough guess from the models' sizes and a typical speed of {where}; "
                        "it is measured once the first run finishes")


def _student_params(shape: ModelShape, spec: Any, config: Any) -> float:
    """The student's whole parameter count (what runs record), for the calibrated guess."""
    from kdstudio.core.plan.memory import derived_student_params

    if not spec.name and getattr(spec, "target", 0):
        return shape.params * spec.target
    if not spec.name:
        layers = spec.layers if spec.layers >= 1 else max(1, round(spec.layers * shape.num_layers))
        return float(derived_student_params(shape, int(layers)))
    from kdstudio.core.plan.memory import model_shape

    try:
        return float(model_shape(spec.name, config.task).params)
    except Exception:  # noqa: BLE001 - an unreachable Hub id: assume half the teacher
        return shape.params / 2
