"""Teacher and student side by side on the user's own input.

For causal-lm both generate from the same prompt and seed (with latency, tokens/s and peak
memory); for classification both give class probabilities; for sentence embeddings both
find their nearest neighbours among the eval sentences, with cosines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .config import RunConfig, load_config
from .errors import RunError
from .losses import mean_pool
from .models import count_params, load_model, resolve_model_source


@dataclass
class GenerationSettings:
    max_new_tokens: int = 40
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


@dataclass
class ModelAnswer:
    """One model's answer to one input."""

    text: str                                   # a readable one-line answer
    latency_ms: float
    tokens_per_s: float | None = None           # causal-lm generation
    peak_memory_mb: float | None = None
    probabilities: list[tuple[str, float]] = field(default_factory=list)  # classification, best first
    neighbours: list[tuple[str, float]] = field(default_factory=list)     # embeddings, closest first


class Predictor:
    """One model ready to answer inputs for its task."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, task: str, *,
                 device: torch.device, label_names: list[str] | None = None,
                 index_texts: list[str] | None = None, max_length: int = 128):
        self.model, self.tok, self.task, self.device = model, tokenizer, task, device
        self.label_names = label_names or []
        self.max_length = max_length
        self.index_texts = index_texts or []
        self._index: torch.Tensor | None = None

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        out = []
        for i in range(0, len(texts), 64):
            enc = self.tok(texts[i:i + 64], padding=True, truncation=True, max_length=self.max_length,
                           return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state
            out.append(F.normalize(mean_pool(hidden, enc["attention_mask"]).float(), dim=-1).cpu())
        self.model.train(was_training)
        return torch.cat(out)

    def refresh_index(self) -> None:
        """Re-embed the neighbour index (after the model's weights changed)."""
        self._index = self._embed(self.index_texts) if self.index_texts else None

    def answer(self, text: str, gen: GenerationSettings | None = None, *, top_k: int = 3) -> ModelAnswer:
        # The student may be mid-training: answer in eval mode (no dropout), then put it back.
        was_training = self.model.training
        self.model.eval()
        try:
            return self._answer(text, gen or GenerationSettings(), top_k)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def _answer(self, text: str, gen: GenerationSettings, top_k: int) -> ModelAnswer:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        sync()
        t0 = time.perf_counter()
        if self.task == "causal-lm":
            enc = self.tok([text], return_tensors="pt").to(self.device)
            torch.manual_seed(gen.seed)
            kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens,
                                      "pad_token_id": self.tok.pad_token_id}
            if gen.temperature > 0:
                kwargs.update(do_sample=True, temperature=gen.temperature, top_p=gen.top_p)
            else:
                kwargs.update(do_sample=False)
            out = self.model.generate(**enc, **kwargs)
            sync()
            dt = time.perf_counter() - t0
            new = out[0, enc["input_ids"].shape[1]:]
            answer = ModelAnswer(self.tok.decode(new, skip_special_tokens=True), dt * 1000,
                                 tokens_per_s=len(new) / dt if dt > 0 else None)
        elif self.task == "sequence-classification":
            enc = self.tok([text], truncation=True, max_length=self.max_length,
                           return_tensors="pt").to(self.device)
            probs = self.model(**enc).logits.float().softmax(-1)[0].cpu()
            sync()
            dt = time.perf_counter() - t0
            names = self.label_names or [str(i) for i in range(len(probs))]
            ranked = sorted(zip(names, probs.tolist()), key=lambda x: -x[1])
            answer = ModelAnswer(f"{ranked[0][0]} ({ranked[0][1]:.0%})", dt * 1000,
                                 probabilities=ranked)
        else:
            emb = self._embed([text])
            sync()
            dt = time.perf_counter() - t0
            if self._index is None:
                self.refresh_index()
            neighbours: list[tuple[str, float]] = []
            if self._index is not None:
                sims = (self._index @ emb[0]).tolist()
                order = sorted(range(len(sims)), key=lambda i: -sims[i])[:top_k]
                neighbours = [(self.index_texts[i], sims[i]) for i in order]
            answer = ModelAnswer(neighbours[0][0] if neighbours else "", dt * 1000,
                                 neighbours=neighbours)
        if self.device.type == "cuda":
            answer.peak_memory_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        return answer


