"""A served teacher's client: its top-k next-token log-probabilities from a vLLM or SGLang
server, asked for over HTTP (teacher_serve.py writes them into the teacher cache).

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdstudio.core.errors import ServeError, StoppedError

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
    # (n - 1,) float32: the log-probability of the row's own next token at each position
    # (vLLM's prompt_logprobs hold it whatever its rank, SGLang's input_token_logprobs too);
    # NaN where the server gave none. The teacher's perplexity is made of these.
    label_logprobs: np.ndarray | None = None


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
            meta = ((out or {}).get("meta_info") or {}) if isinstance(out, dict) else {}
            entries = meta.get("input_top_logprobs")
            shape = "meta_info.input_top_logprobs"
            pos = [None if e is None else [(float(x[0]), int(x[1])) for x in e]
                   for e in entries] if isinstance(entries, list) else None
            given = meta.get("input_token_logprobs")
            own = [e[0] if isinstance(e, (list, tuple)) and e and e[0] is not None else None
                   for e in given] if isinstance(given, list) and len(given) == n else [None] * n
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
            own = [_own_logprob(e, t) for e, t in zip(entries, ids)] \
                if isinstance(entries, list) and len(entries) == n else [None] * n
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
        labels = np.array([np.nan if v is None else float(v) for v in own[1:]], dtype=np.float32)
        return RowAnswer(top_ids, top_lp, fewest if n > 1 else k, labels)

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


def _own_logprob(entry: Any, token: int) -> float | None:
    """The prompt token's own log-probability in one prompt_logprobs position, or None."""
    v = entry.get(str(token)) if isinstance(entry, dict) else None
    v = v.get("logprob") if isinstance(v, dict) else v
    return float(v) if isinstance(v, (int, float)) else None


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
