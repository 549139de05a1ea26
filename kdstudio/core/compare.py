"""Teacher and student side by side on the user's own input.

For a language model both generate from the same prompt and seed (with latency, tokens/s
and peak memory), and ``token_probabilities`` (token_view.py) shows, token by token, how
likely each model finds a text and where they disagree most; for classification both give
class probabilities; for sentence embeddings both find their nearest neighbours among the
eval sentences, with cosines. Each task family picks its kind of answer (compare_answer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kdstudio.core.config import RunConfig, load_config
from kdstudio.core.device import resolve_device
from kdstudio.core.errors import KDStudioError, RunError
from kdstudio.core.evaluation import time_forwards
from kdstudio.core.models import count_params, load_model, resolve_model_source
from kdstudio.core.tasks import Task, get_task
from kdstudio.core.timing import Latency, Ratio, Session, summary_latency

# The per-token view lives in token_view.py; its names stay importable from here.
from kdstudio.core.token_view import TokenRecord, TokenView, token_probabilities  # noqa: F401


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
    # The time of this answer itself; Comparer.compare replaces it with the median of the
    # two models timed in turns on the input (timing.py), kept whole in ``latency``.
    latency_ms: float
    tokens_per_s: float | None = None           # causal-lm generation
    peak_memory_mb: float | None = None
    # What peak_memory_mb measures: "gpu" (the peak of PyTorch's CUDA allocations while it
    # answered: every loaded model's weights plus its working memory) or "process" (the
    # whole process's peak resident memory, RSS, while it answered); "" when not measured.
    memory_scope: str = ""
    probabilities: list[tuple[str, float]] = field(default_factory=list)  # classification, best first
    neighbours: list[tuple[str, float]] = field(default_factory=list)     # embeddings, closest first
    # Token classification: (word, tag, probability of that tag) for each word of the input.
    tags: list[tuple[str, str, float]] = field(default_factory=list)
    latency: Latency | None = None              # median, spread, device, when, load


class Predictor:
    """One model ready to answer inputs for its task.

    ``task`` is the config's value (a name, kept as ``task`` for the app) or a task object
    (``family``); the family chooses the kind of answer through its compare_answer hook.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, task: str | Task, *,
                 device: torch.device, label_names: list[str] | None = None,
                 index_texts: list[str] | None = None, max_length: int = 128,
                 measure_memory: bool = True):
        self.family = get_task(task)
        self.task = self.family.name
        self.model, self.tok, self.device = model, tokenizer, device
        # Resetting the process's peak memory (CPU) would also reset the peak the training
        # loop reports, so answers given during training (pinned inputs) do not measure it.
        self.measure_memory = measure_memory
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
            emb = self.family.forward_features(self.model, enc)["embedding"]
            out.append(F.normalize(emb.float(), dim=-1).cpu())
        self.model.train(was_training)
        return torch.cat(out)

    def sample(self, text: str) -> dict[str, torch.Tensor]:
        """The input as this model reads it in one forward pass: what Compare times."""
        return dict(self.tok([text], truncation=True, max_length=self.max_length,
                             return_tensors="pt"))

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
        if self.device.type == "cuda" and self.measure_memory:
            torch.cuda.reset_peak_memory_stats(self.device)
        rss_peak = self.measure_memory and self.device.type == "cpu" and reset_peak_rss()
        answer = self.family.compare_answer(self, text, gen, top_k)
        if self.device.type == "cuda" and self.measure_memory:
            answer.peak_memory_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            answer.memory_scope = "gpu"
        elif rss_peak and (peak := peak_rss_mb()) is not None:
            answer.peak_memory_mb, answer.memory_scope = peak, "process"
        return answer

    def _timed(self, work: Any) -> tuple[Any, float]:
        """(work(), its seconds), with the GPU's queue drained before and after."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        out = work()
        sync()
        return out, time.perf_counter() - t0

    # -- the kinds of answer (a task's compare_answer picks one) ---------------------------------
    @torch.no_grad()
    def generate(self, text: str, gen: GenerationSettings) -> ModelAnswer:
        """The model's continuation of ``text``, with latency and tokens per second."""
        def work() -> tuple[Any, Any]:
            enc = self.tok([text], return_tensors="pt").to(self.device)
            torch.manual_seed(gen.seed)
            kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens,
                                      "pad_token_id": self.tok.pad_token_id}
            if gen.temperature > 0:
                kwargs.update(do_sample=True, temperature=gen.temperature, top_p=gen.top_p)
            else:
                kwargs.update(do_sample=False)
            return enc, self.model.generate(**enc, **kwargs)

        (enc, out), dt = self._timed(work)
        new = out[0, enc["input_ids"].shape[1]:]
        return ModelAnswer(self.tok.decode(new, skip_special_tokens=True), dt * 1000,
                           tokens_per_s=len(new) / dt if dt > 0 else None)

    @torch.no_grad()
    def classify(self, text: str) -> ModelAnswer:
        """The model's class probabilities for ``text``, most likely first."""
        def work() -> torch.Tensor:
            enc = self.tok([text], truncation=True, max_length=self.max_length,
                           return_tensors="pt").to(self.device)
            logits = self.family.forward_features(self.model, enc)["logits"]
            return logits.float().softmax(-1)[0].cpu()

        probs, dt = self._timed(work)
        names = self.label_names or [str(i) for i in range(len(probs))]
        ranked = sorted(zip(names, probs.tolist()), key=lambda x: -x[1])
        return ModelAnswer(f"{ranked[0][0]} ({ranked[0][1]:.0%})", dt * 1000, probabilities=ranked)

    @torch.no_grad()
    def nearest(self, text: str, top_k: int) -> ModelAnswer:
        """The ``top_k`` index texts closest to ``text`` in the model's embedding, with cosines
        (the latency counts embedding the input, not the index)."""
        emb, dt = self._timed(lambda: self._embed([text]))
        if self._index is None:
            self.refresh_index()
        neighbours: list[tuple[str, float]] = []
        if self._index is not None:
            sims = (self._index @ emb[0]).tolist()
            order = sorted(range(len(sims)), key=lambda i: -sims[i])[:top_k]
            neighbours = [(self.index_texts[i], sims[i]) for i in order]
        return ModelAnswer(neighbours[0][0] if neighbours else "", dt * 1000,
                           neighbours=neighbours)

    @torch.no_grad()
    def tag(self, words: list[str]) -> ModelAnswer:
        """A tag for each word (its first token's most likely tag, with its probability);
        words past max_length get none. The text lists the entities found."""
        from kdstudio.core.tasks.token_classification import tag_names
        from kdstudio.core.tasks.word_tags import encode_words, entity_spans

        def work() -> tuple[list, torch.Tensor]:
            enc, word_ids = encode_words(self.tok, [words], self.max_length)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            logits = self.family.forward_features(self.model, enc)["logits"]
            return word_ids[0], logits.float().softmax(-1)[0].cpu()

        (word_ids, probs), dt = self._timed(work)
        names = self.label_names or tag_names(self.model)
        first: dict[int, int] = {}
        for pos, w in enumerate(word_ids):
            if w is not None and w not in first:
                first[w] = pos
        tags = []
        for w, word in enumerate(words):
            if w in first:
                p, k = probs[first[w]].max(-1)
                tags.append((word, names[int(k)], float(p)))
            else:
                tags.append((word, "", 0.0))
        spans = entity_spans(words, [t or "O" for _, t, _ in tags])
        text = ", ".join(f"{span} ({kind})" for span, kind in spans) or "no entities"
        return ModelAnswer(text, dt * 1000, tags=tags)


