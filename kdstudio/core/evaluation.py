"""Task metrics, size on disk, latency and quality retained.

The teacher's figures are computed once per run and cached; the student is measured
before training, at every evaluation and at the end, on the same eval split.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .data import causal_blocks, collate_blocks, encode
from .losses import logit_distillation_loss, mean_pool
from .metrics import HEADLINE, METRIC_LABELS, headline_for, quality_retained  # noqa: F401  (re-exported)


def forward_features(model: torch.nn.Module, task: str, inputs: dict[str, torch.Tensor], *,
                     hidden: bool = False) -> dict[str, Any]:
    """One forward pass: logits (LM/classification) or the pooled embedding, and hidden states."""
    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    out = model(**model_inputs, output_hidden_states=hidden)
    feats: dict[str, Any] = {"hidden_states": out.hidden_states if hidden else None}
    if task == "sentence-embedding":
        feats["embedding"] = mean_pool(out.last_hidden_state, inputs["attention_mask"])
    else:
        feats["logits"] = out.logits
    return feats


class EvalSet:
    """The eval split, tokenized once for each model's tokenizer."""

    def __init__(self, task: str, texts: list[str], labels: list[int] | None, *, max_samples: int,
                 max_length: int, pack: bool, batch_size: int):
        if max_samples:
            texts = texts[:max_samples]
            labels = labels[:max_samples] if labels else None
        self.task, self.texts, self.labels = task, texts, labels
        self.max_length, self.pack, self.batch_size = max_length, pack, batch_size

    def batches(self, tokenizer: Any) -> list[dict[str, torch.Tensor]]:
        out = []
        if self.task == "causal-lm":
            blocks = causal_blocks(tokenizer, self.texts, self.max_length, self.pack)
            for i in range(0, len(blocks), self.batch_size):
                out.append(collate_blocks(blocks[i:i + self.batch_size], tokenizer.pad_token_id))
            return out
        for i in range(0, len(self.texts), self.batch_size):
            enc = dict(encode(tokenizer, self.texts[i:i + self.batch_size], self.max_length))
            if self.labels is not None:
                enc["labels"] = torch.tensor(self.labels[i:i + self.batch_size])
            out.append(enc)
        return out


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


