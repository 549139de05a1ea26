"""Where a run's loss gets the teacher's answers: the teacher cache or the live teacher, and the
pass that writes the cache.

``plan_teacher`` decides from the config alone (the Train page, ``kdstudio config --check``
and the run's log all show its words); once the data is tokenized and the teacher loaded,
the run's setup (setup._teacher_targets) decides again knowing whether the cache exists,
picks k (``choose_k``) and finds the cache or writes it (``write_cache``). A run records what it used in its
summary (``teacher_targets``), so a resumed run keeps reading the same answers even if a
cache appeared or vanished meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIVE, CACHE, NONE = "live", "cache", "none"


@dataclass
class TeacherPlan:
    """How the loss gets the teacher's answers, and why, in words for people."""

    mode: str            # "live", "cache" or "none" (no term needs the teacher)
    why: str
    build: bool = False  # write the cache when it is missing
    live_share: str = ""  # batches that stay live inside a cached run (on-policy)

    @property
    def line(self) -> str:
        head = {LIVE: "Teacher: live", CACHE: "Teacher: cache", NONE: "Teacher: not used"}[self.mode]
        return f"{head} ({self.why})" + (f"; {self.live_share}" if self.live_share else "")


def _blocker(cfg: Any, task: Any) -> str:
    """Why the cache cannot stand in for the teacher in this run, or ''."""
    from kdstudio.core.objective import active_terms

    m = cfg.method
    if not task.caches_teacher:
        return (f"the cache holds language models' next-token answers; a {task.name} "
                "teacher's answers are small, so it runs live")
    for term in active_terms(task, m):
        inside = sorted(f.replace("_", " ") for f in term.needs.features)
        if term.needs.teacher_inside:
            return (f"{term.label} (method.{term.weight_key}) reads the teacher's "
                    f"{' and '.join(inside)}, which the cache does not hold")
        if term.needs.aligns_tokens:
            return (f"{term.label} (method.{term.weight_key}) aligns the teacher's own tokens "
                    "by text, which needs the live teacher")
    if m.sequence_level:
        return "sequence-level distillation trains on texts the live teacher writes"
    if m.on_policy_share >= 1:
        return ("every batch is on-policy: the teacher scores the student's own samples, "
                "which no cache can hold")
    return ""


def plan_teacher(cfg: Any, *, exists: bool | None = None,
                 same_tokenizer: bool = True) -> TeacherPlan:
    """Decide live or cache. exists: whether a complete cache for this run's key is on disk
    (None before the data is tokenized: the words then say "if one exists")."""
    from kdstudio.core.objective import active_terms
    from kdstudio.core.tasks import get_task

    task = get_task(cfg.task)
    if not any(t.needs.teacher for t in active_terms(task, cfg.method)) \
            and cfg.method.on_policy_share <= 0:
        return TeacherPlan(NONE, "no loss term reads the teacher; it is loaded for the "
                                 "measurements only")
    blocker = _blocker(cfg, task) or ("" if same_tokenizer else
                                      "the tokenizers differ, so the teacher's answers are "
                                      "aligned by text at each step")
    mode = cfg.teacher.cache
    if blocker:
        why = blocker if mode != "always" else f"teacher.cache is 'always', but {blocker}"
        return TeacherPlan(LIVE, why)
    if mode == "never":
        return TeacherPlan(LIVE, "teacher.cache is 'never'")
    k = cfg.teacher.cache_k or "k"
    share = cfg.method.on_policy_share
    live_share = (f"the on-policy share ({share:g} of the batches) stays live: the teacher "
                  "has to score the student's own samples") if share > 0 else ""
    served = getattr(cfg.teacher, "endpoint", "")
    if served and not exists:
        return TeacherPlan(CACHE, f"the teacher served at {served} writes its top-{k} answers "
                                  "to disk once, which this and later runs read",
                           build=True, live_share=live_share)
    if mode == "always":
        because = "teacher.cache is 'always'"
        if exists:
            return TeacherPlan(CACHE, f"reads the teacher's top-{k} answers saved on disk; "
                                      f"{because}", live_share=live_share)
        if exists is None:
            return TeacherPlan(CACHE, f"reads the teacher's top-{k} answers from disk, written "
                                      f"by one teacher pass first if missing; {because}",
                               build=True, live_share=live_share)
        return TeacherPlan(CACHE, f"one teacher pass first writes its top-{k} answers, which "
                                  f"this and later runs read; {because}", build=True,
                           live_share=live_share)
    if exists:
        return TeacherPlan(CACHE, f"a cache of the teacher's top-{k} answers for this teacher, "
                                  "data and length exists", live_share=live_share)
    if exists is None:
        return TeacherPlan(LIVE, "or a saved teacher cache, if one exists for this teacher, "
                                 "data and length; teacher.cache = 'always' writes one for "
                                 "later runs and sweeps")
    return TeacherPlan(LIVE, "no cache for this teacher, data and length yet; teacher.cache = "
                             "'always' writes one that later runs, resumes and sweeps reuse")


