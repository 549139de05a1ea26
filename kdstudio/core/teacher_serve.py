"""A served teacher: its top-k next-token log-probabilities from a vLLM or SGLang server,
written into the teacher cache as a local teacher pass writes them.

The two protocols (prompt given as token ids, so the server cannot tokenize differently):

vLLM, ``POST {root}/v1/completions`` (vllm/entrypoints/openai/protocol.py, CompletionRequest
and CompletionResponseChoice)::

    {"model": M, "prompt": [ids], "max_tokens": 1, "temperature": 0, "prompt_logprobs": k}
    -> {"choices": [{"prompt_logprobs": [null, {"<id>": {"logprob": x, "rank": r,
                                                           "decoded_token": s}, ...}, ...]}]}

  entry j (j >= 1) is the distribution that predicts prompt token j: the top k plus the
  prompt token itself (k + 1 entries when it is not among them). The server refuses k above
  its --max-logprobs (default 20) with a 400 "... greater than max allowed: 20".

SGLang, ``POST {root}/generate`` (sglang/srt/managers/io_struct.py GenerateReqInput; the
lists are built in scheduler_output_processor_mixin.py and tokenizer_manager.py)::

    {"input_ids": [ids], "sampling_params": {"max_new_tokens": 1, "temperature": 0},
     "return_logprob": true, "logprob_start_len": 0, "top_logprobs_num": k}
    -> {"meta_info": {"input_top_logprobs": [null, [[logprob, id, text|null], ...], ...]}}

  entry j (j >= 1) again predicts input token j.

Both list the served models at ``GET {root}/v1/models`` ({"data": [{"id": M, ...}]}) and
tokenize at ``POST {root}/tokenize`` (SGLang also ``/v1/tokenize``):
``{"model": M, "prompt": text, "add_special_tokens": false} -> {"tokens": [ids], ...}``.
SGLang answers ``GET {root}/get_model_info``; vLLM does not, which tells them apart.

The API key comes from the environment (API_KEY_ENV) and goes only into the Authorization
header: no message, event or file of a run holds it.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdstudio.core.errors import ServeError, StoppedError
from kdstudio.core.events import Log, Progress

API_KEY_ENV = "KDSTUDIO_TEACHER_API_KEY"
VLLM, SGLANG = "vllm", "sglang"
PROBE_TEXT = ("KD Studio checks the tokenizer: naïve café, 3.14 µs, 東京 and 🙂 -- "
              "    indented\ttabs, CamelCase, snake_case, URLs like https://example.org/a?b=1.")
# Asked for when teacher.cache_k is 0: a local pass starts its ladder here too.
SERVED_DEFAULT_K = 64
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


def served_key_parts(cfg: Any, teacher_tok: Any, rows: list, k: int) -> dict[str, Any]:
    """The cache key of a served teacher's answers. Remote weights cannot be fingerprinted:
    the endpoint and the model's name stand for them, so a run, resume or sweep finds the
    cache without asking the server, and another server or model misses it (the safe way)."""
    from kdstudio.core.teacher_cache.keys import tokenizer_fingerprint

    endpoint = normalize_endpoint(cfg.teacher.endpoint)
    return {"teacher": cfg.teacher.name, "revision": cfg.teacher.revision,
            "weights": f"served by {endpoint}", "tokenizer": tokenizer_fingerprint(teacher_tok),
            "data": cfg.data.dataset, "token_ids": rows, "max_length": cfg.data.max_length,
            "pack": cfg.data.pack, "k": int(k), "dtype": "served"}


def normalize_endpoint(endpoint: str) -> str:
    """'http://host:8000/v1/' -> 'http://host:8000/v1' (checked: http or https, a host)."""
    from urllib.parse import urlsplit

    text = (endpoint or "").strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ServeError(f"teacher.endpoint is {endpoint!r}, which is not an http(s) address.",
                         hint="Give the server's OpenAI-compatible base, e.g. "
                              "'http://127.0.0.1:8000/v1'.")
    return text


@dataclass
class RowAnswer:
    """The teacher's answers for one row of n tokens: positions 0..n-2 (each predicts the
    next token), k entries each, largest first; missing entries have id -1."""

    top_ids: np.ndarray       # (n - 1, k) int64
    top_logprobs: np.ndarray  # (n - 1, k) float32
    fewest: int               # the fewest entries the server gave at any position


@dataclass
class ServerInfo:
    protocol: str
    models: list[str]
    max_model_len: int | None = None
    notes: list[str] = field(default_factory=list)


class TeacherServer:
    """A client of one served model. Thread-safe: the pass calls ``row_answer`` from
    several threads at once.

    Requests that fail on the way (a refused or dropped connection, a timeout, 408, 429 or
    5xx) are retried ``retries`` times with doubling waits from ``backoff`` seconds; a 4xx
    answer is a ServeError at once, naming what the server said and what would be right."""

    def __init__(self, endpoint: str, model: str, *, api_key: str | None = None,
                 timeout: float = 120.0, retries: int = 4, backoff: float = 0.5,
                 protocol: str | None = None, concurrency: int = 8, stop: Any = None):
        import httpx

        self.endpoint = normalize_endpoint(endpoint)
        self.root = self.endpoint[:-3] if self.endpoint.endswith("/v1") else self.endpoint
        self.model = model
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.protocol = protocol
        self.stop = stop
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        headers = {"User-Agent": "kdstudio"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            limits=httpx.Limits(max_connections=max(1, concurrency),
                                max_keepalive_connections=max(1, concurrency)))
        self._has_key = bool(key)
        self.requests = 0
        self.retried = 0
        self._count = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TeacherServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _request(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False,
                 what: str = "") -> Any:
        """The JSON answer of one call, retried on transient failures; None for a 404 when
        missing_ok."""
        import httpx

        url = self.root + path
        what = what or f"{method} {path}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                with self._count:
                    self.retried += 1
                until = time.monotonic() + min(self.backoff * 2 ** (attempt - 1), 30.0)
                while time.monotonic() < until:
                    if self.stop is not None and self.stop.is_set():
                        raise StoppedError(f"Stopped while retrying {what} at {self.root}.")
                    time.sleep(min(0.1, max(0.0, until - time.monotonic())))
            with self._count:
                self.requests += 1
            try:
                resp = self._http.request(method, url, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout:g} s"
                continue
            except httpx.TransportError as exc:  # refused, reset, dropped mid-answer
                last = f"the connection failed ({type(exc).__name__}: {exc})"
                continue
            if resp.status_code in _RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {_server_message(resp)}"
                continue
            if resp.status_code == 404 and missing_ok:
                return None
            if resp.status_code >= 400:
                raise self._refusal(resp, what)
            try:
                return resp.json()
            except ValueError:
                raise ServeError(f"The served teacher at {self.root} answered {what} with "
                                 f"something that is not JSON: {resp.text[:200]!r}.",
                                 hint="teacher.endpoint must be a vLLM or SGLang server's "
                                      "OpenAI-compatible base address.") from None
        raise ServeError(f"The served teacher at {self.root} did not answer {what} after "
                         f"{self.retries + 1} tries; the last: {last}.",
                         hint="Check that the server is up and reachable from here; a slow "
                              "server needs fewer concurrent requests or a longer timeout.")

    def _refusal(self, resp: Any, what: str) -> ServeError:
        msg = _server_message(resp)
        code = resp.status_code
        if code in (401, 403):
            have = (f"the key in {API_KEY_ENV} was refused" if self._has_key
                    else f"no key was sent ({API_KEY_ENV} is not set)")
            return ServeError(f"The served teacher at {self.root} refused {what} (HTTP {code}): "
                              f"{have}.", hint=f"Set {API_KEY_ENV} to the key the server was "
                                               "started with (vLLM and SGLang: --api-key).")
        if code == 404 and ("model" in msg.lower() or "does not exist" in msg.lower()):
            return ServeError(f"The server at {self.root} does not serve the model "
                              f"{self.model!r} ({msg}).",
                              hint="teacher.name must be the name the server lists at "
                                   "/v1/models (vLLM: --served-model-name).")
        return ServeError(f"The served teacher at {self.root} refused {what} (HTTP {code}): "
                          f"{msg}")

    # ------------------------------------------------------------------ checks

    def connect(self) -> ServerInfo:
        """Check the server serves self.model, and tell vLLM from SGLang."""
        listing = self._request("GET", "/v1/models", what="the model list (GET /v1/models)")
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise ServeError(f"{self.root}/v1/models answered {str(listing)[:200]}, not an "
                             "OpenAI model list ({'data': [{'id': ...}]}).",
                             hint="teacher.endpoint must be a vLLM or SGLang server's base, "
                                  "ending in /v1.")
        models = [str(m.get("id")) for m in data if isinstance(m, dict)]
        if self.model not in models:
            raise ServeError(f"The server at {self.root} does not serve the model "
                             f"{self.model!r}; it serves {', '.join(map(repr, models)) or 'none'}.",
                             hint="Set teacher.name to the served model's name.")
        entry = next(m for m in data if isinstance(m, dict) and str(m.get("id")) == self.model)
        max_len = entry.get("max_model_len")
        if self.protocol is None:
            info = self._request("GET", "/get_model_info", missing_ok=True,
                                 what="GET /get_model_info")
            self.protocol = SGLANG if isinstance(info, dict) and "model_path" in info else VLLM
        return ServerInfo(self.protocol, models, int(max_len) if isinstance(max_len, int) else None)

    def tokenize(self, text: str) -> list[int] | None:
        """The server's token ids for text (no special tokens), or None without a route."""
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        for path in ("/tokenize", "/v1/tokenize"):
            out = self._request("POST", path, body, missing_ok=True, what=f"POST {path}")
            if out is None:
                continue
            tokens = out.get("tokens") if isinstance(out, dict) else None
            if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                raise ServeError(f"{self.root}{path} answered {str(out)[:200]}, without a list "
                                 "of token ids ('tokens').")
            return tokens
        return None

    def check_tokenizer(self, tokenizer: Any, text: str = PROBE_TEXT) -> str:
        """Compare the server's token ids for a probe text with the local tokenizer's; a
        mismatch is a ServeError before anything costs. Returns a line for the log."""
        theirs = self.tokenize(text)
        if theirs is None:
            return (f"The server at {self.root} has no tokenize route, so its tokenizer could "
                    "not be checked against the student's.")
        ours = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if theirs != ours:
            at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                      min(len(ours), len(theirs)))
            raise ServeError(
                f"The served model {self.model!r} tokenizes differently from the student: a "
                f"probe text gives {len(theirs)} tokens there and {len(ours)} here, first "
                f"differing at token {at} ({theirs[at:at + 3]} against {ours[at:at + 3]}).",
                hint="The cache holds answers per token id, so the student must use the served "
                     "teacher's tokenizer: serve a teacher of the student's family, or clear "
                     "teacher.endpoint and run the teacher here (cross-tokenizer methods need "
                     "the live teacher).")
        return f"The served teacher's tokenizer matches the student's ({len(ours)} probe tokens)."

    # ------------------------------------------------------------------ answers

    def row_answer(self, ids: list[int], k: int) -> RowAnswer:
        """The teacher's top-k log-probabilities at every position of one row of ids."""
        n = len(ids)
        if self.protocol == SGLANG:
            out = self._request("POST", "/generate", {
                "input_ids": ids, "sampling_params": {"max_new_tokens": 1, "temperature": 0},
                "return_logprob": True, "logprob_start_len": 0, "top_logprobs_num": k},
                what="POST /generate")
            if isinstance(out, list) and out:
                out = out[0]
            entries = ((out or {}).get("meta_info") or {}).get("input_top_logprobs") \
                if isinstance(out, dict) else None
            shape = "meta_info.input_top_logprobs"
            pos = [None if e is None else [(float(x[0]), int(x[1])) for x in e]
                   for e in entries] if isinstance(entries, list) else None
        else:
            out = self._request("POST", "/v1/completions", {
                "model": self.model, "prompt": ids, "max_tokens": 1, "temperature": 0,
                "prompt_logprobs": k}, what="POST /v1/completions")
            choices = out.get("choices") if isinstance(out, dict) else None
            entries = choices[0].get("prompt_logprobs") if choices and isinstance(choices[0], dict) \
                else None
            shape = "choices[0].prompt_logprobs"
            pos = [None if e is None else _vllm_entries(e, k) for e in entries] \
                if isinstance(entries, list) else None
        if pos is None or len(pos) != n:
            got = "nothing" if pos is None else f"{len(pos)} entries"
            raise ServeError(f"The served teacher at {self.root} answered a row of {n} tokens "
                             f"with {got} in {shape}, where {n} were expected (one per prompt "
                             "token, the first null).",
                             hint="The server must return prompt log-probabilities: vLLM's "
                                  "prompt_logprobs, or SGLang's return_logprob with "
                                  "logprob_start_len 0.")
        top_ids = np.full((max(n - 1, 0), k), -1, dtype=np.int64)
        top_lp = np.full((max(n - 1, 0), k), -math.inf, dtype=np.float32)
        fewest = k
        for j in range(1, n):
            e = pos[j] or []
            e = sorted(e, key=lambda t: -t[0])[:k]
            fewest = min(fewest, len(e))
            for c, (lp, tid) in enumerate(e):
                top_ids[j - 1, c] = tid
                top_lp[j - 1, c] = lp
        return RowAnswer(top_ids, top_lp, fewest if n > 1 else k)

    def negotiate_k(self, ids: list[int], k: int) -> tuple[int, float, list[str]]:
        """Ask for k on one row; lower k to what the server allows or gives. Returns (k, the
        share of the teacher's probability the top k hold on that row, notes)."""
        notes = []
        try:
            ans = self.row_answer(ids, k)
        except ServeError as exc:
            most = re.search(r"max(?:imum)?[ _]?(?:allowed|logprobs)\D{0,12}(\d+)", str(exc), re.I)
            if not most or int(most.group(1)) >= k or int(most.group(1)) < 1:
                raise
            allowed = int(most.group(1))
            notes.append(f"The served teacher allows at most {allowed} log-probabilities per "
                         f"position, where {k} were asked; the cache keeps {allowed} (vLLM: "
                         f"--max-logprobs raises the limit).")
            k = allowed
            ans = self.row_answer(ids, k)
        if ans.fewest < k:
            if ans.fewest < 1:
                raise ServeError(f"The served teacher at {self.root} gave no log-probabilities "
                                 "at some position of a probe row.",
                                 hint="The server must return prompt log-probabilities.")
            notes.append(f"The served teacher gives {ans.fewest} log-probabilities per position "
                         f"where {k} were asked; the cache keeps {ans.fewest}.")
            k = ans.fewest
        lp = ans.top_logprobs[:, :k]
        kept = float(np.exp(lp).sum(-1).clip(max=1.0).mean()) if lp.size else 1.0
        return k, kept, notes


