"""The one way KD Studio times models: the same sample for each, a warm-up, repeats taken in
turns (round-robin, so a passing load slows every model alike), the median with the p10-p90
spread, and the machine's load while the timing was taken.

Every latency in the product comes from ``time_models``: the run's own measurement, Compare's
live timing, an export's check and a sweep's timing session. A ``Session`` keeps each model's
times per round, so a speed ratio between two models of one session has a spread of its own
(the ratio round by round). torch is imported only when a GPU is timed.
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

SPREAD = "p10\u2013p90"          # what the spread is: the middle 80% of the repeats
SPREAD_WORDS = "the middle 80% of the repeats"
WARMUP = 3                      # untimed rounds first: caches, allocator, lazy kernels
# Fewer timed rounds than this give no spread: the p10 and p90 of 1-4 values are the values
# themselves, so a speed difference from them is shown but never claimed.
MIN_SPREAD_ROUNDS = 5
# Others' share of the CPU (or the GPU's utilisation) from which a figure counts as taken
# under load: on a 4-core machine, one other busy process is 25%.
BUSY_CPU = 0.25
BUSY_GPU = 0.20
# CPU times tick at 1/100 s per core: a shorter window gives no usable share.
MIN_WINDOW_S = 0.25


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """(p10, median, p90) of the values (one value: that value three times)."""
    if not values:
        raise ValueError("no values")
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=10, method="inclusive")
    return q[0], statistics.median(values), q[8]


# -- the machine's load ---------------------------------------------------------------------------

@dataclass
class Load:
    """What else the machine did while a timing was taken."""

    cpu_others: float | None = None  # share (0-1) of all cores used by other processes
    gpu_util: float | None = None    # the GPU's utilisation (0-1) just before timing

    @property
    def busy(self) -> bool:
        return ((self.cpu_others or 0.0) >= BUSY_CPU) or ((self.gpu_util or 0.0) >= BUSY_GPU)

    def words(self) -> str:
        """'' on a quiet machine, else e.g. 'timed while other programs used 60% of the CPU'."""
        parts = []
        if (self.cpu_others or 0.0) >= BUSY_CPU:
            parts.append(f"other programs used {self.cpu_others:.0%} of the CPU")
        if (self.gpu_util or 0.0) >= BUSY_GPU:
            parts.append(f"the GPU was {self.gpu_util:.0%} busy")
        return "timed while " + " and ".join(parts) if parts else ""

    def to_dict(self) -> dict[str, Any]:
        return {"cpu_others": None if self.cpu_others is None else round(self.cpu_others, 3),
                "gpu_util": None if self.gpu_util is None else round(self.gpu_util, 3),
                "busy": self.busy}

    @classmethod
    def from_dict(cls, d: Any) -> Load:
        d = d if isinstance(d, dict) else {}
        return cls(_num(d.get("cpu_others")), _num(d.get("gpu_util")))


class LoadProbe(Protocol):
    def start(self) -> None: ...
    def finish(self) -> Load: ...


class MachineLoad:
    """Other processes' CPU share over the timing window (all the machine's busy CPU time
    less this process's own), and the GPU's utilisation read before it, where a GPU is timed."""

    def __init__(self, device: str = "cpu"):
        self.device = device

    def start(self) -> None:
        import psutil

        self._me = psutil.Process()
        self._t0 = time.monotonic()
        self._sys0, self._own0 = self._cpu()
        self._gpu = _gpu_utilisation(self.device)

    def _cpu(self) -> tuple[tuple[float, float], float]:
        import psutil

        t = psutil.cpu_times()
        # guest time is counted in user time already (Linux); idle and iowait are not work.
        total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        busy = total - t.idle - getattr(t, "iowait", 0.0)
        own = self._me.cpu_times()
        return (busy, total), own.user + own.system

    def finish(self) -> Load:
        left = MIN_WINDOW_S - (time.monotonic() - self._t0)
        if left > 0:
            time.sleep(left)
        (busy1, total1), own1 = self._cpu()
        (busy0, total0), own0 = self._sys0, self._own0
        span = total1 - total0
        share = max(0.0, min(1.0, (busy1 - busy0 - (own1 - own0)) / span)) if span > 0 else None
        return Load(share, self._gpu)


def _gpu_utilisation(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        return torch.cuda.utilization(torch.device(device)) / 100.0
    except Exception:  # noqa: BLE001 - no NVML here: the GPU's load is simply not known
        return None


# -- one model's latency, and a session of several ------------------------------------------------

@dataclass
class Latency:
    """One model's latency: the median and the p10-p90 spread in ms, where and when."""

    median_ms: float
    p10_ms: float | None = None
    p90_ms: float | None = None
    repeats: int = 0
    device: str = ""
    timed_at: str = ""
    load: Load = field(default_factory=Load)

    @property
    def has_spread(self) -> bool:
        return self.p10_ms is not None and self.p90_ms is not None

    def text(self, digits: str = ".3g") -> str:
        """'12.3 ms (p10-p90 11.8-13.1)'; an old figure without its spread is the median alone."""
        out = f"{self.median_ms:{digits}} ms"
        if self.has_spread:
            out += f" ({SPREAD} {self.p10_ms:{digits}}\u2013{self.p90_ms:{digits}})"
        return out


