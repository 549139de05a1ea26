"""The language-model evaluation's entropy figure, which the health watch compares between
student and teacher: computed chunk by chunk over the head, it equals the entropy of the
whole logits, and a language model's evaluation reports it for both models."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdstudio.core.chunked_eval import chunked_token_logprobs

N, H, V = 37, 16, 101


def _rows(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, dtype=torch.float64)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.5
    labels = torch.randint(0, V, (N,), generator=g)
    return hidden, weight, labels


@pytest.mark.parametrize("chunk", [8, 10, 64])
def test_the_chunked_entropy_is_the_entropy_of_the_whole_logits(chunk):
    hidden, weight, labels = _rows()
    t_hidden, t_weight, _ = _rows(1)
    got = chunked_token_logprobs(hidden, weight, labels, teacher_hidden=t_hidden,
                                 teacher_weight=t_weight, chunk_size=chunk)
    for h, w, ent in ((hidden, weight, got.student_entropy),
                      (t_hidden, t_weight, got.teacher_entropy)):
        logp = F.log_softmax(h @ w.T, -1)
        torch.testing.assert_close(ent, -(logp.exp() * logp).sum(-1))
    alone = chunked_token_logprobs(hidden, weight, labels, chunk_size=chunk)
    torch.testing.assert_close(alone.student_entropy, got.student_entropy)
    assert alone.teacher_entropy is None


def test_entropy_is_log_v_for_a_flat_prediction_and_0_for_a_certain_one():
    labels = torch.zeros(2, dtype=torch.long)
    # A zero head gives equal logits (entropy log V); a -inf-free but huge logit gap gives a
    # prediction whose entropy underflows to 0, never NaN.
    flat = chunked_token_logprobs(torch.zeros(2, H), torch.zeros(V, H), labels)
    torch.testing.assert_close(flat.student_entropy, torch.full((2,), math.log(V)))
    bias = torch.full((V,), -1e4)
    bias[3] = 0.0
    sure = chunked_token_logprobs(torch.zeros(2, H), torch.zeros(V, H), labels,
                                  student_bias=bias)
    assert torch.equal(sure.student_entropy, torch.zeros(2))


@pytest.mark.slow
def test_a_language_models_evaluation_reports_both_entropies(tiny, monkeypatch):
    from kdstudio.core.evaluation import EvalSet, Evaluator
    from kdstudio.core.models import load_model
    from kdstudio.core.tasks import base, get_task
    from tests.conftest import corpus_texts

    task = get_task("causal-lm")
    teacher = load_model(str(tiny["gpt2"]), "causal-lm")
    student = load_model(str(tiny["llama"]), "causal-lm")
    ev = Evaluator("causal-lm", EvalSet("causal-lm", corpus_texts(24), None, max_samples=0,
                                        max_length=32, pack=True, batch_size=8),
                   teacher.model.eval(), teacher.tokenizer, teacher.tokenizer,
                   torch.device("cpu"))
    s, t = ev.student_metrics(student.model), ev.teacher_metrics()
    # Tiny random models predict nearly flat distributions over the tokenizer's vocabulary:
    # an entropy just under log V, and never above it.
    v = len(teacher.tokenizer)
    for e in (s["entropy"], t["entropy"]):
        assert 0.9 * math.log(v) < e <= math.log(v) + 1e-4
    # Heads that are more than a linear map take the whole-logits path: the same figures.
    monkeypatch.setattr(base, "plain_head", lambda model: None)
    assert ev.student_metrics(student.model)["entropy"] == pytest.approx(s["entropy"], rel=1e-5)
    assert task.teacher_metrics(ev)["entropy"] == pytest.approx(t["entropy"], rel=1e-5)