def _vllm_entries(entry: Any, k: int) -> list[tuple[float, int]]:
    """One prompt_logprobs position: {"id": {"logprob", "rank", ...}} (or a bare number) to
    (logprob, id) of rank <= k (the prompt's own token is there too, whatever its rank)."""
    if not isinstance(entry, dict):
        raise ServeError(f"A prompt_logprobs entry is {str(entry)[:100]}, not a mapping of "
                         "token ids to log-probabilities.")
    out = []
    for tid, v in entry.items():
        lp = v.get("logprob") if isinstance(v, dict) else v
        rank = v.get("rank") if isinstance(v, dict) else None
        if rank is not None and rank > k:
            continue
        out.append((float(lp), int(tid)))
    return out


def _server_message(resp: Any) -> str:
    """What a server said in an error body: vLLM's {"message"} or {"error": {"message"}},
    FastAPI's {"detail"}, or the text."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])[:300]
        if isinstance(err, str):
            return err[:300]
    return str(body)[:300]


# ---------------------------------------------------------------------- the pass


def cost_line(k: int, kept: float) -> str:
    """What a small k costs, in words for the log."""
    return (f"Teacher cache: the served teacher's top {k} hold {100 * kept:.0f}% of its "
            "probability on the first row (at temperature 1); the rest is kept as one remaining "
            "mass, which the loss cannot tell apart"
            + (". A flat teacher loses most here: on the LM demo's teacher, top-64 answers cost "
               "+2.8% perplexity against the live teacher (README, the teacher-logit cache); "
               "serve with a larger --max-logprobs and raise teacher.cache_k to keep more."
               if kept < 0.9 else "."))


def write_served_cache(parts: dict[str, Any], n_rows: int, make_batch: Any, server: TeacherServer,
                       vocab_size: int, *, batch_size: int, emit: Any, stop: Any,
                       concurrency: int = 8) -> Path:
    """One pass of requests to the served teacher over every training row; returns the
    published cache folder (the same format a local pass writes).

    Up to ``concurrency`` rows are in flight at once. A stop, or a request that still fails
    after its retries, keeps the rows written so far, unpublished, and the next run that
    needs this cache continues from them (TeacherCacheWriter.keep)."""
    import torch

    from kdstudio.core.teacher_cache.store import TeacherCacheWriter

    k = int(parts["k"])
    writer = TeacherCacheWriter(parts, vocab_size, expected_rows=n_rows, resume=True)
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
            writer.add(idx, mask, top_ids=top_ids, top_logprobs=top_lp)
            emit(Progress("teacher cache", n_rows - len(todo) + start + len(idx), n_rows, "rows"))
    except StoppedError as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        raise keep_and(exc, "Stopped while the served teacher's answers were being written") \
            from None
    except ServeError as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        raise keep_and(exc, "The served teacher's pass failed") from None
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        writer.abort()
        raise
    pool.shutdown(wait=True)
    if padded:
        emit(Log(f"Teacher cache: the served teacher gave fewer than {k} usable log-probabilities "
                 f"at {padded:,} positions; the missing entries are stored at probability 0.",
                 "warning"))
    return writer.finish()


def _fill_missing(ids: Any, lp: Any, bad: Any, vocab_size: int) -> tuple[Any, Any]:
    """Replace the entries marked bad by distinct unused ids at log-probability -inf."""
    import torch

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
    ctx.emit(Log(plan.line))
    return plan, cache


__all__ = ["API_KEY_ENV", "SERVED_DEFAULT_K", "RowAnswer", "ServerInfo", "TeacherServer",
           "cost_line", "normalize_endpoint", "open_server", "served_key_parts",
           "served_targets",
           "write_served_cache"]
