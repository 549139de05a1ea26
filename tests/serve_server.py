"""A tiny served teacher on 127.0.0.1, speaking vLLM's and SGLang's protocols, for tests that
run the real served-teacher client (kdstudio/core/teacher_serve.py).

It serves a real causal LM loaded with transformers (the built-in everyday-gpt by default)
under a model name, and answers as the two servers do:

- both: ``GET /v1/models`` ({"object": "list", "data": [{"id", "root", "max_model_len"}]}),
  ``POST /tokenize`` ({"model", "prompt", "add_special_tokens"} -> {"tokens", "count",
  "max_model_len"});
- ``protocol="vllm"``: ``POST /v1/completions`` with ``prompt`` as token ids and
  ``prompt_logprobs`` = k -> ``choices[0].prompt_logprobs``: null, then per prompt token a
  mapping "id" -> {"logprob", "rank", "decoded_token"} of the top k plus the prompt token;
  k above ``max_logprobs`` (vLLM's default 20) is a 400 "... greater than max allowed: 20";
- ``protocol="sglang"``: also ``GET /get_model_info`` and ``POST /v1/tokenize``, and
  ``POST /generate`` with ``input_ids``, ``return_logprob``, ``logprob_start_len`` 0 and
  ``top_logprobs_num`` = k -> ``meta_info.input_top_logprobs``: null, then per input token a
  list of [logprob, id, null].

With ``api_key`` set, a request without ``Authorization: Bearer <key>`` gets a 401
{"error": "Unauthorized"} (both servers' --api-key). An unknown model is vLLM's 404
{"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}}.

Faults, set per test on the server object:
- ``fail_next``: that many logprob requests answer 500 first;
- ``sleep_next``/``sleep_s``: that many logprob requests wait sleep_s before answering;
- ``drop_next``: that many logprob requests close the connection without an answer;
- ``give``: answer at most this many log-probabilities per position (fewer than asked);
- ``token_offset``: the tokenize route shifts every id by this (a different tokenizer);
- ``fail_after``: after this many answered logprob requests, every further one is a 500.
Every request is logged in ``log`` as (method, path, status).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVERYDAY_GPT = ROOT / "resources" / "models" / "everyday-gpt"


class FakeServe:
    def __init__(self, model_dir: Path = EVERYDAY_GPT, *, name: str = "everyday-gpt",
                 protocol: str = "vllm", api_key: str = "", max_logprobs: int = 20) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = name
        self.protocol = protocol
        self.api_key = api_key
        self.max_logprobs = max_logprobs
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.max_model_len = int(getattr(self.model.config, "n_positions", 0) or 2048)
        self.fail_next = self.sleep_next = self.drop_next = 0
        self.sleep_s = 0.0
        self.give: int | None = None
        self.token_offset = 0
        self.fail_after: int | None = None
        self.answered = 0
        self.log: list[tuple[str, str, int]] = []
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        self._answers: dict = {}
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def endpoint(self) -> str:
        return self.url + "/v1"

    def start(self) -> FakeServe:
        owner = self

        class Handler(_Handler):
            serve = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeServe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests(self, fragment: str = "") -> list[tuple[str, str, int]]:
        return [r for r in self.log if fragment in r[1]]

    # -- the model --------------------------------------------------------------------------
    def topk(self, ids: list[int], k: int) -> tuple[list, list, list]:
        """Per position j >= 1: the top-k (logprob, id) of the distribution predicting ids[j],
        and the prompt token's own (logprob, rank)."""
        import torch

        # Remembered, so that a retry of a request that timed out answers at once however
        # busy the machine is (the tests time the client, not the model).
        with self._lock, torch.no_grad():
            key = (tuple(ids), k)
            if key not in self._answers:
                logits = self.model(torch.tensor([ids])).logits[0].float()
                lp = torch.log_softmax(logits, dim=-1)
                vals, idx = lp[:-1].topk(k, dim=-1)
                own = lp[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
                rank = (lp[:-1] > own[:, None]).sum(-1) + 1
                self._answers[key] = (vals.tolist(), idx.tolist(),
                                      list(zip(own.tolist(), rank.tolist())))
                if len(self._answers) > 4096:
                    self._answers.pop(next(iter(self._answers)))
            return self._answers[key]


class _Handler(BaseHTTPRequestHandler):
    serve: FakeServe
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):  # a client that gave up or stopped
            pass

    def _json(self, status: int, obj: object) -> None:
        body = json.dumps(obj).encode()
        # Logged before the answer goes out: a client that has its answer may read the log at
        # once, and must find this request there.
        with self.serve._lock:
            self.serve.log.append((self.command, self.path, status))
            at = len(self.serve.log) - 1
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            with self.serve._lock:
                self.serve.log[at] = (self.command, self.path, -status)

    def _authorized(self) -> bool:
        s = self.serve
        header = self.headers.get("Authorization", "")
        s.auth_headers.append(header)
        if s.api_key and header != f"Bearer {s.api_key}":
            self._json(401, {"error": "Unauthorized"})
            return False
        return True

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self) -> None:
        s = self.serve
        if not self._authorized():
            return
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": s.name, "object": "model", "owned_by": "vllm", "root": str(EVERYDAY_GPT),
                 "max_model_len": s.max_model_len}]})
        elif self.path == "/get_model_info" and s.protocol == "sglang":
            self._json(200, {"model_path": str(EVERYDAY_GPT), "is_generation": True})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        s = self.serve
        body = self._body()
        if not self._authorized():
            return
        if self.path == "/tokenize" or (self.path == "/v1/tokenize" and s.protocol == "sglang"):
            if body.get("model", s.name) != s.name:
                return self._unknown(body.get("model"))
            ids = s.tokenizer(body.get("prompt", ""),
                              add_special_tokens=body.get("add_special_tokens", True))["input_ids"]
            ids = [i + s.token_offset for i in ids]
            self._json(200, {"tokens": ids, "count": len(ids), "max_model_len": s.max_model_len,
                             "token_strs": None})
        elif self.path == "/v1/completions" and s.protocol == "vllm":
            if body.get("model") != s.name:
                return self._unknown(body.get("model"))
            k = int(body.get("prompt_logprobs") or 0)
            if k > s.max_logprobs:
                return self._json(400, {"error": {
                    "message": f"Requested prompt logprobs of {k}, which is greater than max "
                               f"allowed: {s.max_logprobs}", "type": "BadRequestError",
                    "param": None, "code": 400}})
            if self._fault():
                return
            self._vllm(body["prompt"], k)
        elif self.path == "/generate" and s.protocol == "sglang":
            if self._fault():
                return
            self._sglang(body["input_ids"], int(body.get("top_logprobs_num") or 0))
        else:
            self._json(404, {"detail": "Not Found"})

    def _unknown(self, model: object) -> None:
        self._json(404, {"error": {"message": f"The model `{model}` does not exist.",
                                   "type": "NotFoundError", "param": "model", "code": 404}})

    def _fault(self) -> bool:
        s = self.serve
        with s._lock:
            if s.fail_next > 0:
                s.fail_next -= 1
                fault = "fail"
            elif s.drop_next > 0:
                s.drop_next -= 1
                fault = "drop"
            elif s.sleep_next > 0:
                s.sleep_next -= 1
                fault = "sleep"
            elif s.fail_after is not None and s.answered >= s.fail_after:
                fault = "fail"
            else:
                s.answered += 1
                fault = ""
        if fault == "fail":
            self._json(500, {"error": {"message": "Internal server error", "code": 500}})
            return True
        if fault == "drop":
            self.serve.log.append((self.command, self.path, 0))
            self.close_connection = True
            self.connection.shutdown(2)  # no answer at all
            return True
        self._sleep = fault == "sleep"
        return False

    def _given(self, k: int) -> int:
        return min(k, self.serve.give) if self.serve.give is not None else k

    def _vllm(self, ids: list[int], k: int) -> None:
        s = self.serve
        vals, idx, own = s.topk(ids, k)
        if self._sleep:  # the answer is ready (and remembered), but late
            time.sleep(s.sleep_s)
        give = self._given(k)
        prompt_lp: list = [None]
        for j in range(len(ids) - 1):
            entry = {str(t): {"logprob": v, "rank": r + 1,
                              "decoded_token": s.tokenizer.decode([t])}
                     for r, (v, t) in enumerate(zip(vals[j][:give], idx[j][:give]))}
            tok = ids[j + 1]
            if str(tok) not in entry:
                entry[str(tok)] = {"logprob": own[j][0], "rank": own[j][1],
                                   "decoded_token": s.tokenizer.decode([tok])}
            prompt_lp.append(entry)
        self._json(200, {"id": "cmpl-test", "object": "text_completion", "model": s.name,
                         "choices": [{"index": 0, "text": " the", "logprobs": None,
                                      "finish_reason": "length", "prompt_logprobs": prompt_lp}],
                         "usage": {"prompt_tokens": len(ids), "completion_tokens": 1,
                                   "total_tokens": len(ids) + 1}})

    def _sglang(self, ids: list[int], k: int) -> None:
        s = self.serve
        vals, idx, own = s.topk(ids, max(k, 1))
        if self._sleep:
            time.sleep(s.sleep_s)
        give = self._given(k)
        top: list = [None] + [[[v, t, None] for v, t in zip(vals[j][:give], idx[j][:give])]
                              for j in range(len(ids) - 1)]
        token_lp = [[None, ids[0], None]] + [[own[j][0], ids[j + 1], None]
                                             for j in range(len(ids) - 1)]
        self._json(200, {"text": " the", "meta_info": {
            "id": "req-test", "prompt_tokens": len(ids), "completion_tokens": 1,
            "input_token_logprobs": token_lp, "input_top_logprobs": top,
            "output_token_logprobs": [[-1.0, 262, None]], "output_top_logprobs": [[]]}})