# -- peak memory on the CPU ----------------------------------------------------------------------
# On Linux the kernel keeps the process's high-water mark of resident memory (VmHWM) and lets
# the process reset it (writing "5" to /proc/self/clear_refs). It counts the whole process,
# not one model: honest labels say "process peak memory". Elsewhere nothing is measured.

def reset_peak_rss() -> bool:
    """Reset the process's peak resident memory; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float | None:
    """The process's peak resident memory (VmHWM) since the last reset, in MiB; None if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class Comparison:
    teacher: ModelAnswer
    student: ModelAnswer
    timing: Session | None = None   # both timed together on the input

    @property
    def speedup(self) -> Ratio | None:
        """How many times faster the student answered, with the spread of the ratio."""
        return self.timing.ratio("teacher", "student") if self.timing is not None else None


class Comparer:
    """Teacher and student of a run, loaded once, answering the same inputs."""

    def __init__(self, task: str | Task, teacher: Predictor, student: Predictor,
                 summary: dict[str, Any], repeats: int = 20):
        # The task's name: the app reads it as the config's value.
        self.task = get_task(task).name
        self.teacher, self.student, self.summary = teacher, student, summary
        self.repeats = repeats  # evaluation.latency_repeats of the run

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto", index_size: int = 300) -> Comparer:
        from kdstudio.core.data import load_text_data
        from kdstudio.core.runs import Run

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
        if get_task(cfg.task).compare_index:
            index = load_text_data(cfg.data, cfg.task, seed=cfg.training.seed).eval_texts[:index_size]
        make = lambda m: Predictor(m.model.to(dev), m.tokenizer, cfg.task, device=dev,
                                   label_names=labels, index_texts=index,
                                   max_length=cfg.data.max_length)
        return cls(cfg.task, make(teacher), make(student), s,
                   repeats=cfg.evaluation.latency_repeats)

    def compare(self, text: str, gen: GenerationSettings | None = None) -> Comparison:
        if not text.strip():
            raise KDStudioError("The input is empty.", hint="Type a sentence or a prompt first.")
        t, s = self.teacher.answer(text, gen), self.student.answer(text, gen)
        session = self.time(text)
        for name, answer in (("teacher", t), ("student", s)):
            answer.latency = session.latency(name)
            answer.latency_ms = answer.latency.median_ms
        return Comparison(t, s, session)

    def time(self, text: str, repeats: int | None = None) -> Session:
        """Both models timed on the input the one way (timing.py): one forward pass each,
        a warm-up, then in turns; the median and spread of each, and the load."""
        t, s = self.teacher, self.student
        return time_forwards({"teacher": (t.model, t.sample(text)),
                              "student": (s.model, s.sample(text))},
                             t.family, device=t.device, repeats=repeats or self.repeats)

    def token_view(self, prompt: str, continuation: str = "") -> TokenView:
        """token_probabilities of the teacher and the student on prompt + continuation."""
        return token_probabilities(self.teacher, self.student, prompt, continuation)

    def table(self) -> dict[str, Any]:
        """Parameters, size, latency, speed-up and quality retained, from the run's summary."""
        s = self.summary
        return {
            "parameters": (s.get("teacher_params") or count_params(self.teacher.model),
                           s.get("student_params") or count_params(self.student.model)),
            "size_mb": (s.get("teacher_size_mb"), s.get("student_size_mb")),
            "latency_ms": (s.get("teacher_latency_ms"), s.get("student_latency_ms")),
            "latency": (summary_latency(s, "teacher"), summary_latency(s, "student")),
            "speedup": s.get("speedup"),
            "speedup_spread": s.get("speedup_spread"),
            "quality_retained": s.get("quality_retained"),
            "headline_metric": s.get("headline_metric"),
        }