@dataclass
class Ratio:
    """How many times longer model a takes than model b (a speed-up of b), with its spread:
    the p10-p90 of the ratio round by round, which a shared moment of load cancels out of."""

    value: float
    low: float
    high: float
    rounds: int = 0  # paired rounds behind it (0: not recorded, a figure from before)

    @property
    def sure(self) -> bool:
        """Enough rounds for the spread to mean anything (MIN_SPREAD_ROUNDS)."""
        return self.rounds == 0 or self.rounds >= MIN_SPREAD_ROUNDS

    @property
    def faster(self) -> bool:
        """b is faster beyond the spread."""
        return self.sure and self.low > 1.0

    @property
    def slower(self) -> bool:
        return self.sure and self.high < 1.0

    def to_list(self) -> list[float]:
        return [round(self.value, 3), round(self.low, 3), round(self.high, 3)]


@dataclass
class Session:
    """Models timed together: each model's times (ms) per round, in round order."""

    samples: dict[str, list[float]]
    device: str = "cpu"
    timed_at: str = ""
    warmup: int = WARMUP
    load: Load = field(default_factory=Load)

    @property
    def names(self) -> list[str]:
        return list(self.samples)

    @property
    def repeats(self) -> int:
        return min((len(v) for v in self.samples.values()), default=0)

    def latency(self, name: str) -> Latency:
        """The median, with its p10-p90 spread from MIN_SPREAD_ROUNDS rounds on."""
        values = self.samples[name]
        p10, med, p90 = quantiles(values)
        if len(values) < MIN_SPREAD_ROUNDS:
            p10 = p90 = None
        return Latency(med, p10, p90, len(values), self.device, self.timed_at, self.load)

    def ratio(self, a: str, b: str) -> Ratio | None:
        """a's time over b's: the ratio of the medians, with the p10-p90 of the paired ratios."""
        pairs = [x / y for x, y in zip(self.samples[a], self.samples[b]) if y > 0]
        if not pairs:
            return None
        value = self.latency(a).median_ms / self.latency(b).median_ms
        low, _, high = quantiles(pairs)
        return Ratio(value, min(low, value), max(high, value), len(pairs))

    def to_dict(self) -> dict[str, Any]:
        models = {}
        for name, times in self.samples.items():
            p10, median, p90 = quantiles(times)
            models[name] = {"median_ms": round(median, 4), "p10_ms": round(p10, 4),
                            "p90_ms": round(p90, 4),
                            "samples_ms": [round(t, 4) for t in times]}
        return {"device": self.device, "timed_at": self.timed_at, "warmup": self.warmup,
                "repeats": self.repeats, "spread": SPREAD, "load": self.load.to_dict(),
                "models": models}

    @classmethod
    def from_dict(cls, d: Any) -> Session | None:
        """A session as to_dict wrote it; None when there is none or it is unreadable."""
        if not isinstance(d, dict) or not isinstance(d.get("models"), dict):
            return None
        samples = {}
        for name, m in d["models"].items():
            times = m.get("samples_ms") if isinstance(m, dict) else None
            if not isinstance(times, list) or not times or not all(_finite(t) for t in times):
                return None
            samples[str(name)] = [float(t) for t in times]
        return cls(samples, str(d.get("device", "")), str(d.get("timed_at", "")),
                   int(d.get("warmup", WARMUP)), Load.from_dict(d.get("load")))