@dataclass
class Comparison:
    teacher: ModelAnswer
    student: ModelAnswer


class Comparer:
    """Teacher and student of a run, loaded once, answering the same inputs."""

    def __init__(self, task: str, teacher: Predictor, student: Predictor, summary: dict[str, Any]):
        self.task, self.teacher, self.student, self.summary = task, teacher, student, summary

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto", index_size: int = 300) -> "Comparer":
        from .data import load_text_data
        from .runs import Run
        from .trainer import resolve_device

        run = Run(Path(run_dir))
        if not run.student_dir.joinpath("config.json").exists():
            raise RunError(f"The run '{run.path.name}' has no saved student yet.",
                           hint="Compare a finished or stopped run.")
        cfg: RunConfig = load_config(run.config_path)
        s = run.summary()
        dev = resolve_device(device)
        labels = s.get("label_names")
        t_src = s.get("teacher_source") or resolve_model_source(cfg.teacher.name, role="teacher")
        teacher = load_model(t_src, cfg.task, label_names=labels, role="teacher")
        student = load_model(str(run.student_dir), cfg.task, label_names=labels, role="student")
        index: list[str] = []
        if cfg.task == "sentence-embedding":
            index = load_text_data(cfg.data, cfg.task, seed=cfg.training.seed).eval_texts[:index_size]
        make = lambda m: Predictor(m.model.to(dev), m.tokenizer, cfg.task, device=dev,  # noqa: E731
                                   label_names=labels, index_texts=index,
                                   max_length=cfg.data.max_length)
        return cls(cfg.task, make(teacher), make(student), s)

    def compare(self, text: str, gen: GenerationSettings | None = None) -> Comparison:
        if not text.strip():
            from .errors import KDStudioError

            raise KDStudioError("The input is empty.", hint="Type a sentence or a prompt first.")
        return Comparison(self.teacher.answer(text, gen), self.student.answer(text, gen))

    def table(self) -> dict[str, Any]:
        """Parameters, size, latency, speed-up and quality retained, from the run's summary."""
        s = self.summary
        return {
            "parameters": (s.get("teacher_params") or count_params(self.teacher.model),
                           s.get("student_params") or count_params(self.student.model)),
            "size_mb": (s.get("teacher_size_mb"), s.get("student_size_mb")),
            "latency_ms": (s.get("teacher_latency_ms"), s.get("student_latency_ms")),
            "speedup": s.get("speedup"),
            "quality_retained": s.get("quality_retained"),
            "headline_metric": s.get("headline_metric"),
        }


class PinnedInputs:
    """The student's answers to evaluation.pinned_inputs at each evaluation (teacher's once)."""

    def __init__(self, cfg: RunConfig, teacher: Any, t_tok: Any, student: Any, s_tok: Any,
                 data: Any, device: torch.device):
        self.inputs = list(cfg.evaluation.pinned_inputs)
        if not self.inputs:
            return
        index = data.eval_texts[:300] if cfg.task == "sentence-embedding" else None
        common = dict(device=device, label_names=data.label_names, index_texts=index,
                      max_length=cfg.data.max_length)
        self.gen = GenerationSettings(max_new_tokens=24)
        self.student = Predictor(student, s_tok, cfg.task, **common)
        t = Predictor(teacher, t_tok, cfg.task, **common)
        self.teacher_answers = [t.answer(x, self.gen).text for x in self.inputs]

    def __call__(self) -> list[dict[str, str]]:
        if not self.inputs:
            return []
        return pinned_answers(self.student, self.teacher_answers, self.inputs, self.gen)


def pinned_answers(student: Predictor, teacher_answers: list[str], inputs: list[str],
                   gen: GenerationSettings | None = None) -> list[dict[str, str]]:
    """The student's answers to the pinned inputs, beside the teacher's (computed once)."""
    if student.task == "sentence-embedding":
        student.refresh_index()
    return [{"input": text, "student": student.answer(text, gen).text, "teacher": t}
            for text, t in zip(inputs, teacher_answers)]
