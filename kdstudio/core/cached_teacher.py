"""A run without the teacher's weights: the teacher as an outline (its config and tokenizer,
its modules on torch's meta device, so shapes and parameter counts are known and no weight
is read), and the student measured against the teacher's cached answers at the evaluation
positions instead of the live teacher.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from kdstudio.core.models import LoadedModel, load_tokenizer


def teacher_outline(source: str, task: Any, *, trust_remote_code: bool = False,
                    role: str = "teacher") -> LoadedModel:
    """The teacher's tokenizer and its model built from config.json on the meta device: what
    the run needs to know of a teacher whose answers are all cached, without its weights."""
    import transformers

    from kdstudio.core.models import quiet_transformers

    quiet_transformers()
    tok = load_tokenizer(source, trust_remote_code=trust_remote_code, role=role)
    config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = getattr(transformers, task.auto_class).from_config(
            config, trust_remote_code=trust_remote_code)
        if len(tok) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tok))
    if getattr(model.config, "pad_token_id", None) is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tok, source=source, new_head=False)


def is_outline(model: Any) -> bool:
    """True for a teacher_outline's model: it has shapes but no weights."""
    p = next(iter(model.parameters()), None) if model is not None else None
    return p is not None and p.device.type == "meta"


class CachedAnswers:
    """The teacher's cached answers at the evaluation positions (a TeacherCache written over
    the eval blocks, row i = block i), read batch by batch where the evaluator would run the
    teacher."""

    def __init__(self, cache: Any, batches: list[dict], batch_size: int):
        self.cache = cache
        # Evaluation batches are consecutive blocks: batch j holds rows j*bs .. j*bs+n-1.
        self.rows = {id(b): list(range(j * batch_size, j * batch_size + b["input_ids"].shape[0]))
                     for j, b in enumerate(batches)}

    def stats(self, ev: Any, model: Any, batch: dict) -> Any:
        """Per-position NLL of the student, top-1 agreement with the teacher's largest cached
        answer and KL(teacher || student) over the teacher's top k plus one bucket for the rest
        (a lower bound of the full KL; equal to it when k is the vocabulary), at the kept
        next-token positions (and which row of the batch each is in)."""
        with torch.no_grad():
            return self._stats(ev, model, batch)

    def _stats(self, ev: Any, model: Any, batch: dict) -> Any:
        from kdstudio.core.tasks.base import plain_head

        b = {k: t.to(ev.device) for k, t in batch.items()}
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        keep = b["labels"][:, 1:] != -100
        labels = b["labels"][:, 1:][keep]
        length = b["input_ids"].shape[1]
        t = self.cache.get(self.rows[id(batch)], ev.device, seq_len=length)
        sel = t.mask[:, :-1]
        if not torch.equal(sel, keep):
            raise ValueError("the cached teacher answers do not match the evaluation positions; "
                             "delete the teacher cache to rebuild it")
        ids, lps, tail = t.top_ids[:, :-1][keep], t.top_logprobs[:, :-1][keep], \
            t.tail_logmass[:, :-1][keep]
        v = ev.vocab_size or None
        head = plain_head(model)
        with ev.autocast():
            if head is not None:
                hidden = model.base_model(**inputs).last_hidden_state[:, :-1][keep]
            else:
                logits = model(**inputs).logits[:, :-1][keep]
        n = labels.shape[0]
        # Rows of logits a chunk at a time: a batch's (positions x vocabulary) never exists.
        width = head.weight.shape[0] if head is not None else logits.shape[-1]
        step = max(1, (1 << 24) // max(1, width))
        nll, agree, kl, entropy = [], [], [], []
        for i in range(0, n, step):
            z = (F.linear(hidden[i:i + step], head.weight, head.bias) if head is not None
                 else logits[i:i + step])
            z = z[:, :v].float()
            nll.append(F.cross_entropy(z, labels[i:i + step], reduction="none"))
            logp = F.log_softmax(z, -1)
            entropy.append(-torch.where(logp.exp() > 0, logp.exp() * logp, 0.0).sum(-1))
            top1 = ids[i:i + step].gather(-1, lps[i:i + step].argmax(-1, keepdim=True))[:, 0]
            agree.append(z.argmax(-1) == top1)
            kl.append(_bucket_kl(z, ids[i:i + step], lps[i:i + step], tail[i:i + step]))
        empty = torch.zeros(0, device=ev.device)
        cat = (lambda xs: torch.cat(xs) if xs else empty)
        return SimpleNamespace(student_nll=cat(nll), agree=cat(agree), kl=cat(kl),
                               student_entropy=cat(entropy), count=n,
                               row_of=keep.nonzero()[:, 0], n_rows=keep.shape[0])


def cached_perf(evaluator: Any, student: Any, student_tok: Any, teacher_source: str,
                student_dir: Any, repeats: int, figures: dict[str, Any]) -> dict[str, Any]:
    """artifacts.measure's figures for a run without the teacher: the student timed here, the
    teacher's latency as its pass measured it (so the speed-up compares two timings, not one
    taken in turns), sizes on disk."""
    from pathlib import Path

    from kdstudio.core.evaluation import latency_sample, time_forwards, weights_size_bytes

    es = evaluator.eval_set
    session = time_forwards({"student": (student, latency_sample(es, student_tok))}, es.task,
                            device=evaluator.device, repeats=max(1, repeats),
                            autocast=evaluator.autocast)
    s_ms = session.latency("student").median_ms
    t_ms = figures.get("latency_ms")
    t_size = weights_size_bytes(teacher_source) if Path(str(teacher_source)).is_dir() else 0
    s_size = weights_size_bytes(student_dir)
    return {"teacher_size_mb": round(t_size / 2**20, 3) if t_size else None,
            "student_size_mb": round(s_size / 2**20, 3),
            "teacher_latency_ms": t_ms, "student_latency_ms": round(s_ms, 3),
            "speedup": round(t_ms / s_ms, 3) if t_ms and s_ms > 0 else None,
            "size_ratio": round(s_size / t_size, 4) if t_size else None,
            "teacher_figures_from": "the pass that wrote the teacher cache"}


def _bucket_kl(z: torch.Tensor, ids: torch.Tensor, lps: torch.Tensor, tail: torch.Tensor
               ) -> torch.Tensor:
    """KL(teacher || student) over k + 1 buckets (the teacher's top-k ids and the rest), at
    temperature 1: z (N, V) student logits, ids/lps (N, k), tail (N,) -> (N,). The teacher's
    buckets are renormalised, which absorbs the cache's quantization, as the sparse loss
    does."""
    lse = torch.logsumexp(z, -1, keepdim=True)
    s_top = z.gather(-1, ids) - lse
    s_tail = torch.logsumexp(z.scatter(-1, ids, float("-inf")), -1, keepdim=True) - lse
    t = torch.log_softmax(torch.cat([lps, tail[:, None]], -1), -1)
    s = torch.cat([s_top, s_tail], -1)
    p = t.exp()
    return torch.where(p > 0, p * (t - s), torch.zeros_like(p)).sum(-1)


__all__ = ["CachedAnswers", "is_outline", "teacher_outline"]