class Evaluator:
    """Measures the student against the teacher on an EvalSet."""

    def __init__(self, task: str, eval_set: EvalSet, teacher: torch.nn.Module, teacher_tok: Any,
                 student_tok: Any, device: torch.device, autocast: Callable[[], Any] = nullcontext,
                 vocab_size: int = 0, project: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.task, self.eval_set, self.teacher, self.device = task, eval_set, teacher, device
        self.autocast, self.vocab_size = autocast, vocab_size
        # Maps a narrower student's embedding to the teacher's size (learned during training).
        self.project = project or (lambda x: x)
        self.teacher_batches = eval_set.batches(teacher_tok)
        self.student_batches = (self.teacher_batches if student_tok is teacher_tok
                                else eval_set.batches(student_tok))
        self._teacher_cache: list[torch.Tensor] | None = None
        self._teacher_metrics: dict[str, float] | None = None

    # The teacher's outputs for classification/embeddings are small: keep them. LM logits are
    # (tokens x vocab) and can be large, so those are recomputed at each evaluation instead.
    @torch.no_grad()
    def _teacher_outputs(self) -> list[torch.Tensor]:
        if self._teacher_cache is not None:
            return self._teacher_cache
        outs = []
        for b in self.teacher_batches:
            with self.autocast():
                f = forward_features(self.teacher, self.task, _to(b, self.device))
            outs.append((f.get("embedding") if self.task == "sentence-embedding" else f["logits"]).float().cpu())
        if self.task != "causal-lm":
            self._teacher_cache = outs
        return outs

    @torch.no_grad()
    def teacher_metrics(self) -> dict[str, float]:
        if self._teacher_metrics is None:
            if self.task == "causal-lm":
                self._teacher_metrics = {"perplexity": self._perplexity(self.teacher)}
            elif self.task == "sequence-classification":
                preds = torch.cat([o.argmax(-1) for o in self._teacher_outputs()])
                self._teacher_metrics = _classification(preds, self._labels())
            else:
                emb = torch.cat(self._teacher_outputs())
                self._teacher_metrics = ({"knn_accuracy": _knn_accuracy(emb, self._labels())}
                                         if self.eval_set.labels else {})
        return dict(self._teacher_metrics)

    def _labels(self) -> torch.Tensor:
        return torch.tensor(self.eval_set.labels)

    @torch.no_grad()
    def student_metrics(self, student: torch.nn.Module) -> dict[str, float]:
        was_training = student.training
        student.eval()
        try:
            if self.task == "causal-lm":
                return self._causal(student)
            s_out = []
            for b in self.student_batches:
                with self.autocast():
                    f = forward_features(student, self.task, _to(b, self.device))
                out = (self.project(f["embedding"]) if self.task == "sentence-embedding"
                       else f["logits"])
                s_out.append(out.float().cpu())
            t_out = self._teacher_outputs()
            if self.task == "sequence-classification":
                s_pred = torch.cat([o.argmax(-1) for o in s_out])
                t_pred = torch.cat([o.argmax(-1) for o in t_out])
                m = _classification(s_pred, self._labels())
                m["agreement"] = (s_pred == t_pred).float().mean().item()
                return m
            return _embedding_metrics(torch.cat(s_out), torch.cat(t_out),
                                      self._labels() if self.eval_set.labels else None)
        finally:
            student.train(was_training)

    def _perplexity(self, model: torch.nn.Module, batches: list | None = None) -> float:
        nll, count = 0.0, 0
        for b in batches or self.teacher_batches:
            b = _to(b, self.device)
            with self.autocast():
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            lab = b["labels"][:, 1:]
            nll += F.cross_entropy(logits[:, :-1].float().flatten(0, 1), lab.flatten(),
                                   ignore_index=-100, reduction="sum").item()
            count += int((lab != -100).sum())
        return math.exp(min(nll / max(count, 1), 50.0))

    def _causal(self, student: torch.nn.Module) -> dict[str, float]:
        if self.student_batches is not self.teacher_batches:
            # Different tokenizers: no shared ids to agree on, only the student's own figure.
            return {"perplexity": self._perplexity(student, self.student_batches)}
        nll, agree, kl, count = 0.0, 0.0, 0.0, 0
        v = self.vocab_size or None
        for b in self.student_batches:
            b = _to(b, self.device)
            with self.autocast():
                s = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                t = self.teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            s, t = s[:, :-1, :v].float(), t[:, :-1, :v].float()
            lab = b["labels"][:, 1:]
            mask = lab != -100
            n = int(mask.sum())
            nll += F.cross_entropy(s.flatten(0, 1), lab.flatten(), ignore_index=-100,
                                   reduction="sum").item()
            agree += ((s.argmax(-1) == t.argmax(-1)) & mask).sum().item()
            kl += logit_distillation_loss(s, t, mask=mask).item() * n
            count += n
        count = max(count, 1)
        return {"perplexity": math.exp(min(nll / count, 50.0)), "top1_agreement": agree / count,
                "kl_to_teacher": kl / count}


def _classification(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    acc = (pred == labels).float().mean().item()
    f1s = []
    for c in torch.unique(torch.cat([labels, pred])):
        tp = ((pred == c) & (labels == c)).sum().item()
        fp = ((pred == c) & (labels != c)).sum().item()
        fn = ((pred != c) & (labels == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": acc, "macro_f1": sum(f1s) / len(f1s)}


def _cos_matrix(emb: torch.Tensor) -> torch.Tensor:
    e = F.normalize(emb.float(), dim=-1)
    return e @ e.T


def _nearest(sim: torch.Tensor) -> torch.Tensor:
    sim = sim.clone()
    sim.fill_diagonal_(-float("inf"))  # a sentence is not its own neighbour
    return sim.argmax(-1)


def _knn_accuracy(emb: torch.Tensor, labels: torch.Tensor) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy: does the closest other sentence share the label?"""
    return (labels[_nearest(_cos_matrix(emb))] == labels).float().mean().item()


def _ranks(x: torch.Tensor) -> torch.Tensor:
    r = torch.empty_like(x)
    r[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return r


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (ties broken by position)."""
    ra, rb = _ranks(a.double()), _ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / denom) if denom else 0.0


def _embedding_metrics(s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
    cos = F.cosine_similarity(s, t, dim=-1).mean().item() if s.shape == t.shape else float("nan")
    s_sim, t_sim = _cos_matrix(s), _cos_matrix(t)
    iu = torch.triu_indices(len(s), len(s), offset=1)
    m = {"cosine_to_teacher": cos,
         "neighbour_agreement": (_nearest(s_sim) == _nearest(t_sim)).float().mean().item(),
         "spearman": spearman(s_sim[iu[0], iu[1]], t_sim[iu[0], iu[1]])}
    if labels is not None:
        m["knn_accuracy"] = _knn_accuracy(s, labels)
    return m


# -- size and speed ---------------------------------------------------------------------------

def weights_size_bytes(folder: str | Path) -> int:
    """Size on disk of a saved model's weight files."""
    folder = Path(folder)
    files = list(folder.glob("*.safetensors")) or list(folder.glob("*.bin"))
    return sum(f.stat().st_size for f in files)


@torch.no_grad()
def measure_latencies(models: list[tuple[torch.nn.Module, dict[str, torch.Tensor]]], task: str, *,
                      device: torch.device, repeats: int, autocast: Callable[[], Any] = nullcontext,
                      warmup: int = 3) -> list[float]:
    """Median milliseconds for one forward pass on one sample, for each (model, inputs).

    The models take turns, repeat by repeat, so a passing load on the machine slows them
    alike instead of spoiling the ratio between them.
    """
    modes = [m.training for m, _ in models]
    for m, _ in models:
        m.eval()
    batches = [_to(inputs, device) for _, inputs in models]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: list[list[float]] = [[] for _ in models]
    for i in range(warmup + repeats):
        for k, (model, _) in enumerate(models):
            sync()
            t0 = time.perf_counter()
            with autocast():
                forward_features(model, task, batches[k])
            sync()
            if i >= warmup:
                times[k].append((time.perf_counter() - t0) * 1000)
    for (m, _), mode in zip(models, modes):
        m.train(mode)
    return [statistics.median(t) for t in times]


def latency_sample(eval_set: EvalSet, tokenizer: Any) -> dict[str, torch.Tensor]:
    """One typical sample: the median-length eval text (a full block for causal-lm)."""
    texts = sorted(eval_set.texts, key=len)
    text = texts[len(texts) // 2]
    if eval_set.task == "causal-lm":
        blocks = causal_blocks(tokenizer, eval_set.texts, eval_set.max_length, eval_set.pack)
        return collate_blocks([max(blocks, key=len)], tokenizer.pad_token_id)
    return dict(encode(tokenizer, [text], eval_set.max_length))
