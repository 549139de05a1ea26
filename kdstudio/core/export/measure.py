"""Checking an export against the PyTorch student: the largest difference of the outputs,
the run's quality figure for both, and sizes on disk (timing.py times them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdstudio.core.events import EventSink, Progress
from kdstudio.core.export.graph import Graph, Runner, runner
from kdstudio.core.runs import Run

CHECK_STAGE = "check against the PyTorch student"


@dataclass
class Check:
    max_abs_diff: float
    metric: str
    value: float          # the export's
    student_value: float  # the PyTorch student's, on the same rows
    extra: dict[str, float] = field(default_factory=dict)


def compare(task: Any, batches: list[dict[str, torch.Tensor]], reference: Runner,
            candidate: Runner, labels: list[int] | None, vocab: int,
            teacher_emb: torch.Tensor | None, on_event: EventSink,
            label_names: list[str] | None = None) -> Check:
    """Run both on every batch: the largest difference and the quality figure of each (the
    task says how its outputs are measured: task.output_check)."""
    check = task.output_check(labels, vocab, teacher_emb)
    check.label_names = list(label_names or [])
    max_diff = 0.0
    for i, b in enumerate(batches):
        max_diff = max(max_diff, check.add(b, reference(b), candidate(b)))
        on_event(Progress(CHECK_STAGE, i + 1, len(batches), "batches"))
    metric, value, student_value, extra = check.result()
    return Check(max_diff, metric, value, student_value, extra)


def teacher_embeddings(run: Run, task: Any, eval_set: Any, student: nn.Module,
                       notes: list[str]) -> torch.Tensor | None:
    """Without labels the run's headline is cosine to the teacher: load it when it fits."""
    from kdstudio.core.models import load_model

    source = run.summary().get("teacher_source", "")
    if not source or not (Path(source) / "config.json").exists():
        notes.append("The teacher is not available here, so quality is the cosine to the "
                     "PyTorch student's embeddings (cosine_to_student), not the run's "
                     "cosine_to_teacher.")
        return None
    teacher = load_model(source, task, role="teacher")
    if teacher.model.config.hidden_size != student.config.hidden_size:
        notes.append("The teacher's embeddings are wider than the student's (the run compared "
                     "them through a learned projection that is not saved), so quality is the "
                     "cosine to the PyTorch student's embeddings (cosine_to_student).")
        return None
    run_teacher = runner(Graph(teacher.model.float().eval(), task, False))
    return torch.cat([run_teacher(b) for b in eval_set.batches(teacher.tokenizer)])


def weights_bytes(folder: Path) -> int:
    """A save_pretrained folder's weight files."""
    files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
    return sum(f.stat().st_size for f in files)


def model_bytes(folder: Path, fmt: str) -> int:
    """An export's model file(s): the weights or the graph with its external data."""
    if fmt == "safetensors":
        return weights_bytes(folder)
    return sum(p.stat().st_size for p in folder.glob("model.onnx*"))
