import pytest

from kdstudio.core import events as ev
from kdstudio.core.compare import Comparer, GenerationSettings
from kdstudio.core.errors import KDStudioError, RunError
from kdstudio.core.trainer import run_training
from tests.conftest import tiny_config


def _run(cfg):
    seen = []
    result = run_training(cfg, seen.append)
    return result, seen


def test_causal_lm_side_by_side_and_pinned(tiny):
    cfg = tiny_config("causal-lm", tiny["gpt2"], evaluation={"pinned_inputs": ["The weather", "A cup of"]})
    result, seen = _run(cfg)
    evals = [e for e in seen if isinstance(e, ev.Eval)]
    assert len(evals) >= 3 and all(len(e.samples) == 2 for e in evals)
    assert evals[0].samples[0]["input"] == "The weather" and "teacher" in evals[0].samples[0]
    c = Comparer.from_run(result.run_dir, device="cpu")
    gen = GenerationSettings(max_new_tokens=6, temperature=0.0, seed=1)
    a = c.compare("Rain is expected", gen)
    b = c.compare("Rain is expected", gen)
    assert a.student.text == b.student.text  # greedy decoding is repeatable
    assert a.teacher.latency_ms > 0 and a.student.tokens_per_s > 0
    sampled = [c.compare("Rain is expected", GenerationSettings(max_new_tokens=6, temperature=1.0,
                                                                  seed=s)).student.text for s in (1, 1)]
    assert sampled[0] == sampled[1]  # same seed, same sample
    t = c.table()
    assert t["parameters"][1] < t["parameters"][0] and t["speedup"] > 0
    with pytest.raises(KDStudioError, match="input is empty"):
        c.compare("  ")


def test_classification_probabilities(tiny):
    result, _ = _run(tiny_config("sequence-classification", tiny["bert"]))
    c = Comparer.from_run(result.run_dir, device="cpu")
    out = c.compare("The striker scored twice in the second half.")
    for answer in (out.teacher, out.student):
        probs = [p for _, p in answer.probabilities]
        assert len(probs) == 10 and abs(sum(probs) - 1) < 1e-4 and probs == sorted(probs, reverse=True)
        assert {n for n, _ in answer.probabilities} >= {"sport", "food"}


def test_embedding_neighbours(tiny):
    result, seen = _run(tiny_config("sentence-embedding", tiny["bert"],
                                    evaluation={"pinned_inputs": ["Snow is on the way."]}))
    assert [e for e in seen if isinstance(e, ev.Eval)][-1].samples[0]["student"]
    c = Comparer.from_run(result.run_dir, device="cpu")
    out = c.compare("Snow is forecast for the hills tonight.")
    for answer in (out.teacher, out.student):
        assert len(answer.neighbours) == 3
        cos = [x for _, x in answer.neighbours]
        assert cos == sorted(cos, reverse=True) and all(-1.0001 <= x <= 1.0001 for x in cos)


def test_run_without_student(tmp_path):
    (tmp_path / "config.toml").write_text("")
    with pytest.raises(RunError, match="no saved student"):
        Comparer.from_run(tmp_path)
