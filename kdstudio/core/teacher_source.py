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
                 same_tokenizer: bool = True, pays: tuple[bool, str] | None = None) -> TeacherPlan:
    """Decide live or cache. exists: whether a complete cache for this run's key is on disk
    (None before the data is tokenized: the words then say "if one exists"); pays: what
    cache_pays says, which decides 'auto' once the models and k are known."""
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
    if pays is not None and exists is False:  # a cache on disk is read: its pass is paid
        return TeacherPlan(CACHE, pays[1], build=True, live_share=live_share) if pays[0] \
            else TeacherPlan(LIVE, f"no cache for this teacher, data and length yet, and {pays[1]}")
    if exists:
        return TeacherPlan(CACHE, f"a cache of the teacher's top-{k} answers for this teacher, "
                                  "data and length exists", live_share=live_share)
    if exists is None:
        return TeacherPlan(LIVE, "or a saved teacher cache, if one exists for this teacher, "
                                 "data and length, or one written first where the steps "
                                 "re-read the rows enough to pay for the pass (the run's log "
                                 "says which); teacher.cache = 'always' always writes one")
    return TeacherPlan(LIVE, "no cache for this teacher, data and length yet; teacher.cache = "
                             "'always' writes one that later runs, resumes and sweeps reuse")


# "auto" writes a cache only when, on paper, it saves at least this share of the run's time: the
# pass's own writing and the reading of k answers per position cost a little more than nothing.
AUTO_SAVING = 0.15


def cache_pays(*, readers: int, epochs: float, teacher_params: float, student_params: float,
               k: int, vocab: int, fits_beside: bool = True, exists: bool = False
               ) -> tuple[bool, str]:
    """teacher.cache = 'auto': whether the cache saves time or memory here, and why in words.

    readers: runs that will read it (a sweep's students); epochs: passes each makes over the
    training rows. A live step's teacher forward costs about 2 x its parameters per token, the
    student's step 6 x its own, so the teacher is teacher/(teacher + 3 x student) of the time;
    the cache saves that share on every pass but the one that writes it, and saves nothing
    when k is more than an eighth of the vocabulary (reading k answers per position then costs
    about what the full answers do)."""
    if not fits_beside:
        return True, ("the teacher does not fit beside the student: one pass writes its "
                      "answers, and the steps run without it")
    if k * 8 > vocab:
        return False, (f"top-{k} of a {vocab:,}-token vocabulary is nearly the whole answer: "
                       "reading it costs about what running the teacher does")
    share = teacher_params / max(teacher_params + 3 * student_params, 1.0)
    passes = max(readers, 1) * max(epochs, 0.0)
    saved = share if exists else share * max(passes - 1.0, 0.0) / max(passes, 1e-9)
    whose = (f"{readers} students x {epochs:.2g} epochs" if readers > 1
             else f"{epochs:.2g} epochs")
    if saved >= AUTO_SAVING:
        what = ("reading the saved answers" if exists else
                f"one teacher pass read back {passes:.2g} times ({whose})")
        return True, (f"teacher.cache is 'auto' and {what} saves about {100 * saved:.0f}% of "
                      f"the time (the teacher is {100 * share:.0f}% of a live step)")
    why = (f"the teacher is only {100 * share:.0f}% of a live step" if exists or passes >= 2 else
           f"the teacher would answer each training row {passes:.2g} times ({whose}), so a "
           "pass first would not save its own time")
    return False, f"with teacher.cache 'auto' writing one would not pay: {why}"


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
                vocab_size: int, *, batch_size: int, autocast: Any, emit: Any, stop: Any,
                extra: dict[str, Any] | None = None, what: str = "teacher cache",
                root: Path | None = None) -> Path:
    """One teacher pass over every training row; returns the published cache folder (in
    root, when given: a cache's evaluation part).

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
    writer = TeacherCacheWriter(parts, vocab_size, expected_rows=n, resume=True, root=root)
    writer.extra.update(extra or {})  # more keys for the manifest (the teacher's own figures)
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
            emit(Progress(what, n - len(todo) + len(idx) + start, n, "rows"))
    except StoppedError:
        raise
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


# -- runs without the teacher's weights ---------------------------------------------------------

EVAL_DATA = "evaluation rows of "  # the eval answers' key: its data part names them
# The eval answers are a part of the training cache, in this subfolder: one cache to list,
# count and delete (and no eval answers left behind by a deleted training cache).
EVAL_PART = "evaluation"


def find_eval_answers(cache: Any, parts: dict[str, Any]) -> Any:
    """The complete eval-answers part of a training cache for these key parts, or None."""
    from kdstudio.core.teacher_cache.keys import cache_key
    from kdstudio.core.teacher_cache.store import TeacherCache

    path = Path(cache.path) / EVAL_PART / cache_key(parts)
    return TeacherCache(path) if (path / "manifest.json").is_file() else None


def cache_only_blocker(cfg: Any, task: Any) -> str:
    """Why this run needs the teacher's weights beside its cached answers, or '' when the
    cache can stand in for the teacher in the steps and the measurements alike (its weights
    are then read at most once: for the pass that writes the cache, or to derive a student)."""
    plan = plan_teacher(cfg, exists=True)
    if plan.mode != CACHE:
        return plan.why if plan.mode == LIVE else "no loss term reads the teacher's answers"
    if plan.live_share:
        return plan.live_share
    if cfg.teacher.dtype == "int8":
        return "teacher.dtype 'int8' keeps the teacher's 8-bit weights loaded"
    if not task.caches_teacher:
        return f"a {task.name} teacher is measured live"
    return ""


def eval_parts(cfg: Any, teacher_source: str, teacher_tok: Any, rows: list, dtype: Any,
               k: int) -> dict[str, Any]:
    """The key of the teacher's answers at the evaluation positions (rows: the eval blocks)."""
    parts = key_parts(cfg, teacher_source, teacher_tok, rows, dtype, k)
    parts["data"] = EVAL_DATA + str(cfg.data.dataset)
    return parts


