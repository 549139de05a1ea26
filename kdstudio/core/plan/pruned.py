"""A pruned student's shape, size and expected speed-up, from the teacher's config alone.

The planner (pruning.plan_shape) and the pruned config (pruning.pruned_config) need no
weights: the student is built on the meta device and counted. The app's size control and
the memory/time planner read ``pruned_estimate``; a vocabulary cut to the data is counted
when ``vocab_rows`` is given (it depends on the data), else the teacher's vocabulary.
"""

from __future__ import annotations

from typing import Any

from kdstudio.core.plan.speedup import ESTIMATE_HOW, bounded_speedup
from kdstudio.core.prune_plan import choose_layers, plan_shape
from kdstudio.core.pruning import (
    PruneShape,
    dims_of,
    family_of,
    meta_params,
    pruned_config,
    uses_pruning,
)


def pruned_estimate(student: Any, teacher_config: Any, task: str, *, vocab_rows: int = 0,
                    layer_scores: Any = None) -> dict[str, Any]:
    """Parameters, weights (MB, fp32), share of the teacher and expected speed-up of the
    student a StudentConfig describes, pruned from a teacher of ``teacher_config``.

    Keys: parameters, teacher_parameters, share_of_teacher, weights_mb, train_memory_mb,
    speedup (teacher's block parameters over the student's: compute per token, capped at
    what the parameter and layer counts allow), speedup_how (how it was made), layers
    (kept teacher layers; by importance only once it is measured, else evenly spaced),
    heads, hidden_size, intermediate_size, vocab_size, note (what the planner picked).
    """
    import transformers

    from kdstudio.core.preflight import check_layer_choice
    from kdstudio.core.tasks import get_task

    cls = getattr(transformers, get_task(task).auto_class)
    d = dims_of(teacher_config)
    fam = family_of(teacher_config)
    note = ""
    if student.target_size:
        planned = plan_shape(cls, teacher_config, student.target_size, student.shape,
                             layer_choice=student.layer_choice, layer_scores=layer_scores,
                             vocab_rows=vocab_rows)
        shape, note = planned.shape, planned.note
    else:
        if student.layer_indices:
            kept = sorted(student.layer_indices)
        else:
            n = check_layer_choice(d.layers, student.layers, [])
            kept = choose_layers(d.layers, n, student.layer_choice, layer_scores)
        shape = PruneShape(kept, heads=student.attention_heads,
                           inter=student.intermediate_size, hidden=student.hidden_size)
    cfg = pruned_config(teacher_config, shape, vocab_rows)
    params, t_params = meta_params(cls, cfg), meta_params(cls, teacher_config)
    heads, hidden, inter = shape.resolved(d, fam)
    # Compute per token: the blocks' parameters (embedding lookups are nearly free).
    t_blocks = t_params - meta_params(cls, pruned_config(teacher_config, PruneShape([0]))) \
        + _one_block(cls, teacher_config)
    s_blocks = params - meta_params(cls, pruned_config(cfg, PruneShape([0]))) \
        + _one_block(cls, cfg)
    return {
        "parameters": params, "teacher_parameters": t_params,
        "share_of_teacher": params / t_params, "weights_mb": params * 4 / 2**20,
        "train_memory_mb": params * 16 / 2**20,
        "speedup": bounded_speedup(t_blocks, s_blocks, teacher_params=t_params,
                                   student_params=params, teacher_layers=d.layers,
                                   student_layers=len(shape.layers)),
        "speedup_how": ESTIMATE_HOW,
        "layers": list(shape.layers), "heads": heads, "hidden_size": hidden,
        "intermediate_size": inter, "vocab_size": vocab_rows or d.vocab, "note": note,
    }


def _one_block(cls: Any, config: Any) -> int:
    """Parameters of one transformer block of this config."""
    one = meta_params(cls, pruned_config(config, PruneShape([0])))
    two = meta_params(cls, pruned_config(config, PruneShape([0, 0])))
    return two - one


def pruned_student_params(config: Any, teacher_config: Any) -> int | None:
    """The derived student's parameters when the RunConfig prunes it, else None."""
    s = config.student
    if s.name or family_of(teacher_config) is None or not uses_pruning(s, teacher_config):
        return None
    return int(pruned_estimate(s, teacher_config, config.task)["parameters"])
