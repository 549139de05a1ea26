"""95% intervals of the quality figures: the percentile bootstrap over the eval rows.

Pure torch. A figure is kept as its parts per eval row (a Figure); each resample draws n rows
with replacement, which is the same as weighting every row by how often it was drawn
(``counts``, resamples x rows), so all resamples are computed at once with a matrix product.
Every figure of one measurement is resampled with the same draws, so a difference or a ratio
of two figures on the same rows (student against teacher) is a paired bootstrap.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
# Resamples x rows weights computed at once, at most (about 16 MB of float32).
_CELLS = 4_000_000


class Figure:
    """A figure recomputable on weighted rows: ``on(counts)`` gives it for each resample."""

    def on(self, counts: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def rows(self) -> int:
        raise NotImplementedError


@dataclass
class Mean(Figure):
    """The mean of one value per row (1/0 for a share of rows right)."""

    values: torch.Tensor

    def on(self, counts: torch.Tensor) -> torch.Tensor:
        return counts @ self.values.double() / counts.sum(1)

    @property
    def rows(self) -> int:
        return len(self.values)


@dataclass
class Ratio(Figure):
    """sum(num) / sum(den) over the rows (tokens right over tokens, per row), and with
    ``exp`` its exponential (perplexity: exp of the loss summed per row over the tokens)."""

    num: torch.Tensor
    den: torch.Tensor
    exp: bool = False

    def on(self, counts: torch.Tensor) -> torch.Tensor:
        r = (counts @ self.num.double()) / (counts @ self.den.double()).clamp_min(1e-12)
        # As the figure itself is computed: exp of a loss above 50 is capped there.
        return r.clamp(max=50.0).exp() if self.exp else r

    @property
    def rows(self) -> int:
        return len(self.num)


@dataclass
class MacroF1(Figure):
    """Macro-F1 of predicted against true classes, over the classes present in the rows."""

    pred: torch.Tensor
    labels: torch.Tensor

    def on(self, counts: torch.Tensor) -> torch.Tensor:
        classes = torch.unique(torch.cat([self.labels, self.pred]))
        p = (self.pred[:, None] == classes[None]).double()    # rows x classes
        g = (self.labels[:, None] == classes[None]).double()
        tp = counts @ (p * g)
        fp, fn = counts @ (p * (1 - g)), counts @ ((1 - p) * g)
        denom = 2 * tp + fp + fn
        f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-12), 0.0)
        # A class no drawn row predicts or holds does not count, as in the figure itself.
        present = (denom > 0).double()
        return (f1 * present).sum(1) / present.sum(1).clamp_min(1.0)

    @property
    def rows(self) -> int:
        return len(self.pred)


@dataclass
class PairRankCorrelation(Figure):
    """The Spearman correlation over the pairs of different rows, as measures.spearman gives it
    (a, b: rows x rows, each pair's rank among all pairs; the diagonal is left out). A resample
    weighs the pair (i, j) by c_i * c_j, the copies of both drawn, and correlates the ranks
    with those weights: the ranks stay those of all the rows, since ranking again per resample
    would sort every pair a thousand times."""

    a: torch.Tensor
    b: torch.Tensor

    def on(self, counts: torch.Tensor) -> torch.Tensor:
        n = self.rows
        off = 1.0 - torch.eye(n)
        # Ranks scaled to [-0.5, 0.5] (a shift leaves a correlation as it is) keep float32's
        # rounding to about 1e-7 of the figure, at half float64's time.
        scale = float(max(n * (n - 1) // 2, 1))
        a, b = ((m.float() / scale - 0.5) * off for m in (self.a, self.b))
        c = counts.float()
        # c^T M c for each resample and matrix (c^T off c: the pairs of different copies).
        cm = c @ torch.stack([a, b, a * a, b * b, a * b])      # 5 x resamples x n
        sa, sb, saa, sbb, sab = (cm * c).sum(-1).double()
        w = (counts.sum(1) ** 2 - (counts**2).sum(1)).clamp_min(1e-12)
        cov = sab / w - sa * sb / w**2
        var = (saa / w - (sa / w) ** 2) * (sbb / w - (sb / w) ** 2)
        return torch.where(var > 0, cov / var.clamp_min(1e-300).sqrt(), 0.0)

    @property
    def rows(self) -> int:
        return len(self.a)

    @classmethod
    def of(cls, a: torch.Tensor, b: torch.Tensor) -> "PairRankCorrelation":
        """From two rows x rows similarity matrices: each pair's rank (i < j), ties broken by
        position as measures.spearman breaks them."""
        n = len(a)
        iu = torch.triu_indices(n, n, offset=1)

        def ranks(sim: torch.Tensor) -> torch.Tensor:
            x = sim[iu[0], iu[1]].double()
            r = torch.empty_like(x)
            r[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
            m = torch.zeros(n, n, dtype=torch.float64)
            m[iu[0], iu[1]] = r
            return m + m.T
        return cls(ranks(a), ranks(b))


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> torch.Tensor:
    """(resamples, n) float64: how often each of n rows is drawn in each resample of n rows."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (resamples, n), generator=g)
    counts = torch.zeros(resamples, n, dtype=torch.float64)
    return counts.scatter_add_(1, idx, torch.ones(resamples, n, dtype=torch.float64))


@functools.lru_cache(maxsize=1)
def _shared_counts(n: int, resamples: int, seed: int) -> torch.Tensor:
    """resample_counts, drawn once for all the figures of a measurement (the draws take
    most of an interval's time: 0.15 s of 0.2 s at 2,000 rows). Read, never written."""
    return resample_counts(n, resamples, seed)


def _percentiles(stats: torch.Tensor, level: float) -> list[float]:
    stats = stats[torch.isfinite(stats)]
    if len(stats) == 0:
        return [float("nan"), float("nan")]
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=stats.dtype)
    lo, hi = torch.quantile(stats, q).tolist()
    return [lo, hi]


def _each_resample(n: int, fn, resamples: int, seed: int) -> torch.Tensor:
    """fn(counts) for every resample, in pieces of at most _CELLS weights."""
    counts = _shared_counts(n, resamples, seed)
    step = max(1, _CELLS // max(n, 1))
    return torch.cat([fn(counts[i:i + step]) for i in range(0, resamples, step)])


def intervals(figures: dict[str, Figure], *, level: float = LEVEL, resamples: int = RESAMPLES,
              seed: int = SEED) -> dict[str, list[float]]:
    """{name: [low, high]}: the percentile bootstrap's interval of each figure (figures of
    fewer than 2 rows are left out: one row has no spread to draw from)."""
    out: dict[str, list[float]] = {}
    for name, fig in figures.items():
        if fig.rows < 2:
            continue
        out[name] = _percentiles(_each_resample(fig.rows, fig.on, resamples, seed), level)
    return out


def paired_interval(a: Figure, b: Figure, *, kind: str = "ratio", level: float = LEVEL,
                    resamples: int = RESAMPLES, seed: int = SEED) -> list[float] | None:
    """The interval of a / b (kind "ratio") or a - b ("difference") of two figures on the same
    rows, both computed on each resample's same rows (a paired bootstrap). None when they
    are not on the same rows."""
    if a.rows != b.rows or a.rows < 2:
        return None

    def both(counts: torch.Tensor) -> torch.Tensor:
        x, y = a.on(counts), b.on(counts)
        return x / y if kind == "ratio" else x - y
    return _percentiles(_each_resample(a.rows, both, resamples, seed), level)
