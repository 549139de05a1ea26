"""A served teacher: its top-k next-token log-probabilities (serve_client.py asks a vLLM or
SGLang server for them) written into the teacher cache as a local teacher pass writes them,
with concurrent requests, progress, Stop, and a stopped pass continued.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from kdstudio.core.errors import ServeError, StoppedError
from kdstudio.core.events import Log, Progress
from kdstudio.core.serve_client import (  # noqa: F401  (re-exported: the app and tests name them here)
    API_KEY_ENV,
    SERVED_DEFAULT_K,
    RowAnswer,
    ServerInfo,
    TeacherServer,
    normalize_endpoint,
    served_key_parts,
)


# ---------------------------------------------------------------------- the pass


def cost_line(k: int, kept: float) -> str:
    """What a small k costs, in words for the log."""
    return (f"Teacher cache: the served teacher's top {k} hold {100 * kept:.0f}% of its "
            "probability on the first row (at temperature 1); the rest is kept as one remaining "
            "mass, which the loss cannot tell apart"
            + (". A flat teacher loses most here: on the LM demo's teacher (its top 64 hold 29% "
               "at temperature 2), top-64 answers cost +0.9% perplexity and top-128 +0.55% "
               "against its full answers (README, the teacher-logit cache); serve with a larger "
               "--max-logprobs and raise teacher.cache_k to keep more."
               if kept < 0.9 else "."))


def write_served_cache(parts: dict[str, Any], n_rows: int, make_batch: Any, server: TeacherServer,
                       vocab_size: int, *, batch_size: int, emit: Any, stop: Any,
                       concurrency: int = 8, root: Path | None = None, on_row: Any = None,
                       figures: Any = None, what: str = "teacher cache") -> Path:
    """One pass of requests to the served teacher over every training row; returns the
    published cache folder (the same format a local pass writes).

    Up to ``concurrency`` rows are in flight at once. A stop, or a request that still fails
    after its retries, keeps the rows written so far, unpublished, and the next run that
    needs this cache continues from them (TeacherCacheWriter.keep).

    For the evaluation part (root): on_row(mask, answer) sees every row's answer (the pass
    then starts afresh: it must see them all), and figures() gives the manifest's
    teacher_figures made of them."""
    import torch

    from kdstudio.core.teacher_cache.store import TeacherCacheWriter

    k = int(parts["k"])
    writer = TeacherCacheWriter(parts, vocab_size, expected_rows=n_rows, resume=on_row is None,
                                root=root)
    todo = [i for i in range(n_rows) if not writer.has(i)]
    if writer.resumed_rows:
        emit(Log(f"Teacher cache: continuing a stopped pass; {n_rows - len(todo):,} of "
                 f"{n_rows:,} rows were already written."))
    chunk = max(1, batch_size, 2 * concurrency)
    padded = 0
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="kd-serve")

    def keep_and(exc: BaseException, why: str) -> BaseException:
        kept = writer.keep()
        text = (f"{why}; the {kept:,} of {n_rows:,} rows written so far are kept, and the next "
                "run that needs this cache continues from them.")
        if isinstance(exc, StoppedError):
            return StoppedError(text)
        return ServeError(f"{exc.message if isinstance(exc, ServeError) else exc} {text}",
                          hint=getattr(exc, "hint", None))

    try:
        for start in range(0, len(todo), chunk):
            idx = todo[start:start + chunk]
            batch = make_batch(idx)
            ids_t = batch.student["input_ids"].cpu()
            att = batch.student["attention_mask"].cpu().bool()
            labels = batch.student["labels"].cpu()
            b, length = labels.shape
            mask = torch.zeros((b, length), dtype=torch.bool)
            mask[:, :-1] = labels[:, 1:] != -100
            futures: dict[Future, int] = {}
            for r in range(b):
                real = int(att[r].sum())
                if not bool(att[r, :real].all()):
                    raise ServeError("A training row is padded on the left; the served pass "
                                     "expects rows padded on the right.")
                futures[pool.submit(server.row_answer, ids_t[r, :real].tolist(), k)] = r
            answers: dict[int, RowAnswer] = {}
            pending = set(futures)
            while pending:
                if stop is not None and stop.is_set():
                    for f in pending:
                        f.cancel()
                    raise StoppedError("Stopped while the served teacher's answers were being "
                                       "written")
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for f in done:
                    answers[futures[f]] = f.result()  # a failed request raises here
            top_ids = torch.zeros((b, length, k), dtype=torch.long)
            top_lp = torch.full((b, length, k), -math.inf, dtype=torch.float32)
            for r, ans in answers.items():
                n = ans.top_ids.shape[0]
                ids_r = torch.from_numpy(ans.top_ids)
                lp_r = torch.from_numpy(ans.top_logprobs)
                # Ids past the tokenizer's vocabulary (a padded head) count as tail, as the
                # local pass reads logits only up to vocab_size; missing entries are filled
                # with unused ids at probability 0 (stored as the format's lowest step).
                bad = (ids_r < 0) | (ids_r >= vocab_size)
                if bool(bad.any()):
                    padded += int(bad.any(-1).sum())
                    ids_r, lp_r = _fill_missing(ids_r, lp_r, bad, vocab_size)
                top_ids[r, :n], top_lp[r, :n] = ids_r, lp_r
                if on_row is not None:
                    on_row(mask[r, :n], ans)
            writer.add(idx, mask, top_ids=top_ids, top_logprobs=top_lp)
            emit(Progress(what, n_rows - len(todo) + start + len(idx), n_rows, "rows"))
    except StoppedError as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        raise keep_and(exc, "Stopped while the served teacher's answers were being written") \
            from None
    except ServeError as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        raise keep_and(exc, "The served teacher's pass failed") from None
    except BaseException:
        # Whatever went wrong, the rows written are the teacher's answers: keep them too.
        pool.shutdown(wait=False, cancel_futures=True)
        writer.keep()
        raise
    pool.shutdown(wait=True)
    if figures is not None:
        try:
            writer.extra["teacher_figures"] = figures()
        except BaseException:
            writer.abort()
            raise
    if padded:
        emit(Log(f"Teacher cache: the served teacher gave fewer than {k} usable log-probabilities "
                 f"at {padded:,} positions; the missing entries are stored at probability 0.",
                 "warning"))
    return writer.finish()


def _fill_missing(ids: Any, lp: Any, bad: Any, vocab_size: int) -> tuple[Any, Any]:
    """Replace the entries marked bad by distinct unused ids at log-probability -inf."""
    ids, lp = ids.clone(), lp.clone()
    for p in bad.any(-1).nonzero().flatten().tolist():
        used = {int(t) for t, b in zip(ids[p].tolist(), bad[p].tolist()) if not b}
        spare = (t for t in range(vocab_size) if t not in used)
        for c in bad[p].nonzero().flatten().tolist():
            ids[p, c] = next(spare)
            lp[p, c] = -math.inf
    return ids, lp


def open_server(cfg: Any, *, stop: Any = None, concurrency: int = 8) -> TeacherServer:
    return TeacherServer(cfg.teacher.endpoint, cfg.teacher.name, stop=stop,
                         concurrency=concurrency)




# ---------------------------------------------------------------------- in a run


def _find_served(cfg: Any, teacher_tok: Any, rows: list, k: int) -> tuple[Any, int]:
    """The complete cache of this served teacher's answers with the largest k <= k, found
    without asking the server (an earlier run may have been given fewer than it asked)."""
    from kdstudio.core.teacher_cache.keys import cache_dir_for, token_ids_fingerprint
    from kdstudio.core.teacher_cache.store import TeacherCache

    fp = token_ids_fingerprint(rows)
    for kk in range(k, 0, -1):
        path = cache_dir_for(served_key_parts(cfg, teacher_tok, fp, kk))
        if (path / "manifest.json").is_file():
            return TeacherCache(path), kk
    return None, k


def served_targets(cfg: Any, ctx: Any, teacher_tok: Any, make_batch: Any, vocab_size: int,
                   n_train: int, plan: Any) -> tuple[Any, Any]:
    """A served teacher's answers for a run (setup._teacher_targets hands over here when
    teacher.endpoint is set): the cache of them, found, or written now by one pass of
    requests. Returns (plan, TeacherCache)."""
    from kdstudio.core import teacher_source as use
    from kdstudio.core.errors import ConfigError, RunError
    from kdstudio.core.events import Stage
    from kdstudio.core.teacher_cache.store import TeacherCache

    rows = getattr(make_batch, "cache_rows", None)
    why = ""
    if plan.mode != use.CACHE:
        why = plan.why
    elif rows is None:
        why = "the tokenizers differ, so the teacher's answers would be aligned by text"
    elif cfg.method.on_policy_share > 0:
        why = (f"method.on_policy_share is {cfg.method.on_policy_share:g}: the teacher would "
               "have to score the student's own samples during the steps")
    if why:
        raise ConfigError(f"teacher.endpoint is set, but {why}. A served teacher gives only its "
                          "top-k next-token answers, which the run reads through the teacher "
                          "cache.",
                          hint="Clear teacher.endpoint to run the teacher here, or use a method "
                               "that reads only the teacher's next-token answers (the logit and "
                               "hard-label terms).")
    asked = min(int(cfg.teacher.cache_k) or SERVED_DEFAULT_K, vocab_size)
    endpoint = normalize_endpoint(cfg.teacher.endpoint)
    cache, k = _find_served(cfg, teacher_tok, rows, asked)
    group = ctx.group
    multi = group is not None and group.multi
    if multi:  # the main process decides and writes; the others read what it wrote
        found = group.broadcast(cache is not None)
        if not found and not group.is_main:
            if group.broadcast(None) == "stopped":
                raise StoppedError("Stopped while the served teacher's answers were written.")
            cache, k = _find_served(cfg, teacher_tok, rows, asked)
            if cache is None:
                raise RunError(f"Process {group.rank} cannot find the teacher cache the main "
                               "process wrote.", hint="Every machine must see the same KD "
                                                      "Studio home (KDSTUDIO_HOME).")
    written = cache is None
    if cache is not None:
        ctx.emit(Log(f"Teacher cache found (served teacher {cfg.teacher.name!r} at {endpoint}, "
                     f"top {k}): {use.cache_summary(cache)}."))
    else:
        ctx.emit(Stage("teacher cache", f"the served teacher at {endpoint} answers for "
                                        f"{n_train} training rows"))
        try:
            with open_server(cfg, stop=ctx.stop) as server:
                info = server.connect()
                longest = max((len(r) for r in rows), default=0)
                if info.max_model_len and longest > info.max_model_len:
                    raise ServeError(f"The served model takes at most {info.max_model_len} tokens "
                                     f"per request, but training rows have up to {longest}.",
                                     hint=f"Set data.max_length to {info.max_model_len} or less, "
                                          "or serve the model with a longer --max-model-len.")
                ctx.emit(Log(f"Served teacher: {cfg.teacher.name!r} at {endpoint} "
                             f"({info.protocol} protocol)."))
                ctx.emit(Log(server.check_tokenizer(teacher_tok)))
                k, kept, notes = server.negotiate_k(list(rows[0]), asked)
                for note in notes:
                    ctx.emit(Log(note, "warning"))
                ctx.emit(Log(cost_line(k, kept), "warning" if kept < 0.9 else "info"))
                cache, k = _find_served(cfg, teacher_tok, rows, k)
                if cache is None:
                    t0 = time.monotonic()
                    path = write_served_cache(
                        served_key_parts(cfg, teacher_tok, rows, k), n_train, make_batch, server,
                        vocab_size, batch_size=max(1, cfg.training.batch_size), emit=ctx.emit,
                        stop=ctx.stop)
                    cache = TeacherCache(path)
                    ctx.emit(Log(f"Teacher cache written from the served teacher in "
                                 f"{time.monotonic() - t0:.1f} s ({server.requests:,} requests, "
                                 f"{server.retried:,} retried): {use.cache_summary(cache)}."))
        except BaseException:
            if multi:  # the other processes wait for the cache: they stop too
                group.broadcast("stopped")
            raise
        if multi:
            group.broadcast("written")
    plan = use.TeacherPlan(use.CACHE, (f"the teacher served at {endpoint} wrote its top-{k} "
                                       "answers to disk, which this and later runs read"
                                       if written else f"reads the served teacher's top-{k} "
                                                       "answers saved on disk"))
    ctx.emit(Log(plan.line))
    return plan, cache


def served_eval_answers(cfg: Any, ctx: Any, task: Any, teacher: Any, tmodel: Any,
                        evaluator: Any, cache: Any) -> Any:
    """The served teacher's answers at the evaluation positions, kept as the training cache's
    evaluation part (teacher_source.EVAL_PART) with its figures made of them, as
    write_eval_answers keeps a local teacher's: its perplexity from the log-probability it
    gives each label token, its entropy over its top k and one bucket for the rest (a lower
    bound; exact when k is the vocabulary), its parameters from its outline, no latency (it
    runs elsewhere). Read from disk when an earlier run wrote them. Returns
    teacher_source.Covered."""
    from types import SimpleNamespace

    import numpy as np

    from kdstudio.core import teacher_source as use
    from kdstudio.core.events import Stage
    from kdstudio.core.models import count_params
    from kdstudio.core.teacher_cache.store import TeacherCache

    es, tok = evaluator.eval_set, teacher.tokenizer
    rows = use.eval_rows(cfg, task, SimpleNamespace(eval_texts=es.texts), tok)
    parts = served_key_parts(cfg, tok, rows, cache.k)
    parts["data"] = use.EVAL_DATA + str(cfg.data.dataset)
    answers = use.find_eval_answers(cache, parts)
    if answers is None or not answers.manifest.get("teacher_figures"):
        endpoint = normalize_endpoint(cfg.teacher.endpoint)
        ctx.emit(Stage("teacher figures", f"the served teacher at {endpoint} answers on "
                                          f"{len(rows)} evaluation blocks"))
        sums = {"nll": 0.0, "entropy": 0.0, "count": 0, "missing": 0}

        def on_row(mask: Any, ans: RowAnswer) -> None:
            keep = mask.numpy()
            own = ans.label_logprobs[keep] if ans.label_logprobs is not None else \
                np.full(int(keep.sum()), np.nan)
            probs = np.exp(ans.top_logprobs[keep].astype(np.float64))  # -inf: missing, 0
            tail = np.clip(1.0 - probs.sum(-1), 0.0, 1.0)
            ent = -(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
                    .sum(-1)) - np.where(tail > 0, tail * np.log(np.where(tail > 0, tail, 1.0)),
                                         0.0)
            sums["missing"] += int(np.isnan(own).sum())
            sums["nll"] -= float(np.nansum(own))
            sums["entropy"] += float(ent.sum())
            sums["count"] += int(keep.sum())

        def figures() -> dict[str, Any]:
            if sums["missing"]:
                raise ServeError(f"The served teacher at {endpoint} gave no log-probability "
                                 f"for the prompt's own token at {sums['missing']:,} evaluation "
                                 "positions, which its perplexity needs.",
                                 hint="vLLM's prompt_logprobs and SGLang's "
                                      "input_token_logprobs give it; check the server's "
                                      "version and options.")
            n = max(sums["count"], 1)
            return {"metrics": {"perplexity": math.exp(min(sums["nll"] / n, 50.0)),
                                "entropy": sums["entropy"] / n},
                    "params": count_params(tmodel), "latency_ms": None,
                    "latency_device": f"served at {endpoint}", "pinned": {}}

        _, make = task.batch_maker(es.texts, None, student_tok=tok, teacher_tok=tok,
                                   same_tok=True, max_length=es.max_length, pack=es.pack,
                                   device="cpu")
        with open_server(cfg, stop=ctx.stop) as server:
            server.connect()
            path = write_served_cache(parts, len(rows), make, server, cache.vocab_size,
                                      batch_size=max(1, es.batch_size), emit=ctx.emit,
                                      stop=ctx.stop, root=Path(cache.path) / use.EVAL_PART,
                                      on_row=on_row, figures=figures, what="teacher figures")
        answers = TeacherCache(path)
    return use.Covered(cache, answers, dict(answers.manifest["teacher_figures"]))


__all__ = ["API_KEY_ENV", "SERVED_DEFAULT_K", "RowAnswer", "ServerInfo",
           "TeacherServer", "cost_line", "normalize_endpoint", "open_server", "served_key_parts",
           "served_eval_answers", "served_targets",
           "write_served_cache"]