def key_parts(cfg: Any, teacher_source: str, teacher_tok: Any, rows: list, dtype: Any,
              k: int) -> dict[str, Any]:
    """Everything that changes the teacher's answers (see keys.cache_key)."""
    from kdstudio.core.teacher_cache.keys import tokenizer_fingerprint, weights_fingerprint

    folder = Path(teacher_source)
    return {"teacher": cfg.teacher.name, "revision": cfg.teacher.revision,
            "weights": weights_fingerprint(folder) if folder.is_dir() else teacher_source,
            "tokenizer": tokenizer_fingerprint(teacher_tok),
            # The rows' exact token ids (below) already pin the data; the source is for people.
            "data": cfg.data.dataset,
            "token_ids": rows, "max_length": cfg.data.max_length, "pack": cfg.data.pack,
            "k": int(k), "dtype": str(dtype)}


def _next_token_mask(labels: Any) -> Any:
    """(B, L) bool: the positions whose next token is a label (the logit losses' positions)."""
    import torch

    mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask


def _logits_at(feats: dict, pos: Any, vocab_size: int) -> Any:
    """The teacher's logits (n, vocab_size) at positions pos (n, 2) of (row, position): its
    last hidden state through its head (features made with head_only), or rows of the
    logits when the head is more than a linear map."""
    import torch

    rows, cols = pos[:, 0], pos[:, 1]
    if feats.get("last_hidden") is None:
        return feats["logits"][rows, cols, :vocab_size]
    head = feats["head"]
    bias = head.bias[:vocab_size] if head.bias is not None else None
    with torch.no_grad():
        return torch.nn.functional.linear(feats["last_hidden"][rows, cols],
                                          head.weight[:vocab_size], bias)


