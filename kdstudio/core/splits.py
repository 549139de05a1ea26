"""Validation rows set apart from the training rows: a seeded draw, pure Python and torch.

The rows that choose the best student during training (training.keep = "best") must be
neither trained on nor the held-out rows the final figures are reported on.
"""

from __future__ import annotations

from typing import Any

import torch

# A validation share carved out of the training split takes at least this many rows: fewer
# measure the student too coarsely to choose between evaluations.
MIN_VALIDATION_ROWS = 32
# The split names taken as a data set's own validation split.
VALIDATION_SPLITS = ("validation", "valid", "dev")


def carve_validation(texts: list[Any], labels: list[Any] | None, fraction: float, cap: int,
                     seed: int) -> tuple[list[Any], list[Any] | None, list[Any] | None,
                                         list[Any] | None]:
    """(training texts, labels, validation texts, labels): a seeded draw of
    max(MIN_VALIDATION_ROWS, fraction of the rows) rows, at most ``cap`` (0: no cap); both
    parts keep the rows' order. No validation rows (None) when they would take more than
    half the rows."""
    n = len(texts)
    k = max(MIN_VALIDATION_ROWS, round(fraction * n))
    if cap:
        k = min(k, cap)
    if fraction <= 0 or 2 * k > n:
        return texts, labels, None, None
    # Its own generator: the draw depends on the seed alone, not on what ran before.
    g = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    chosen = set(torch.randperm(n, generator=g)[:k].tolist())
    keep = [i for i in range(n) if i not in chosen]
    val = sorted(chosen)

    def pick(rows: list[Any] | None, idx: list[int]) -> list[Any] | None:
        return [rows[i] for i in idx] if rows is not None else None
    return pick(texts, keep), pick(labels, keep), pick(texts, val), pick(labels, val)