def time_models(calls: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = WARMUP,
                device: str = "cpu", clock: Callable[[], float] = time.perf_counter,
                probe: LoadProbe | None = None,
                on_round: Callable[[int, int], None] | None = None,
                stop: Any = None) -> Session:
    """Time each call (one forward pass of one model on its sample) in turns, round by round:
    ``warmup`` untimed rounds, then ``repeats`` timed ones. On a GPU its queue is drained
    around each call. ``on_round(done, total)`` follows the rounds; a set ``stop`` ends the
    session early (with at least one timed round)."""
    if not calls:
        raise ValueError("time_models needs at least one model")
    repeats = max(1, int(repeats))
    sync: Callable[[], Any] = lambda: None  # noqa: E731
    if device.startswith("cuda"):
        import torch

        sync = torch.cuda.synchronize
    probe = probe if probe is not None else MachineLoad(device)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    total = warmup + repeats
    when = now()
    probe.start()
    for i in range(total):
        for name, call in calls.items():
            sync()
            t0 = clock()
            call()
            sync()
            if i >= warmup:
                samples[name].append((clock() - t0) * 1000)
        if on_round is not None:
            on_round(i + 1, total)
        if stop is not None and stop.is_set() and i >= warmup:
            break
    return Session(samples, device, when, warmup, probe.finish())


# -- figures kept in a run's summary.json ---------------------------------------------------------

def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num(v: Any) -> float | None:
    return float(v) if _finite(v) else None


def run_figures(session: Session, teacher: str = "teacher", student: str = "student") -> dict[str, Any]:
    """The summary.json keys of a run's timing: the medians under their old names (read by
    older code and older runs alike), the speed-up, and the whole session."""
    t, s = session.latency(teacher), session.latency(student)
    ratio = session.ratio(teacher, student)
    return {"teacher_latency_ms": round(t.median_ms, 3), "student_latency_ms": round(s.median_ms, 3),
            "speedup": round(ratio.value, 3) if ratio else None,
            "speedup_spread": ([round(ratio.low, 3), round(ratio.high, 3)]
                               if ratio and ratio.sure else None),
            "speedup_rounds": ratio.rounds if ratio else None,
            "latency": session.to_dict()}


def summary_latency(summary: dict[str, Any], role: str) -> Latency | None:
    """The run's latency of 'teacher' or 'student' from its summary; a run from before
    timing sessions gives the median alone."""
    session = Session.from_dict(summary.get("latency"))
    if session is not None and role in session.samples:
        return session.latency(role)
    median = _num(summary.get(f"{role}_latency_ms"))
    return Latency(median) if median is not None else None


def summary_session(summary: dict[str, Any]) -> Session | None:
    return Session.from_dict(summary.get("latency"))


def speedup_text(speedup: Any, spread: Any = None, rounds: Any = None) -> str:
    """'2.03x (1.95-2.10)'; '2.03x (2 rounds, no spread)' from fewer than MIN_SPREAD_ROUNDS
    timed rounds; '-' when not measured."""
    if not _finite(speedup):
        return "-"
    out = f"{speedup:.2f}x"
    if isinstance(spread, (list, tuple)) and len(spread) == 2 and all(_finite(v) for v in spread):
        out += f" ({spread[0]:.2f}\u2013{spread[1]:.2f})"
    else:
        out += few_rounds(rounds)
    return out


def too_few_rounds(rounds: int) -> str:
    """'in 2 timing rounds, too few to tell from noise': why a speed difference is not claimed."""
    return f"in {rounds} timing round{'s' * (rounds != 1)}, too few to tell from noise"


def few_rounds(rounds: Any) -> str:
    """' (2 rounds, no spread)' for a timing of fewer than MIN_SPREAD_ROUNDS rounds, else ''."""
    if isinstance(rounds, int) and not isinstance(rounds, bool) and 0 < rounds < MIN_SPREAD_ROUNDS:
        return f" ({rounds} round{'s' * (rounds != 1)}, no spread)"
    return ""