@dataclass
class Covered:
    """Teacher caches that cover a run: its training rows and the rows its figures need."""

    cache: Any                 # TeacherCache of the training rows
    answers: Any               # TeacherCache of the evaluation blocks
    figures: dict[str, Any]    # the teacher's own figures, from the pass that wrote them


def find_covering(cfg: Any, teacher_source: str, teacher_tok: Any, rows: list,
                  eval_rows: list, dtype: Any, vocab_size: int) -> Covered | None:
    """The complete caches of this teacher's answers for the training and evaluation rows
    (teacher.cache_k, or any k the choice by coverage can make), found without loading the
    teacher; None when either is missing."""
    from kdstudio.core.teacher_cache.store import find_cache

    ks = [min(int(cfg.teacher.cache_k), vocab_size)] if cfg.teacher.cache_k else \
        sorted({min(k, vocab_size) for k in K_LADDER})
    for k in ks:
        cache = find_cache(key_parts(cfg, teacher_source, teacher_tok, rows, dtype, k))
        if cache is None:
            continue
        answers = find_eval_answers(cache, eval_parts(cfg, teacher_source, teacher_tok,
                                                      eval_rows, dtype, k))
        figures = answers.manifest.get("teacher_figures") if answers is not None else None
        if figures:
            return Covered(cache, answers, dict(figures))
    return None


def covering_on_disk(cfg: Any) -> bool:
    """Whether a complete cache with its evaluation part (the teacher's figures) exists for
    this teacher, revision, data, length and k, judged from the caches' manifests without
    tokenizing the data: what the memory estimate needs to count the run as the student alone
    (the run itself checks the exact rows, covering_before_load)."""
    from kdstudio.core.teacher_cache.manage import list_caches
    from kdstudio.core.teacher_cache.store import read_manifest

    t = cfg.teacher
    want = {"teacher": t.name, "revision": t.revision, "data": cfg.data.dataset,
            "max_length": cfg.data.max_length, "pack": cfg.data.pack}
    for info in list_caches():
        try:
            manifest = read_manifest(info.path)
        except (OSError, ValueError):  # deleted or rewritten meanwhile
            continue
        parts = manifest.get("key_parts", {})
        if any(parts.get(key) != value for key, value in want.items()):
            continue
        vocab = int(manifest.get("vocab_size") or 0)
        if t.cache_k and info.k != min(int(t.cache_k), vocab or int(t.cache_k)):
            continue  # a set k larger than the vocabulary keeps all of it
        for part in sorted((info.path / EVAL_PART).glob("*/manifest.json")):
            try:
                if read_manifest(part.parent).get("teacher_figures"):
                    return True
            except (OSError, ValueError):
                continue
    return False


def covering_before_load(cfg: Any, task: Any, teacher_source: str, data: Any, dtype: Any
                         ) -> Covered | None:
    """find_covering from the teacher's tokenizer alone (its weights unread): the training and
    evaluation rows as the run will make them (the same tokenizer, which a cache needs)."""
    from kdstudio.core.models import load_tokenizer

    tok = load_tokenizer(teacher_source, trust_remote_code=cfg.teacher.trust_remote_code,
                         role="teacher")
    args = dict(student_tok=tok, teacher_tok=tok, same_tok=True, max_length=cfg.data.max_length,
                pack=cfg.data.pack, device="cpu")
    try:
        _, make = task.batch_maker(data.train_texts, data.train_labels, **args)
    except Exception:  # the run's own tokenizing says what is wrong, with the right words
        return None
    rows = getattr(make, "cache_rows", None)
    if rows is None:
        return None
    return find_covering(cfg, teacher_source, tok, rows, eval_rows(cfg, task, data, tok), dtype,
                         len(tok))


def eval_rows(cfg: Any, task: Any, data: Any, tok: Any) -> list:
    """The evaluation blocks' token ids, in the order the evaluator batches them."""
    from kdstudio.core.batch import causal_blocks

    texts = data.eval_texts[:cfg.evaluation.max_samples] if cfg.evaluation.max_samples \
        else data.eval_texts
    return causal_blocks(tok, texts, cfg.data.max_length, cfg.data.pack)