class PinnedInputs:
    """The student's answers to evaluation.pinned_inputs at each evaluation (teacher's once)."""

    def __init__(self, cfg: RunConfig, teacher: Any, t_tok: Any, student: Any, s_tok: Any,
                 data: Any, device: torch.device, teacher_answers: list[str] | None = None):
        self.inputs = list(cfg.evaluation.pinned_inputs)
        if not self.inputs:
            return
        index = data.eval_texts[:300] if get_task(cfg.task).compare_index else None
        common = dict(device=device, label_names=data.label_names, index_texts=index,
                      max_length=cfg.data.max_length, measure_memory=False)
        self.gen = GenerationSettings(max_new_tokens=24)
        self.student = Predictor(student, s_tok, cfg.task, **common)
        if teacher_answers is not None:  # known already (a run that reads the teacher's cache)
            self.teacher_answers = list(teacher_answers)
            return
        t = Predictor(teacher, t_tok, cfg.task, **common)
        self.teacher_answers = [t.answer(x, self.gen).text for x in self.inputs]

    def __call__(self) -> list[dict[str, str]]:
        if not self.inputs:
            return []
        return pinned_answers(self.student, self.teacher_answers, self.inputs, self.gen)


def pinned_answers(student: Predictor, teacher_answers: list[str], inputs: list[str],
                   gen: GenerationSettings | None = None) -> list[dict[str, str]]:
    """The student's answers to the pinned inputs, beside the teacher's (computed once)."""
    if student.family.compare_index:
        student.refresh_index()
    return [{"input": text, "student": student.answer(text, gen).text, "teacher": t}
            for text, t in zip(inputs, teacher_answers)]
