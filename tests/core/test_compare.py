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


@pytest.mark.slow
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


@pytest.mark.slow
def test_classification_probabilities(tiny):
    result, _ = _run(tiny_config("sequence-classification", tiny["bert"]))
    c = Comparer.from_run(result.run_dir, device="cpu")
    out = c.compare("The striker scored twice in the second half.")
    for answer in (out.teacher, out.student):
        probs = [p for _, p in answer.probabilities]
        assert len(probs) == 10 and abs(sum(probs) - 1) < 1e-4 and probs == sorted(probs, reverse=True)
        assert {n for n, _ in answer.probabilities} >= {"sport", "food"}


@pytest.mark.slow
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


# -- token by token, and peak memory ---------------------------------------------------------

def _predictor(folder):
    import torch

    from kdstudio.core.compare import Predictor
    from kdstudio.core.models import load_model

    m = load_model(str(folder), "causal-lm")
    return Predictor(m.model, m.tokenizer, "causal-lm", device=torch.device("cpu"), max_length=32)


def test_token_view_of_identical_models_shows_no_disagreement(tiny):
    from kdstudio.core.compare import token_probabilities

    t = _predictor(tiny["gpt2"])
    prompt, cont = "The weather today", " is sunny and warm."
    view = token_probabilities(t, t, prompt, cont)
    assert view.text == prompt + cont  # the tokens' pieces join back to the text
    assert t.tok.decode([r.token_id for r in view.tokens]) == prompt + cont
    assert [r.in_prompt for r in view.tokens] == sorted((r.in_prompt for r in view.tokens), reverse=True)
    assert any(r.in_prompt for r in view.tokens) and not view.tokens[-1].in_prompt
    for r in view.tokens:  # a start token gives even the first token a probability
        assert 0 < r.p_teacher <= 1 and r.p_teacher == pytest.approx(r.p_student)
        assert r.kl == pytest.approx(0.0, abs=1e-6) and r.log_ratio == pytest.approx(0.0, abs=1e-6)
        assert r.teacher_top == r.student_top
    assert view.top == [] and view.mean_kl == pytest.approx(0.0, abs=1e-6) and not view.truncated


def test_token_view_of_a_different_student_ranks_its_disagreements(tiny):
    import math

    import torch

    from kdstudio.core.compare import token_probabilities

    t, s = _predictor(tiny["gpt2"]), _predictor(tiny["gpt2-padded"])  # same tokenizer, other weights
    view = token_probabilities(t, s, "A cup of tea, please.", top_k=3)
    assert len(view.top) == 3 and view.mean_kl > 0
    kls = [view.tokens[i].kl for i in view.top]
    assert kls == sorted(kls, reverse=True) and kls[0] == max(r.kl for r in view.tokens)
    # The figures are the models' own: recompute one position by hand.
    i = view.top[0]
    ids = [t.tok.eos_token_id] + [r.token_id for r in view.tokens]
    x = torch.tensor([ids])
    v = len(t.tok)
    with torch.no_grad():
        lt = t.model(input_ids=x).logits[0, i, :v].log_softmax(-1)
        ls = s.model(input_ids=x).logits[0, i, :v].log_softmax(-1)
    r = view.tokens[i]
    assert r.p_teacher == pytest.approx(math.exp(lt[r.token_id]), rel=1e-4)
    assert r.p_student == pytest.approx(math.exp(ls[r.token_id]), rel=1e-4)
    assert r.kl == pytest.approx(float((lt.exp() * (lt - ls)).sum()), rel=1e-4)
    assert r.log_ratio == pytest.approx(float(lt[r.token_id] - ls[r.token_id]), rel=1e-4, abs=1e-6)


def test_token_view_cuts_long_texts_to_the_context_and_names_other_tokenizers(tiny):
    from kdstudio.core.compare import token_probabilities
    from kdstudio.core.errors import CompatibilityError

    t = _predictor(tiny["gpt2"])  # 64 positions
    view = token_probabilities(t, t, "The train to the coast leaves at noon. " * 20)
    assert view.truncated and len(view.tokens) == 63  # plus the start token
    with pytest.raises(CompatibilityError, match="different tokenizers") as err:
        token_probabilities(t, _predictor(tiny["gpt2-othertok"]), "The weather")
    assert "shares the teacher's tokenizer" in err.value.hint
    with pytest.raises(KDStudioError, match="empty"):
        token_probabilities(t, t, "   ")


def test_peak_memory_is_measured_on_the_cpu_and_labelled(tiny):
    import sys

    from kdstudio.core.compare import peak_rss_mb, reset_peak_rss

    t = _predictor(tiny["gpt2"])
    answer = t.answer("The weather", GenerationSettings(max_new_tokens=4))
    if sys.platform.startswith("linux") and reset_peak_rss():
        assert answer.memory_scope == "process" and answer.peak_memory_mb > 10
        assert peak_rss_mb() <= answer.peak_memory_mb * 2  # reset again: the peak starts over
        big = bytearray(200 * 2**20)  # 200 MiB, touched
        big[::4096] = b"x" * len(big[::4096])
        assert peak_rss_mb() >= 200
        del big
    else:
        assert answer.peak_memory_mb is None and answer.memory_scope == ""


def test_answers_during_training_leave_the_peak_memory_alone(tiny):
    """Pinned inputs answer with measure_memory=False: resetting the process's peak would also
    reset the peak the training loop reports."""
    from kdstudio.core import compare

    t = _predictor(tiny["gpt2"])
    t.measure_memory = False
    resets = []
    real = compare.reset_peak_rss
    compare.reset_peak_rss = lambda: resets.append(1) or real()
    try:
        answer = t.answer("The weather", GenerationSettings(max_new_tokens=2))
    finally:
        compare.reset_peak_rss = real
    assert resets == [] and answer.peak_memory_mb is None and answer.memory_scope == ""
