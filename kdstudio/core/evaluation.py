"""Task metrics, size on disk, latency and quality retained.

The teacher's figures are computed once per run and cached; the student is measured
before training, at every evaluation and at the end, on the same eval split.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from kdstudio.core.measures import (  # noqa: F401  (re-exported)
    classification_metrics,
    embedding_metrics,
    knn_accuracy,
    spearman,
)
from kdstudio.core.metrics import METRIC_LABELS, headline_for, quality_retained  # noqa: F401  (re-exported)
from kdstudio.core.tasks import get_task
from kdstudio.core.timing import WARMUP, Session, time_models


def forward_features(model: torch.nn.Module, task: Any, inputs: dict[str, torch.Tensor], *,
                     want: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One forward pass: the task's features (logits or the pooled embedding), and the extra
    features asked for (want: "hidden_states", "attentions")."""
    return get_task(task).forward_features(model, inputs, want=want)


class EvalSet:
    """The eval split, tokenized once for each model's tokenizer."""

    def __init__(self, task: str, texts: list[str], labels: list[int] | None, *, max_samples: int,
                 max_length: int, pack: bool, batch_size: int):
        if max_samples:
            texts = texts[:max_samples]
            labels = labels[:max_samples] if labels else None
        self.task, self.texts, self.labels = get_task(task), texts, labels
        self.max_length, self.pack, self.batch_size = max_length, pack, batch_size

    def batches(self, tokenizer: Any) -> list[dict[str, torch.Tensor]]:
        return self.task.eval_batches(self, tokenizer)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


class Evaluator:
    """Measures the student against the teacher on an EvalSet."""

    def __init__(self, task: str, eval_set: EvalSet, teacher: torch.nn.Module, teacher_tok: Any,
                 student_tok: Any, device: torch.device, autocast: Callable[[], Any] = nullcontext,
                 vocab_size: int = 0, project: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 group: Any = None):
        self.task, self.eval_set, self.teacher, self.device = get_task(task), eval_set, teacher, device
        # A multi-process run's distributed.ProcessGroup: the batches are shared out and the
        # results gathered (each). Every process then measures together, and gets the figures
        # one process would.
        self.group = group
        self.autocast, self.vocab_size = autocast, vocab_size
        # Maps a narrower student's embedding to the teacher's size (learned during training).
        self.project = project or (lambda x: x)
        self.teacher_batches = eval_set.batches(teacher_tok)
        self.student_batches = (self.teacher_batches if student_tok is teacher_tok
                                else eval_set.batches(student_tok))
        self._teacher_cache: list[torch.Tensor] | None = None
        self._teacher_metrics: dict[str, float] | None = None
        # The last measurement's figures per eval row (intervals.Figure), which the task
        # hands over (keep_rows): what their 95% intervals are bootstrapped from.
        self._rows: dict[str, Any] = {}
        self.student_rows: dict[str, Any] = {}
        self.teacher_rows: dict[str, Any] = {}
        self._teacher_intervals: tuple[Any, dict[str, list[float]]] = (None, {})

    def keep_rows(self, figures: dict[str, Any]) -> None:
        """The figures just measured, as their parts per eval row (intervals.Figure)."""
        self._rows = dict(figures)

    # The teacher's outputs for classification/embeddings are small: keep them. A language
    # model's are (tokens x vocab): its task recomputes them at each evaluation instead.
    @torch.no_grad()
    def outputs(self, model: torch.nn.Module, batches: list, project: Callable | None = None
                ) -> list[torch.Tensor]:
        """Each batch's task output (logits or embedding) as float on the CPU."""
        def one(b: dict[str, torch.Tensor]) -> torch.Tensor:
            with self.autocast():
                f = self.task.forward_features(model, _to(b, self.device))
            out = self.task.output_of(f)
            return (project(out) if project is not None else out).float().cpu()
        return self.each(batches, one)

    def each(self, batches: list, fn: Callable[[Any], Any]) -> list:
        """``[fn(b) for b in batches]``; in a multi-process run each process computes its share
        of the batches and every process gets all the results, in batch order."""
        if self.group is None:
            return [fn(b) for b in batches]
        return self.group.each(batches, fn)

    def teacher_outputs(self) -> list[torch.Tensor]:
        if self._teacher_cache is None:
            self._teacher_cache = self.outputs(self.teacher, self.teacher_batches)
        return self._teacher_cache

    @torch.no_grad()
    def teacher_metrics(self) -> dict[str, float]:
        if self._teacher_metrics is None:
            self._rows = {}
            self._teacher_metrics = self.task.teacher_metrics(self)
            self.teacher_rows = self._rows
        return dict(self._teacher_metrics)

    def labels(self) -> torch.Tensor | None:
        return torch.tensor(self.eval_set.labels) if self.eval_set.labels else None

    @torch.no_grad()
    def student_metrics(self, student: torch.nn.Module) -> dict[str, float]:
        was_training = student.training
        student.eval()
        self._rows = {}
        try:
            return self.task.student_metrics(self, student)
        finally:
            self.student_rows = self._rows
            student.train(was_training)

    def intervals(self, headline: str = "") -> dict[str, list[float]]:
        """95% intervals of the last student measurement's figures and of the teacher's
        ("teacher." + name), and with a headline, of the quality retained on it
        ("quality_retained", a paired bootstrap of student against teacher on the same rows).
        Figures a task hands no rows for have none."""
        from kdstudio.core.intervals import intervals, paired_interval

        out = intervals(self.student_rows)
        # The teacher is measured once: so are its intervals.
        if self._teacher_intervals[0] is not self.teacher_rows:
            self._teacher_intervals = (self.teacher_rows, {
                f"teacher.{k}": v for k, v in intervals(self.teacher_rows).items()})
        out.update(self._teacher_intervals[1])
        s, t = self.student_rows.get(headline), self.teacher_rows.get(headline)
        if headline == "cosine_to_teacher" and headline in out:
            out["quality_retained"] = out[headline]  # the teacher's cosine to itself is 1
        elif s is not None and t is not None and (self.student_batches is self.teacher_batches
                                                   or not self.task.per_position_output):
            # The same rows for both: the same texts, whichever tokenizer reads them (a
            # language model's blocks differ between tokenizers, so only its own pair).
            # Perplexity: lower is better, so the teacher's over the student's.
            pair = paired_interval(t, s) if headline == "perplexity" else paired_interval(s, t)
            if pair is not None:
                out["quality_retained"] = pair
        return out


