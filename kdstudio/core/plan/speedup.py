"""An expected speed-up that the parameter and layer counts allow, and how it was made.

The layers' compute alone (block parameters) promises far too much for a narrow student: a
layer also pays for attention over the text, norms and starting its kernels, which do not
shrink with the width, and every weight is read once per answer. So the gain is capped at
the larger of the two plain ratios a user can check on the model card: the teacher's
parameters over the student's, and its layers over the student's. Pure arithmetic.
"""

from __future__ import annotations

ESTIMATE_HOW = "estimate from the parameter and layer counts"
MEASURED_HOW = "measured in an earlier run on this machine"


def speedup_cap(teacher_params: float, student_params: float, teacher_layers: int,
                student_layers: int) -> float:
    """The largest speed-up the counts allow: max(parameter ratio, layer ratio)."""
    params = teacher_params / student_params if student_params > 0 else 1.0
    layers = teacher_layers / student_layers if student_layers > 0 else 1.0
    return max(1.0, params, layers)


def bounded_speedup(teacher_blocks: float, student_blocks: float, *, teacher_params: float,
                    student_params: float, teacher_layers: int, student_layers: int) -> float:
    """The layers' compute ratio, never above speedup_cap (nor infinite)."""
    cap = speedup_cap(teacher_params, student_params, teacher_layers, student_layers)
    if student_blocks <= 0:
        return cap
    return min(teacher_blocks / student_blocks, cap)


def speedup_text(speedup: float, how: str = ESTIMATE_HOW) -> str:
    """'about 3.0x faster (estimate from the parameter and layer counts)'."""
    if speedup < 1.05:
        return f"about as fast as the teacher ({how})"
    return f"about {speedup:.1f}x faster ({how})"
