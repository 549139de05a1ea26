"""The choices an export offers and what it reports back."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("onnx", "safetensors")
# None means full precision (fp32). safetensors int8 is refused: see export_run's checks.
QUANTIZE: dict[str, tuple[str | None, ...]] = {"onnx": (None, "int8", "fp16"),
                                               "safetensors": (None, "fp16")}


@dataclass
class ExportResult:
    """What an export wrote and how it compares with the PyTorch student on the run's eval rows."""

    path: Path                 # the export folder
    format: str
    quantize: str | None       # None = fp32
    size_bytes: int            # the model file(s), not the tokenizer
    student_size_bytes: int    # the student's safetensors weights
    max_abs_diff: float        # largest |export - PyTorch student| over the eval outputs
    latency_ms: float          # median per sample, one median-length eval input
    student_latency_ms: float
    metric: str
    value: float               # the export's quality figure
    student_value: float       # the PyTorch student's, on the same rows
    quality_kept: float | None  # export over student (for perplexity: student over export)
    extra: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Both timed together (timing.Session.to_dict, models 'export' and 'student'): the
    # spread, the device, when, and the machine's load.
    timing: dict[str, Any] = field(default_factory=dict)

    def latencies(self) -> tuple[Any, Any]:
        """(export, student) as timing.Latency: median and spread (the median alone when
        the timing session is missing)."""
        from kdstudio.core.timing import Latency, Session

        session = Session.from_dict(self.timing)
        if session is None or not {"export", "student"} <= set(session.samples):
            return Latency(self.latency_ms), Latency(self.student_latency_ms)
        return session.latency("export"), session.latency("student")

    @property
    def precision(self) -> str:
        return self.quantize or "fp32"

    @property
    def size_ratio(self) -> float | None:
        return self.size_bytes / self.student_size_bytes if self.student_size_bytes else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["size_ratio"] = self.size_ratio
        return d


def quality_kept(metric: str, value: float, student_value: float) -> float | None:
    """The export's figure as a share of the student's (perplexity: lower is better)."""
    if not math.isfinite(value + student_value) or min(value, student_value) <= 0:
        return None
    return student_value / value if metric == "perplexity" else value / student_value