# -- size and speed ---------------------------------------------------------------------------

def weights_size_bytes(folder: str | Path) -> int:
    """Size on disk of a saved model's weight files."""
    folder = Path(folder)
    files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
    return sum(f.stat().st_size for f in files)


@torch.no_grad()
def time_forwards(models: dict[str, tuple[torch.nn.Module, dict[str, torch.Tensor]]], task: Any, *,
                  device: torch.device, repeats: int, autocast: Callable[[], Any] = nullcontext,
                  warmup: int = WARMUP, on_round: Callable[[int, int], None] | None = None,
                  stop: Any = None, probe: Any = None,
                  extra: dict[str, tuple[Callable[[dict], Any], dict]] | None = None) -> Session:
    """One forward pass of each model on its inputs, timed in turns (timing.time_models), in
    eval mode; each model's mode is put back afterwards. ``extra``: other callables (e.g. an
    onnxruntime session) timed in the same turns, each on its own inputs as given."""
    task = get_task(task)
    modes = {name: m.training for name, (m, _) in models.items()}
    calls = {}
    for name, (model, inputs) in models.items():
        model.eval()
        batch = _to(inputs, device)

        def call(model: torch.nn.Module = model, batch: dict = batch) -> None:
            with torch.inference_mode(), autocast():
                task.forward_features(model, batch)
        calls[name] = call
    for name, (fn, inputs) in (extra or {}).items():
        calls[name] = lambda fn=fn, inputs=inputs: fn(inputs)
    try:
        return time_models(calls, repeats=repeats, warmup=warmup, device=str(device),
                           on_round=on_round, stop=stop, probe=probe)
    finally:
        for name, (m, _) in models.items():
            m.train(modes[name])


def latency_sample(eval_set: EvalSet, tokenizer: Any) -> dict[str, torch.Tensor]:
    """One typical sample: the median-length eval text (a full block for a language model)."""
    return eval_set.task.latency_sample(eval_set, tokenizer)
