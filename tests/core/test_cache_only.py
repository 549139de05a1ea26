"""Runs the teacher cache covers: the teacher's weights are never read, the student is measured
against the teacher's cached answers, and the teacher's figures come from the pass that wrote
the cache."""

import os
import shutil

import pytest
import torch

from kdstudio.core import events as ev
from kdstudio.core import setup as setup_mod
from kdstudio.core.teacher_cache import list_caches
from kdstudio.core.teacher_source import covering_on_disk
from kdstudio.core.trainer import run_training
from tests.conftest import tiny_config
from tests.core.test_trainer import Recorder


def cache_only_config(teacher, student, **sections):
    cfg = tiny_config("causal-lm", teacher, student={"name": str(student)},
                      evaluation={"max_samples": 16, "latency_repeats": 1,
                                  "pinned_inputs": ["The museum"]},
                      **{"training": {"max_steps": 3, "eval_every": 0}, **sections})
    cfg.method.hard_label_weight = 0.5
    cfg.teacher.cache = "always"
    return cfg


def spoil_weights(folder):
    """Every weight becomes NaN (0xFF bytes) while the file keeps its size, safetensors header
    and mtime, so the cache key still matches: a teacher that loaded would be refused."""
    f = folder / "model.safetensors"
    st = f.stat()
    with open(f, "r+b") as fh:
        header = 8 + int.from_bytes(fh.read(8), "little")
        fh.seek(header)
        fh.write(b"\xff" * (st.st_size - header))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.slow
def test_a_covered_run_never_loads_the_teacher(tiny, tmp_path, monkeypatch):
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny["gpt2"], teacher)
    cfg = cache_only_config(teacher, tiny["llama"])

    assert not covering_on_disk(cfg)
    first = Recorder()
    r1 = run_training(cfg, first)
    assert r1.status == "finished"
    s1 = r1.summary
    assert any("its weights are let go after its pass" in e.message for e in first.of(ev.Log))
    assert s1["teacher_metrics"]["perplexity"] > 1 and s1["teacher_latency_ms"] > 0
    assert s1["teacher_targets"]["teacher_weights"] == "let go after its pass"
    # One stage for the training rows' pass, one for the teacher's figures; one cache, with
    # the evaluation answers as its part (listed, counted and deleted with it).
    stages = [s.name for s in first.of(ev.Stage)]
    assert stages.count("teacher cache") == 1 and stages.count("teacher figures") == 1
    (info,) = list_caches()
    part = next((info.path / "evaluation").iterdir())
    assert (part / "manifest.json").is_file()
    assert info.size_bytes > sum(f.stat().st_size for f in info.path.iterdir() if f.is_file())
    # What the memory estimate asks, from the manifests alone: this run's length is covered,
    # another length is not.
    assert covering_on_disk(cfg)
    longer = cache_only_config(teacher, tiny["llama"], data={"max_length": 24})
    assert not covering_on_disk(longer)

    spoil_weights(teacher)
    real_load = setup_mod.load_model

    def no_teacher(source, task, **kw):
        assert kw.get("role") != "teacher", "the teacher's weights were loaded"
        return real_load(source, task, **kw)
    monkeypatch.setattr(setup_mod, "load_model", no_teacher)

    second = Recorder()
    r2 = run_training(cfg, second)
    assert r2.status == "finished"
    s2 = r2.summary
    logs = [e.message for e in second.of(ev.Log)]
    assert any(m.startswith("Teacher: not loaded") for m in logs)
    assert not {"teacher cache", "teacher figures"} & {s.name for s in second.of(ev.Stage)}
    assert s2["teacher_targets"]["teacher_weights"] == "never loaded"
    assert [c.used_by for c in list_caches()] == [[r1.run_dir.name, r2.run_dir.name]]
    # The teacher's figures are the first pass's, and the student, trained on the same cached
    # answers from the same seed, measures the same against them.
    assert s2["teacher_metrics"] == s1["teacher_metrics"]
    assert s2["teacher_latency_ms"] == s1["teacher_latency_ms"]
    assert s2["teacher_params"] == s1["teacher_params"]
    for key in ("perplexity", "top1_agreement", "kl_to_teacher"):
        assert s2["student_metrics"][key] == pytest.approx(s1["student_metrics"][key], rel=1e-5)
    pinned = second.of(ev.Eval)[-1].samples
    assert pinned[0]["teacher"] == first.of(ev.Eval)[-1].samples[0]["teacher"]


