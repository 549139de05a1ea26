"""Teacher and student side by side on the user's own input.

For causal-lm both generate from the same prompt and seed (with latency, tokens/s and peak
memory), and ``token_probabilities`` shows, token by token, how likely each model finds a
text and where they disagree most; for classification both give class probabilities; for
sentence embeddings both find their nearest neighbours among the eval sentences, with cosines.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kdstudio.core.config import RunConfig, load_config
from kdstudio.core.errors import CompatibilityError, KDStudioError, RunError
from kdstudio.core.losses import mean_pool
from kdstudio.core.models import (
    count_params,
    load_model,
    resolve_model_source,
    same_tokenizer,
)


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
    # What peak_memory_mb measures: "gpu" (the peak of PyTorch's CUDA allocations while it
    # answered: every loaded model's weights plus its working memory) or "process" (the
    # whole process's peak resident memory, RSS, while it answered); "" when not measured.
    memory_scope: str = ""
    probabilities: list[tuple[str, float]] = field(default_factory=list)  # classification, best first
    neighbours: list[tuple[str, float]] = field(default_factory=list)     # embeddings, closest first


class Predictor:
    """One model ready to answer inputs for its task."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, task: str, *,
                 device: torch.device, label_names: list[str] | None = None,
                 index_texts: list[str] | None = None, max_length: int = 128,
                 measure_memory: bool = True):
        self.model, self.tok, self.task, self.device = model, tokenizer, task, device
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
        if self.device.type == "cuda" and self.measure_memory:
            torch.cuda.reset_peak_memory_stats(self.device)
        rss_peak = self.measure_memory and self.device.type == "cpu" and reset_peak_rss()
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
        if self.device.type == "cuda" and self.measure_memory:
            answer.peak_memory_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            answer.memory_scope = "gpu"
        elif rss_peak and (peak := peak_rss_mb()) is not None:
            answer.peak_memory_mb, answer.memory_scope = peak, "process"
        return answer


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


class Comparer:
    """Teacher and student of a run, loaded once, answering the same inputs."""

    def __init__(self, task: str, teacher: Predictor, student: Predictor, summary: dict[str, Any]):
        self.task, self.teacher, self.student, self.summary = task, teacher, student, summary

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto", index_size: int = 300) -> Comparer:
        from kdstudio.core.data import load_text_data
        from kdstudio.core.runs import Run
        from kdstudio.core.trainer import resolve_device

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
        make = lambda m: Predictor(m.model.to(dev), m.tokenizer, cfg.task, device=dev,
                                   label_names=labels, index_texts=index,
                                   max_length=cfg.data.max_length)
        return cls(cfg.task, make(teacher), make(student), s)

    def compare(self, text: str, gen: GenerationSettings | None = None) -> Comparison:
        if not text.strip():
            raise KDStudioError("The input is empty.", hint="Type a sentence or a prompt first.")
        return Comparison(self.teacher.answer(text, gen), self.student.answer(text, gen))

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
                      max_length=cfg.data.max_length, measure_memory=False)
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


# -- token by token --------------------------------------------------------------------------------

@dataclass
class TokenRecord:
    """One token of a text: how likely each model found it, and how far apart they are."""

    text: str                       # the token's piece of the text (the pieces join to the text)
    token_id: int
    in_prompt: bool                 # False for tokens of the continuation
    p_teacher: float | None         # P(this token | the text before it); None for a first token
    p_student: float | None         # with no context (a tokenizer without a start token)
    kl: float = 0.0                 # KL(teacher || student) of the two next-token distributions
    log_ratio: float = 0.0          # log p_teacher - log p_student of this token
    teacher_top: tuple[str, float] = ("", 0.0)  # each model's most likely token here
    student_top: tuple[str, float] = ("", 0.0)


@dataclass
class TokenView:
    """Per-token probabilities of one text; ``top`` indexes the largest disagreements."""

    tokens: list[TokenRecord]
    top: list[int]
    mean_kl: float
    truncated: bool = False         # the text was cut to the models' context length

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)


def _context_limit(*models: Any, cap: int) -> int:
    limit = cap
    for m in models:
        cfg = getattr(m, "config", None)
        for key in ("n_positions", "max_position_embeddings"):
            n = getattr(cfg, key, None)
            if isinstance(n, int) and n > 0:
                limit = min(limit, n)
                break
    return max(2, limit)


