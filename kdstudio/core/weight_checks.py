"""Weights that are not numbers: a teacher with NaN or infinite values answers with NaN, so it
is refused as soon as it has loaded (and again before the first step, after it was prepared
and cast to its run precision).

One float32 sum per parameter on its own device and one wait per device: a NaN or an infinity
makes its sum NaN or infinite, and no finite weights of a real model sum past float32's range.
Only then are the values counted, to name the parameter. No copy of any weight is made.
"""

from __future__ import annotations

import torch
from torch import nn

from kdstudio.core.errors import ModelError


def nonfinite_weights(model: nn.Module) -> list[tuple[str, int]]:
    """(name, count) of each floating-point parameter holding NaN or infinite values."""
    params = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, p) in enumerate(params):
        by_device.setdefault(p.device, []).append(i)
    suspects: list[int] = []
    with torch.no_grad():
        for indices in by_device.values():
            sums = torch.stack([params[i][1].detach().sum(dtype=torch.float32) for i in indices])
            finite = torch.isfinite(sums)
            if not bool(finite.all()):
                suspects += [i for i, ok in zip(indices, finite.tolist()) if not ok]
        out = []
        for i in sorted(suspects):
            name, p = params[i]
            bad = p.numel() - int(torch.isfinite(p.detach()).sum())
            if bad:
                out.append((name, bad))
    return out


def check_teacher_weights(model: nn.Module, name: str) -> None:
    """A teacher with NaN or Inf in its weights answers with NaN: refuse it before any step."""
    if any(p.device.type == "meta" for p in model.parameters()):
        return  # an outline of a teacher whose answers are cached: it has no weights
    bad = nonfinite_weights(model)
    if bad:
        total = sum(n for _, n in bad)
        raise ModelError(f"The teacher '{name}' has {total:,} NaN or infinite values in its "
                         f"weights (first in '{bad[0][0]}'"
                         + (f", in {len(bad)} tensors" if len(bad) > 1 else "")
                         + "), so its answers are not numbers and a student cannot learn "
                         "from it.",
                         hint="The model files are damaged or were saved after training "
                              "diverged: use another copy or another checkpoint of it.")