def write_eval_answers(cfg: Any, task: Any, evaluator: Any, teacher: Any, tmodel: Any,
                       cache: Any, pinned: dict[str, str], ctx: Any) -> Covered:
    """With the teacher still loaded after its pass: its answers at the evaluation positions
    (same k as the training cache) and its own figures (metrics, latency, parameters, the
    pinned inputs' answers), kept as the training cache's evaluation part (EVAL_PART); a
    later run reads them instead of loading the teacher. Returns both together."""
    from kdstudio.core.evaluation import latency_sample, time_forwards
    from kdstudio.core.events import Stage
    from kdstudio.core.models import count_params
    from kdstudio.core.teacher_cache.store import TeacherCache

    es, tok = evaluator.eval_set, teacher.tokenizer
    dtype = next(tmodel.parameters()).dtype
    rows = eval_rows(cfg, task, type("D", (), {"eval_texts": es.texts})(), tok)
    parts = eval_parts(cfg, teacher.source, tok, rows, dtype, cache.k)
    answers = find_eval_answers(cache, parts)
    if answers is None or not answers.manifest.get("teacher_figures"):
        # Its own stage: the training rows' pass ("teacher cache") is done and counted.
        ctx.emit(Stage("teacher figures", f"the teacher's answers and figures on {len(rows)} "
                                          "evaluation blocks, kept with its cache"))
        metrics = evaluator.teacher_metrics()
        session = time_forwards({"teacher": (tmodel, latency_sample(es, tok))}, es.task,
                                device=evaluator.device, repeats=max(1, cfg.evaluation.latency_repeats),
                                autocast=evaluator.autocast)
        figures = {"metrics": metrics, "params": count_params(tmodel),
                   "latency_ms": round(session.latency("teacher").median_ms, 3),
                   "latency_device": session.device, "pinned": dict(pinned)}
        _, make = task.batch_maker(es.texts, None, student_tok=tok, teacher_tok=tok,
                                   same_tok=True, max_length=es.max_length, pack=es.pack,
                                   device=evaluator.device)
        path = write_cache(parts, rows, make, tmodel, task, cache.vocab_size,
                           batch_size=max(1, es.batch_size), autocast=ctx.autocast,
                           emit=ctx.emit, stop=ctx.stop, extra={"teacher_figures": figures},
                           what="teacher figures", root=Path(cache.path) / EVAL_PART)
        answers = TeacherCache(path)
    return Covered(cache, answers, dict(answers.manifest["teacher_figures"]))


K_LADDER = (64, 128, 256, 512, 1024)
K_COVERAGE = 0.9
# The default k's size limit: one stored position takes at most this many bytes. One number
# keeps both density goals (<= 300 B; <= 200 B at 152k tokens): k = 128 at the LM demo's 2,048
# tokens (166 B) and k = 64 at a 151,936-token vocabulary (176 B), where each id costs more bits
# (README, the cache's format).
K_BYTES = 250


def k_within_budget(vocab_size: int) -> int:
    """The largest k of K_LADDER whose record fits K_BYTES at this vocabulary (at least the
    smallest rung; at most the vocabulary)."""
    from kdstudio.core.teacher_cache.records import record_bytes

    fits = [k for k in K_LADDER if k <= vocab_size and record_bytes(vocab_size, k) <= K_BYTES]
    return max(fits) if fits else min(K_LADDER[0], vocab_size)


def choose_k(teacher: Any, task: Any, make_batch: Any, n_rows: int, vocab_size: int,
             temperature: float, *, batch_size: int, autocast: Any,
             positions: int = 512) -> tuple[int, float]:
    """teacher.cache_k = 0: the smallest k of K_LADDER whose top-k holds K_COVERAGE of the
    teacher's probability at the run's temperature, averaged over up to ``positions``
    positions of the first batch, but no larger than k_within_budget (a flat teacher would
    otherwise take k = 1024: 902 bytes per position at 2,048 tokens). Returns (k, the share
    of probability it keeps there)."""
    import torch

    batch = make_batch(list(range(min(n_rows, max(1, batch_size)))))
    keep = _next_token_mask(batch.student["labels"])
    with torch.no_grad(), autocast():
        feats = task.forward_features(teacher, batch.teacher, head_only=True)
        logits = _logits_at(feats, keep.nonzero()[:positions], vocab_size)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    cap = k_within_budget(vocab_size)
    top = probs.topk(min(cap, vocab_size), dim=-1).values.cumsum(-1).mean(0)
    for k in K_LADDER:
        if k >= vocab_size:
            return vocab_size, 1.0
        if k >= cap or float(top[k - 1]) >= K_COVERAGE:
            k = min(k, cap)
            return k, float(top[k - 1])
    return cap, float(top[cap - 1])


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


__all__ = ["CACHE", "LIVE", "NONE", "Covered", "TeacherPlan", "cache_only_blocker",
           "cache_summary", "eval_parts", "find_covering", "key_parts", "plan_teacher",
           "write_cache"]
