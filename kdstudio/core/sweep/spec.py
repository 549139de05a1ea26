"""What a sweep varies: its students and an optional second axis, checked before anything runs.

A student is derived from the teacher (a number or share of its layers) or another model
by name; the second axis is temperatures or logit losses. A sweep may also export each
student as int8 ONNX; ``int8_export`` finds that export in a run's summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdstudio.core.config import LOGIT_LOSSES, SHAPES, RunConfig
from kdstudio.core.errors import SweepError

AXES = {"temperature": "temperatures", "method": "logit losses", "shape": "student shapes"}
# The export a sweep with quantize_int8 makes of each student: (format, quantize).
INT8_EXPORT = ("onnx", "int8")


@dataclass(frozen=True)
class StudentSpec:
    """One student of a sweep: derived from the teacher (layers, or a target share of its
    parameters, pruned to student.shape) or another model (name)."""

    layers: float = 0.0
    name: str = ""
    target: float = 0.0

    @property
    def derived(self) -> bool:
        return not self.name

    @property
    def label(self) -> str:
        if self.name:
            return Path(self.name.rstrip("/\\")).name or self.name
        if self.target:
            return f"{self.target:.0%} of the teacher"
        if self.layers >= 1:
            n = int(self.layers)
            return f"{n} layer" + ("" if n == 1 else "s")
        return f"{self.layers:.0%} of the layers"

    def section(self) -> dict[str, Any]:
        """The [student] keys this student sets over the base config."""
        if self.name:
            return {"name": self.name}
        if self.target:  # the planner picks the shape: the base's own shape fields step aside
            return {"name": "", "target_size": float(self.target), "layer_indices": [],
                    "hidden_size": 0, "attention_heads": 0, "intermediate_size": 0}
        return {"name": "", "layers": float(self.layers), "layer_indices": []}

    def to_dict(self) -> dict[str, Any]:
        if self.name:
            return {"name": self.name}
        return {"target": self.target} if self.target else {"layers": self.layers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentSpec:
        return cls(layers=float(d.get("layers", 0.0)), name=str(d.get("name", "")),
                   target=float(d.get("target", 0.0)))


def int8_export(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The run's latest int8 ONNX export as summary.json["exports"] lists it, or None."""
    exports = summary.get("exports")
    found = [e for e in exports if isinstance(e, dict)
             and (e.get("format"), e.get("quantize")) == INT8_EXPORT] if isinstance(exports, list) else []
    return found[-1] if found else None


def derived(*layers: float) -> list[StudentSpec]:
    return [StudentSpec(layers=float(k)) for k in layers]


def sized(*targets: float) -> list[StudentSpec]:
    """Students pruned to these shares of the teacher's parameters."""
    return [StudentSpec(target=float(t)) for t in targets]


def axis_label(axis: str, value: Any) -> str:
    """How an axis value is written in labels ('T=2', 'reverse_kl')."""
    if not axis:
        return ""
    return f"T={value:g}" if axis == "temperature" else str(value)


def check_students(students: list[StudentSpec], teacher_layers: int | None) -> list[StudentSpec]:
    """The students without repeats; SweepError names one that cannot be made."""
    if not students:
        raise SweepError("The sweep has no students.",
                         hint="Choose at least one layer count (e.g. 1, 2, 3) or another model.")
    out: list[StudentSpec] = []
    for s in students:
        if s.derived and s.target:
            if not 0 < s.target < 1:
                raise SweepError(f"A student of {s.target:g} of the teacher's size cannot be "
                                 "pruned; give shares between 0 and 1, e.g. 0.3,0.5,0.7.")
        elif s.derived:
            if s.layers <= 0 or (s.layers >= 1 and s.layers != int(s.layers)):
                raise SweepError(f"A derived student has {s.layers:g} layers; give a whole number "
                                 "of layers (e.g. 2) or a fraction below 1 (e.g. 0.5).")
            if teacher_layers and s.layers >= 1 and s.layers > teacher_layers:
                raise SweepError(f"A derived student cannot keep {int(s.layers)} layers: the "
                                 f"teacher has only {teacher_layers}.",
                                 hint=f"Choose counts from 1 to {teacher_layers}, or fractions such as 0.5.")
        if s not in out:
            out.append(s)
    return out


def check_axis(base: RunConfig, axis: str, values: list[Any]) -> list[Any]:
    """The axis values without repeats; SweepError names one that is not allowed."""
    if not axis:
        if values:
            raise SweepError("Values were given for a second axis, but no axis was chosen.",
                             hint="Choose 'temperature' or 'method'.")
        return []
    if axis not in AXES:
        raise SweepError(f"The second axis is {axis!r}; it can be 'temperature', 'method' or "
                         "'shape'.")
    if axis == "shape":
        if not values:
            raise SweepError("The second axis (student shapes) has no values.",
                             hint=f"Choose from {', '.join(SHAPES)}.")
        bad = [v for v in values if v not in SHAPES]
        if bad:
            raise SweepError(f"The student shape {bad[0]!r} is not one KD Studio knows.",
                             hint=f"Choose from {', '.join(SHAPES)}.")
        return list(dict.fromkeys(values))
    if not values:
        raise SweepError(f"The second axis ({AXES[axis]}) has no values.",
                         hint="Give at least two, e.g. 1, 2, 4." if axis == "temperature" else
                         f"Choose from {', '.join(LOGIT_LOSSES)}.")
    m = base.method
    if m.logit_weight == 0 and m.cross_tokenizer_weight == 0:
        raise SweepError(f"A sweep over {AXES[axis]} changes only the logit loss, but "
                         "method.logit_weight is 0 in this config, so every run would be the same.",
                         hint="Give method.logit_weight a positive weight, or sweep students only.")
    out: list[Any] = []
    for v in values:
        if axis == "temperature":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise SweepError(f"The temperature {v!r} is not a positive number.",
                                 hint="Give temperatures such as 1, 2, 4.")
            v = float(v)
        elif v not in LOGIT_LOSSES:
            raise SweepError(f"The method {v!r} is not a logit loss KD Studio knows.",
                             hint=f"Choose from {', '.join(LOGIT_LOSSES)}.")
        if v not in out:
            out.append(v)
    return out
