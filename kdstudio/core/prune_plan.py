"""A pruned student of a target size: the planner picks its layers, heads, neurons and width.

Pure arithmetic on configs: every candidate is built on the meta device and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from kdstudio.core.errors import ConfigError
from kdstudio.core.pruning import (
    SHAPES,
    Dims,
    Family,
    PruneShape,
    dims_of,
    meta_params,
    pruned_config,
    require_family,
)

@dataclass
class PlannedShape:
    shape: PruneShape
    params: int
    teacher_params: int
    note: str

    @property
    def share(self) -> float:
        return self.params / self.teacher_params


def even_layers(n_teacher: int, n_student: int) -> list[int]:
    if n_student >= n_teacher:
        return list(range(n_teacher))
    if n_student == 1:
        return [n_teacher - 1]
    return [int(math.floor(i * (n_teacher - 1) / (n_student - 1) + 0.5)) for i in range(n_student)]


def choose_layers(n_teacher: int, n: int, choice: str, layer_scores: Any = None) -> list[int]:
    """n of the teacher's layers: evenly spaced, or the n with the highest block influence."""
    if choice == "importance" and layer_scores is not None:
        order = torch.as_tensor(layer_scores).argsort(descending=True)[:n]
        return sorted(int(i) for i in order)
    return even_layers(n_teacher, n)


def width_options(d: Dims, fam: Family) -> list[tuple[int, int]]:
    """(heads, hidden) a width cut can take: whole key/value groups; hidden with the heads."""
    step = d.heads // d.kv_heads if fam.kv_heads else 1
    out = []
    for h in range(step, d.heads + 1, step):
        if fam.head_dim_free:
            hidden = max(8, int(round(d.hidden * h / d.heads / 8)) * 8)
            out.append((h, min(hidden, d.hidden)))
        else:
            out.append((h, h * d.head_dim))
    return out


def plan_shape(model_cls: Any, config: Any, target: float, shape: str, *,
               layer_choice: str = "even", layer_scores: Any = None,
               vocab_rows: int = 0) -> PlannedShape:
    """The student shape of about ``target`` x the teacher's parameters.

    layers: the teacher's width, fewer layers. width: every layer, fewer heads, neurons and
    channels (all scaled by one factor, then the MLP neurons tuned to land on the target).
    both: about sqrt(target) of the layers, and the width that makes up the rest.
    ``vocab_rows``: the student's vocabulary when it is cut to the data's (0: the teacher's).
    """
    if shape not in SHAPES:
        raise ConfigError(f"student.shape is {shape!r}; it can be one of {', '.join(SHAPES)}.")
    if not 0 < target < 1:
        raise ConfigError(f"student.target_size is {target:g}; give a share of the teacher's "
                          "parameters between 0 and 1 (e.g. 0.5), or 0 for none.")
    fam = require_family(config, "student.target_size")
    d = dims_of(config)
    t_params = meta_params(model_cls, config)
    goal = target * t_params

    def count(layers: list[int], heads: int, hidden: int, inter: int) -> int:
        s = PruneShape(layers, heads, inter, hidden)
        return meta_params(model_cls, pruned_config(config, s, vocab_rows))

    def fit_width(layers: list[int]) -> tuple[PruneShape, int]:
        best: tuple[float, PruneShape, int] | None = None
        for heads, hidden in width_options(d, fam):
            inter = max(1, int(round(d.inter * heads / d.heads)))
            # Parameters are linear in the MLP neurons: solve for the target, within bounds.
            p1 = count(layers, heads, hidden, inter)
            p0 = count(layers, heads, hidden, 1)
            per = (p1 - p0) / max(1, inter - 1)
            if per > 0:
                want = int(round(1 + (goal - p0) / per))
                inter = min(d.inter, max(max(1, inter // 2), want))
            p = count(layers, heads, hidden, inter)
            score = abs(p - goal) / goal
            if best is None or score < best[0] - 1e-9:
                best = (score, PruneShape(layers, heads, inter, hidden), p)
        return best[1], best[2]

    all_layers = list(range(d.layers))
    if shape == "layers":
        best = None
        for n in range(1, d.layers + 1):
            kept = choose_layers(d.layers, n, layer_choice, layer_scores)
            p = count(kept, 0, 0, 0)
            if best is None or abs(p - goal) < abs(best[1] - goal):
                best = (PruneShape(kept), p)
        s, p = best
    elif shape == "width":
        s, p = fit_width(all_layers)
    else:
        n = max(1, min(d.layers, int(round(d.layers * math.sqrt(target)))))
        s, p = fit_width(choose_layers(d.layers, n, layer_choice, layer_scores))
    heads, hidden, inter = s.resolved(d, fam)
    note = (f"For about {target:.0%} of the teacher's parameters with shape '{shape}', the "
            f"student keeps {len(s.layers)} of {d.layers} layers ({', '.join(map(str, s.layers))}), "
            f"{heads} of {d.heads} attention heads, {inter} of {d.inter} MLP neurons and width "
            f"{hidden} of {d.hidden}: {p:,} parameters, {p / t_params:.0%} of the teacher's.")
    return PlannedShape(s, p, t_params, note)

