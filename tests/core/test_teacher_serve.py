"""A served teacher for real: the client (kdstudio/core/teacher_serve.py) against a local
server (tests/serve_server.py) that answers as vLLM and SGLang do, from the built-in
everyday-gpt. Each test checks what the user gets: the cache's answers, the message, what is
left on disk.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import torch

from kdstudio.core.errors import ConfigError, ServeError, StoppedError
from kdstudio.core.events import Log, Progress, Stage
from kdstudio.core.tasks import get_task
from kdstudio.core.teacher_cache.keys import KEY_PARTS
from kdstudio.core.teacher_cache.store import TeacherCache
from kdstudio.core.teacher_serve import (
    API_KEY_ENV,
    TeacherServer,
    write_served_cache,
)
from tests.conftest import corpus_texts
from tests.serve_server import FakeServe

SECRET = "sk-kdstudioTestKeyNeverWritten42"


@pytest.fixture(scope="module", params=["vllm", "sglang"])
def server(request):
    with FakeServe(protocol=request.param) as s:
        yield s


@pytest.fixture(autouse=True)
def _reset(request):
    yield
    if "server" in request.fixturenames:
        s = request.getfixturevalue("server")
        s.fail_next = s.sleep_next = s.drop_next = 0
        s.give, s.fail_after, s.token_offset, s.api_key = None, None, 0, ""


def client(server, **kw) -> TeacherServer:
    kw.setdefault("timeout", 10)
    kw.setdefault("backoff", 0.01)
    c = TeacherServer(server.endpoint, server.name, **kw)
    c.connect()
    return c


def rows_of(tok, n_texts=24, max_length=48):
    n, make_batch = get_task("causal-lm").batch_maker(
        corpus_texts(n_texts), None, student_tok=tok, teacher_tok=tok, same_tok=True,
        max_length=max_length, pack=True, device="cpu")
    return n, make_batch


def parts(k, source):
    p = dict.fromkeys(KEY_PARTS)
    p.update(teacher="everyday-gpt", token_ids="test-rows", k=k, dtype=source)
    return p


def test_answers_equal_a_local_teacher_pass(server):
    from kdstudio.core.teacher_source import write_cache

    n, make_batch = rows_of(server.tokenizer)
    k = 16
    vocab = len(server.tokenizer)
    events: list = []
    local = write_cache(parts(k, "local"), make_batch.cache_rows, make_batch, server.model,
                        get_task("causal-lm"), vocab, batch_size=4,
                        autocast=contextlib.nullcontext, emit=events.append, stop=None)
    with client(server, concurrency=4) as c:
        served = write_served_cache(parts(k, "served"), n, make_batch, c, vocab, batch_size=4,
                                    emit=events.append, stop=None, concurrency=4)
    a, b = TeacherCache(local), TeacherCache(served)
    assert len(a) == len(b) == n and a.k == b.k == k
    rows = list(range(n))
    ta, tb = a.get(rows), b.get(rows)
    assert torch.equal(ta.mask, tb.mask)
    m = ta.mask
    same_ids = (ta.top_ids[m] == tb.top_ids[m]).all(-1).float().mean()
    assert same_ids > 0.999  # a tie at the k-th place may break either way
    ok = (ta.top_ids[m] == tb.top_ids[m]).all(-1)
    # Both went through the same 8-bit code; the top entry's float16 rounding is the rest.
    assert (ta.top_logprobs[m][ok] - tb.top_logprobs[m][ok]).abs().max() < 0.05
    assert (ta.tail_logmass[m][ok] - tb.tail_logmass[m][ok]).abs().max() < 0.01
    assert torch.isnan(tb.tail_log_half[m]).all()  # no server gives the tail's shape
    assert any(isinstance(e, Progress) and e.current == n for e in events)


def test_no_key_and_a_wrong_key_are_refused_and_never_shown(server, monkeypatch):
    server.api_key = SECRET
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.raises(ServeError) as no_key:
        client(server)
    assert "HTTP 401" in str(no_key.value) and f"{API_KEY_ENV} is not set" in str(no_key.value)
    monkeypatch.setenv(API_KEY_ENV, "sk-wrong-key-31337")
    with pytest.raises(ServeError) as wrong:
        client(server)
    assert "was refused" in str(wrong.value) and "sk-wrong-key-31337" not in str(wrong.value)
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    with client(server) as c:
        assert c.row_answer([464, 318, 257], 4).top_ids.shape == (2, 4)
    assert server.auth_headers[-1] == f"Bearer {SECRET}"


def test_an_unknown_model_names_the_served_ones(server):
    c = TeacherServer(server.endpoint, "gpt-9000", timeout=5)
    with pytest.raises(ServeError, match=r"does not serve the model 'gpt-9000'; it serves "
                                         r"'everyday-gpt'") as exc:
        c.connect()
    assert "teacher.name" in str(exc.value)


def test_a_500_then_success(server):
    server.fail_next = 2
    with client(server) as c:
        ans = c.row_answer([464, 318, 257, 1049], 8)
        assert c.retried == 2
    assert ans.top_ids.shape == (3, 8) and ans.fewest == 8
    assert [r[2] for r in server.log if r[2] >= 0][-3:] == [500, 500, 200]


def test_five_hundreds_for_good_fail_with_the_last_answer(server):
    server.fail_next = 10
    with client(server, retries=2) as c, pytest.raises(ServeError,
                                                       match="after 3 tries.*HTTP 500"):
        c.row_answer([464, 318, 257], 4)


def test_a_timeout_is_retried_and_a_server_too_slow_is_named(server):
    server.sleep_next, server.sleep_s = 1, 3.0
    with client(server, timeout=1.5) as c:
        assert c.row_answer([464, 318, 257], 4).fewest == 4
        assert c.retried == 1
    server.sleep_next, server.sleep_s = 2, 1.0
    with client(server, timeout=0.3, retries=1) as c, \
            pytest.raises(ServeError, match="no answer within 0.3 s"):
        c.row_answer([464, 318, 257], 4)
    time.sleep(2.5)  # the requests given up on finish on the server first


def test_a_dropped_connection_is_retried(server):
    server.drop_next = 2
    with client(server) as c:
        assert c.row_answer([464, 318, 257], 4).fewest == 4
        assert c.retried == 2
    path = "/v1/completions" if server.protocol == "vllm" else "/generate"
    assert [r[2] for r in server.requests(path) if r[2] >= 0][-3:] == [0, 0, 200]


def test_fewer_log_probabilities_than_asked(server):
    server.give = 5
    ids = server.tokenizer("The museum was full of people on a Sunday.")["input_ids"]
    with client(server) as c:
        k, kept, notes = c.negotiate_k(ids, 16)
    assert k == 5 and 0 < kept < 1
    assert "gives 5 log-probabilities per position where 16 were asked" in notes[0]


def test_k_above_the_servers_limit_is_lowered_to_it():
    with FakeServe(protocol="vllm", max_logprobs=20) as s, client(s) as c:
        k, _, notes = c.negotiate_k([464, 318, 257, 1049], 64)
    assert k == 20 and "at most 20 log-probabilities" in notes[0] and "--max-logprobs" in notes[0]


def test_a_different_tokenizer_is_refused_before_any_cost(server):
    server.token_offset = 7
    asked = len(server.requests("/v1/completions")) + len(server.requests("/generate"))
    with client(server) as c, pytest.raises(ServeError, match="tokenizes differently") as exc:
        c.check_tokenizer(server.tokenizer)
    assert "first differing at token 0" in str(exc.value)
    assert len(server.requests("/v1/completions")) + len(server.requests("/generate")) == asked


def test_a_stopped_pass_keeps_its_rows_and_the_next_continues(server):
    n, make_batch = rows_of(server.tokenizer)
    vocab, k = len(server.tokenizer), 8
    stop = threading.Event()
    events: list = []

    def emit(e):
        events.append(e)
        if isinstance(e, Progress) and e.current >= 8:
            stop.set()

    with client(server) as c, pytest.raises(StoppedError, match="rows written so far are kept"):
        write_served_cache(parts(k, "served"), n, make_batch, c, vocab, batch_size=4, emit=emit,
                           stop=stop, concurrency=2)
    events.clear()
    with client(server) as c:
        path = write_served_cache(parts(k, "served"), n, make_batch, c, vocab, batch_size=4,
                                  emit=events.append, stop=None, concurrency=2)
    assert any(isinstance(e, Log) and "continuing a stopped pass" in e.message for e in events)
    with client(server) as c:  # the same answers as one uninterrupted pass
        whole = write_served_cache(parts(k, "whole"), n, make_batch, c, vocab, batch_size=4,
                                   emit=events.append, stop=None, concurrency=2)
    a, b = TeacherCache(path).get(list(range(n))), TeacherCache(whole).get(list(range(n)))
    assert torch.equal(a.top_ids, b.top_ids) and torch.equal(a.top_logprobs, b.top_logprobs)


def test_a_failed_pass_loses_nothing_already_written(server):
    n, make_batch = rows_of(server.tokenizer)
    vocab, k = len(server.tokenizer), 8
    server.fail_after = server.answered + 8
    with client(server, retries=1) as c, pytest.raises(ServeError) as exc:
        write_served_cache(parts(k, "served"), n, make_batch, c, vocab, batch_size=4,
                           emit=lambda e: None, stop=None, concurrency=2)
    assert "rows written so far are kept" in str(exc.value)
    server.fail_after = None
    events: list = []
    with client(server) as c:
        before = server.answered
        write_served_cache(parts(k, "served"), n, make_batch, c, vocab, batch_size=4,
                           emit=events.append, stop=None, concurrency=2)
    assert server.answered - before < n  # the rows kept were not asked again
    assert any(isinstance(e, Log) and "continuing a stopped pass" in e.message for e in events)


def _served_config(endpoint, **method):
    from kdstudio.core.config import RunConfig

    cfg = RunConfig()
    cfg.task = "causal-lm"
    cfg.teacher.name = "everyday-gpt"
    cfg.teacher.endpoint = endpoint
    cfg.student.layers = 1
    cfg.data.max_length = 32
    cfg.data.max_train_samples = 40
    cfg.data.max_eval_samples = 8
    cfg.training.max_steps = 2
    cfg.training.batch_size = 4
    cfg.evaluation.baseline = False
    cfg.evaluation.latency_repeats = 1
    cfg.evaluation.pinned_inputs = []
    for key, value in method.items():
        setattr(cfg.method, key, value)
    return cfg


def test_a_run_reads_the_served_teacher_through_the_cache():
    from kdstudio.core.trainer import run_training

    logs: list[str] = []
    with FakeServe(protocol="vllm") as s:
        cfg = _served_config(s.endpoint)
        result = run_training(cfg, lambda e: logs.append(e.message) if isinstance(e, Log) else None)
        assert result.status == "finished", result
        targets = result.summary["teacher_targets"]
        assert targets["mode"] == "cache" and targets["k"] == 20
        assert any("allows at most 20 log-probabilities" in m for m in logs)
        asked = len(s.requests("/v1/completions"))
        # A second run finds the cache without asking the server for answers again.
        again = run_training(_served_config(s.endpoint))
        assert again.status == "finished"
        assert len(s.requests("/v1/completions")) == asked
    assert not any(SECRET in m for m in logs)


def test_a_method_that_needs_the_live_teacher_is_refused():
    from kdstudio.core.trainer import run_training

    with FakeServe(protocol="vllm") as s:
        with pytest.raises(ConfigError, match="teacher.endpoint is set, but hidden-state"):
            run_training(_served_config(s.endpoint, hidden_weight=1.0))
        assert not s.requests("/v1/completions")


@pytest.mark.parametrize("protocol", ["vllm", "sglang"])
def test_a_served_run_never_loads_the_teachers_weights(protocol, monkeypatch):
    """The served pass also asks for the evaluation positions' answers and the label tokens'
    log-probabilities: the teacher's figures come from the server, equal to the local
    teacher's, and no run loads its weights."""
    from kdstudio.core import setup as setup_mod
    from kdstudio.core.teacher_cache import list_caches
    from kdstudio.core.trainer import run_training
    from tests.serve_server import EVERYDAY_GPT

    def config(endpoint):
        cfg = _served_config(endpoint)
        cfg.teacher.name = str(EVERYDAY_GPT)
        cfg.teacher.cache = "auto" if endpoint else "never"
        cfg.student.name = str(EVERYDAY_GPT)  # by name: no student derived from its weights
        return cfg
    live = run_training(config(""))  # the local teacher, measured live
    assert live.summary["teacher_targets"]["teacher_weights"] == "loaded"

    real_load = setup_mod.load_model

    def no_teacher(source, task, **kw):
        assert kw.get("role") != "teacher", "the teacher's weights were loaded"
        return real_load(source, task, **kw)
    monkeypatch.setattr(setup_mod, "load_model", no_teacher)
    with FakeServe(protocol=protocol, name=str(EVERYDAY_GPT)) as s:
        stages: list[str] = []
        result = run_training(config(s.endpoint),
                              lambda e: stages.append(e.name) if isinstance(e, Stage) else None)
        assert result.status == "finished", result
        summary = result.summary
        assert summary["teacher_targets"]["teacher_weights"] == "never loaded"
        assert stages.count("teacher cache") == 1 and stages.count("teacher figures") == 1
        # Perplexity from the label tokens' log-probabilities: the local teacher's own figure.
        served, local = summary["teacher_metrics"], live.summary["teacher_metrics"]
        assert served["perplexity"] == pytest.approx(local["perplexity"], rel=1e-4)
        # Entropy over the top 20 and one bucket for the rest: a lower bound of the full one.
        assert 0 < served["entropy"] < local["entropy"]
        assert summary["teacher_latency_ms"] is None and summary["speedup"] is None
        assert summary["teacher_params"] == live.summary["teacher_params"]
        (info,) = list_caches()  # one cache: the evaluation answers are its part
        assert (info.path / "evaluation").is_dir()
        asked = len(s.log)
        again = run_training(config(s.endpoint))
        assert again.summary["teacher_metrics"] == served
        assert not [r for r in s.log[asked:] if r[1] in ("/v1/completions", "/generate")]