def test_cached_answers_measure_as_the_live_teacher_does(tiny):
    """With k = the whole vocabulary the cached answers differ from the live teacher only by
    the cache's quantization: agreement is the same and KL within it."""
    from kdstudio.core.cached_teacher import CachedAnswers
    from kdstudio.core.evaluation import EvalSet, Evaluator
    from kdstudio.core.models import load_model
    from kdstudio.core.tasks.causal_lm import _token_stats
    from kdstudio.core.teacher_cache.store import TeacherCache
    from kdstudio.core.teacher_source import write_cache

    torch.manual_seed(0)
    teacher = load_model(str(tiny["gpt2"]), "causal-lm", role="teacher")
    student = load_model(str(tiny["llama"]), "causal-lm", role="student").model
    tok = teacher.tokenizer
    texts = ["The museum opens at nine and closes at five on weekdays.",
             "Our local bakery sells bread, cakes and small pies every morning.",
             "Is it worth taking the train to the coast for one day?"] * 3
    es = EvalSet("causal-lm", texts, None, max_samples=0, max_length=16, pack=True, batch_size=4)
    evr = Evaluator("causal-lm", es, teacher.model, tok, tok, torch.device("cpu"),
                    vocab_size=len(tok))
    from kdstudio.core.tasks import get_task

    task = get_task("causal-lm")
    _, make = task.batch_maker(texts, None, student_tok=tok, teacher_tok=tok, same_tok=True,
                               max_length=16, pack=True, device="cpu")
    parts = {"teacher": "t", "revision": "", "weights": "w", "tokenizer": "tok", "data": "d",
             "token_ids": make.cache_rows, "max_length": 16, "pack": True, "k": len(tok),
             "dtype": "float32"}
    from contextlib import nullcontext

    path = write_cache(parts, make.cache_rows, make, teacher.model, task, len(tok),
                       batch_size=4, autocast=nullcontext, emit=lambda e: None, stop=None)
    answers = CachedAnswers(TeacherCache(path), evr.teacher_batches, es.batch_size)
    for b in evr.teacher_batches:
        live = _token_stats(evr, student, b, teacher=teacher.model)
        cached = answers.stats(evr, student, b)
        assert cached.count == live.count
        torch.testing.assert_close(cached.student_nll, live.student_nll, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cached.student_entropy, live.entropy, rtol=1e-5, atol=1e-5)
        assert torch.equal(cached.agree, live.agree)
        # Per entry the log-probs are stored to about 0.015 nats (the record format's bound
        # at a 1-nat gap); the KL moves by no more than that times the teacher's mass.
        torch.testing.assert_close(cached.kl, live.kl, rtol=0, atol=0.02)


def test_the_memory_estimate_counts_a_cache_only_run_as_the_student_alone():
    from kdstudio.core.config import default_config
    from kdstudio.core.plan.memory import MB, cache_only, estimate_memory

    cfg = default_config("causal-lm")
    cfg.training.batch_size, cfg.data.max_length, cfg.training.device = 4, 512, "cpu"

    def needed(teacher_params, **teacher):
        for k, v in teacher.items():
            setattr(cfg.teacher, k, v)
        return estimate_memory(cfg, teacher_params, 500_000_000, 1024, 24, "cpu",
                               vocab_size=32_000, available_mb=1e9)

    # A served teacher: its size changes nothing, its weights are 0 MB.
    served_small = needed(1_000_000_000, endpoint="http://127.0.0.1:8000/v1", cache="auto")
    assert cache_only(cfg)
    served_huge = needed(70_000_000_000)
    assert served_huge.parts["teacher weights"] == 0 and served_huge.needed_mb == served_small.needed_mb
    # A local teacher cache: the steps hold the student alone; a 70B teacher's own pass (its
    # weights, 70e9 x 4 bytes) is what the run then needs, never both at once.
    local = needed(70_000_000_000, endpoint="", cache="always")
    assert local.parts["teacher weights"] == 0
    assert local.needed_mb == pytest.approx(1.1 * (600 + (70e9 * 4 + 500e6 * 4
                                                          + 4 * 512 * 1024 * 8 * 4) / MB))
    # A 1B teacher's pass is smaller than the student's steps: the steps decide.
    small = needed(1_000_000_000)
    assert small.needed_mb == pytest.approx(1.1 * sum(small.parts.values()))
    # Hidden-layer distillation reads the live teacher: its weights count.
    cfg.method.hidden_weight = 1.0
    assert not cache_only(cfg) and needed(1_000_000_000).parts["teacher weights"] > 0