def _pieces(tok: Any, ids: list[int]) -> list[str]:
    """Each token's piece of the decoded text, so the pieces join exactly to the whole.

    A character split over several byte-level tokens goes to the token that completes it
    (the others get "").
    """
    pieces, prev = [], ""
    for i in range(len(ids)):
        cur = tok.decode(ids[: i + 1], clean_up_tokenization_spaces=False)
        if cur.startswith(prev) and not cur.endswith("\ufffd"):
            pieces.append(cur[len(prev):])
            prev = cur
        else:
            pieces.append("")
    whole = tok.decode(ids, clean_up_tokenization_spaces=False)
    if prev != whole and whole.startswith(prev):  # trailing partial bytes: keep what decodes
        pieces[-1] += whole[len(prev):]
    return pieces


@torch.no_grad()
def token_probabilities(teacher: Predictor, student: Predictor, prompt: str,
                        continuation: str = "", *, top_k: int = 5, max_tokens: int = 256) -> TokenView:
    """For each token of prompt + continuation, the probability the teacher and the student
    give it (given the tokens before it), the KL divergence between their full next-token
    distributions there (in nats: 0 = they agree exactly), and the ``top_k`` positions where
    that divergence is largest.

    Both must share a tokenizer: the same ids must mean the same text for the two
    distributions to be compared entry by entry.
    """
    for p in (teacher, student):
        if p.task != "causal-lm":
            raise KDStudioError(f"The per-token view is for text generation (causal-lm), not "
                                f"'{p.task}'.", hint="Open a causal-lm run.")
    if not same_tokenizer(teacher.tok, student.tok):
        raise CompatibilityError(
            f"The teacher and the student use different tokenizers ({len(teacher.tok):,} and "
            f"{len(student.tok):,} tokens), so the same text is split into different tokens and "
            "their probabilities cannot be lined up token by token.",
            hint="The per-token view needs a student that shares the teacher's tokenizer (for "
                 "example one derived from the teacher). The side-by-side continuations, speed "
                 "and memory still compare.")
    text = prompt + continuation
    if not text.strip():
        raise KDStudioError("The input is empty.", hint="Type a prompt first.")
    tok = teacher.tok
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    lead = [start] if start is not None else []
    limit = _context_limit(teacher.model, student.model, cap=max_tokens) - len(lead)
    truncated = len(ids) > limit
    ids = ids[:limit]
    context = torch.tensor([lead + ids], device=teacher.device)

    def log_probs(p: Predictor) -> torch.Tensor:
        was_training = p.model.training
        p.model.eval()
        try:
            return p.model(input_ids=context.to(p.device)).logits[0].float().cpu()
        finally:
            p.model.train(was_training)

    lt, ls = log_probs(teacher), log_probs(student)
    # Rows beyond the tokenizer (a vocabulary padded for speed) are never real tokens.
    v = min(len(tok), lt.shape[-1], ls.shape[-1])
    lt, ls = lt[:, :v].log_softmax(-1), ls[:, :v].log_softmax(-1)
    pieces = _pieces(tok, ids)
    # Row j predicts the token after it: with a start token, row j predicts ids[j].
    shift = 0 if lead else -1
    kl_all = (lt.exp() * (lt - ls)).sum(-1).clamp_min(0.0)
    t_best, s_best = lt.max(-1), ls.max(-1)
    records, used = [], 0
    for i, (tid, piece) in enumerate(zip(ids, pieces)):
        in_prompt = used < len(prompt)
        used += len(piece)
        row = i + shift
        if row < 0 or tid >= v:  # no context to predict it from, or no logit for it
            records.append(TokenRecord(piece, tid, in_prompt, None, None))
            continue
        pt, ps = float(lt[row, tid]), float(ls[row, tid])
        records.append(TokenRecord(
            piece, tid, in_prompt, p_teacher=math.exp(pt), p_student=math.exp(ps),
            kl=float(kl_all[row]), log_ratio=pt - ps,
            teacher_top=(tok.decode([int(t_best.indices[row])]), float(t_best.values[row].exp())),
            student_top=(tok.decode([int(s_best.indices[row])]), float(s_best.values[row].exp()))))
    scored = [i for i, r in enumerate(records) if r.p_teacher is not None]
    # Identical models differ only by rounding: below 1e-6 nats there is no disagreement.
    top = sorted((i for i in scored if records[i].kl > 1e-6), key=lambda i: -records[i].kl)[:top_k]
    mean = sum(records[i].kl for i in scored) / len(scored) if scored else 0.0
    return TokenView(records, top, mean, truncated)