def write_cache(parts: dict[str, Any], rows: list, make_batch: Any, teacher: Any, task: Any,
                vocab_size: int, *, batch_size: int, autocast: Any, emit: Any, stop: Any) -> Path:
    """One teacher pass over every training row; returns the published cache folder.

    Each batch's logits are made over chunks of positions straight into top-k (no
    (positions x vocabulary) tensor for the batch), then encoded. A stop keeps the rows
    written so far, unpublished (the writer's keep()); the next pass for the same key
    continues from them, and the finished cache is the same as one uninterrupted pass's.
    """
    import torch

    from kdstudio.core.chunk_size import auto_chunk_size
    from kdstudio.core.errors import StoppedError
    from kdstudio.core.events import Log, Progress
    from kdstudio.core.teacher_cache.records import topk_targets
    from kdstudio.core.teacher_cache.store import TeacherCacheWriter

    k = int(parts["k"])
    n = len(rows)
    writer = TeacherCacheWriter(parts, vocab_size, expected_rows=n, resume=True)
    todo = [i for i in range(n) if not writer.has(i)]
    if writer.resumed_rows:
        emit(Log(f"Teacher cache: continuing a stopped pass; {n - len(todo):,} of {n:,} rows "
                 "were already written."))
    try:
        for start in range(0, len(todo), batch_size):
            if stop is not None and stop.is_set():
                kept = writer.keep()
                raise StoppedError(
                    f"Stopped while the teacher cache was being written; the {kept:,} of {n:,} "
                    "rows written so far are kept, and the next run that needs this cache "
                    "continues from them.")
            idx = todo[start:start + batch_size]
            batch = make_batch(idx)
            labels = batch.student["labels"]
            b, length = labels.shape
            mask = _next_token_mask(labels)
            with torch.no_grad(), autocast():
                feats = task.forward_features(teacher, batch.teacher, head_only=True)
            ids = torch.zeros((b, length, k), dtype=torch.long, device=labels.device)
            lps = torch.zeros((b, length, k), dtype=torch.float32, device=labels.device)
            tail = torch.zeros((b, length), dtype=torch.float32, device=labels.device)
            half = torch.zeros((b, length), dtype=torch.float32, device=labels.device)
            hidden = feats.get("last_hidden")
            width = hidden.shape[-1] if hidden is not None else 0
            step = auto_chunk_size(vocab_size, width, device=labels.device)
            where = mask.nonzero()
            for i in range(0, where.shape[0], step):
                pos = where[i:i + step]
                t_ids, t_lp, t_tail, t_half = topk_targets(_logits_at(feats, pos, vocab_size), k)
                ids[pos[:, 0], pos[:, 1]] = t_ids
                lps[pos[:, 0], pos[:, 1]] = t_lp
                tail[pos[:, 0], pos[:, 1]] = t_tail
                half[pos[:, 0], pos[:, 1]] = t_half
            writer.add(idx, mask, top_ids=ids, top_logprobs=lps, tail_logmass=tail,
                       tail_log_half=half)
            emit(Progress("teacher cache", n - len(todo) + len(idx) + start, n, "rows"))
    except StoppedError:
        raise
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


K_LADDER = (64, 128, 256, 512, 1024)
K_COVERAGE = 0.9


def choose_k(teacher: Any, task: Any, make_batch: Any, n_rows: int, vocab_size: int,
             temperature: float, *, batch_size: int, autocast: Any,
             positions: int = 512) -> tuple[int, float]:
    """teacher.cache_k = 0: the smallest k of K_LADDER whose top-k holds K_COVERAGE of the
    teacher's probability at the run's temperature, averaged over up to ``positions``
    positions of the first batch (the largest, 1024, when none does; at most the
    vocabulary). Returns (k, the share of probability it keeps there)."""
    import torch

    batch = make_batch(list(range(min(n_rows, max(1, batch_size)))))
    keep = _next_token_mask(batch.student["labels"])
    with torch.no_grad(), autocast():
        feats = task.forward_features(teacher, batch.teacher, head_only=True)
        logits = _logits_at(feats, keep.nonzero()[:positions], vocab_size)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    top = probs.topk(min(K_LADDER[-1], vocab_size), dim=-1).values.cumsum(-1).mean(0)
    for k in K_LADDER:
        if k >= vocab_size:
            return vocab_size, 1.0
        if float(top[k - 1]) >= K_COVERAGE:
            return k, float(top[k - 1])
    k = min(K_LADDER[-1], vocab_size)
    return k, float(top[k - 1])


def size_text(n: float) -> str:
    """Bytes on disk in words: "812 B", "4.0 MB", "1.4 GB" (decimal units, as file
    managers show them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def cache_summary(cache: Any) -> str:
    """"12,345 positions, 2.1 MB (178 bytes per position), key 1a2b3c4d5e6f"."""
    m = cache.manifest
    return (f"{m['tokens']:,} positions, {m['bytes'] / 1e6:.1f} MB ({m['bytes_per_token']:.0f} "
            f"bytes per position), key {cache.key[:12]}")


__all__ = ["CACHE", "LIVE", "NONE", "TeacherPlan", "cache_summary", "key_parts",
           "plan_teacher", "write_cache"]
