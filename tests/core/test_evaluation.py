import math

import pytest
import torch

from kdstudio.core.evaluation import (
    classification_metrics,
    embedding_metrics,
    headline_for,
    knn_accuracy,
    quality_retained,
    spearman,
)


def test_spearman_rank_facts():
    x = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3])
    assert spearman(x, x) == pytest.approx(1.0)
    assert spearman(x, x ** 3 + 7) == pytest.approx(1.0)  # any increasing transform
    assert spearman(x, -x) == pytest.approx(-1.0)
    # hand-computed: ranks a=[0,1,2,3], b=[1,0,3,2] -> 1 - 6*4/(4*15) = 0.6
    assert spearman(torch.tensor([1., 2., 3., 4.]), torch.tensor([2., 1., 4., 3.])) == pytest.approx(0.6)


def testclassification_metrics_metrics_by_hand():
    pred = torch.tensor([0, 0, 1, 1, 2])
    gold = torch.tensor([0, 1, 1, 1, 0])
    m = classification_metrics(pred, gold)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # per class F1: c0: tp1 fp1 fn1 -> 0.5; c1: tp2 fp0 fn1 -> 0.8; c2: tp0 fp1 -> 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def testknn_accuracy_by_hand():
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert knn_accuracy(emb, torch.tensor([0, 0, 1, 1])) == 1.0
    assert knn_accuracy(emb, torch.tensor([0, 1, 0, 1])) == 0.0


def testembedding_metrics_identity_and_noise():
    torch.manual_seed(0)
    t = torch.randn(30, 8)
    same = embedding_metrics(t.clone(), t, None)
    assert same["cosine_to_teacher"] == pytest.approx(1.0, abs=1e-6)
    assert same["neighbour_agreement"] == 1.0 and same["spearman"] == pytest.approx(1.0)
    noisy = embedding_metrics(t + 2 * torch.randn(30, 8), t, torch.arange(30) % 3)
    assert noisy["cosine_to_teacher"] < 0.9 and noisy["spearman"] < 0.9
    assert 0 <= noisy["knn_accuracy"] <= 1


def test_quality_retained():
    assert quality_retained("perplexity", {"perplexity": 10.0}, {"perplexity": 12.5}) \
        == pytest.approx(0.8)
    assert quality_retained("accuracy", {"accuracy": 0.9},
                            {"accuracy": 0.81}) == pytest.approx(0.9)
    assert quality_retained("cosine_to_teacher", {},
                            {"cosine_to_teacher": 0.93}) == pytest.approx(0.93)
    assert quality_retained("accuracy", {"accuracy": 0.0},
                            {"accuracy": 0.5}) is None  # no division by zero
    assert headline_for("sentence-embedding", False) == ("cosine_to_teacher", True)
    assert headline_for("causal-lm", False) == ("perplexity", False)
    assert math.isfinite(quality_retained("perplexity", {"perplexity": 3.0},
                                          {"perplexity": 4.0}))


def test_latencies_take_turns_and_restore_modes(tiny):
    from kdstudio.core.evaluation import time_forwards
    from kdstudio.core.models import load_model

    a = load_model(str(tiny["bert"]), "sentence-embedding")
    b = load_model(str(tiny["bert-wide"]), "sentence-embedding")
    a.model.train()
    b.model.eval()
    enc = a.tokenizer(["A short sentence to time."], return_tensors="pt")
    calls = []
    for m, name in ((a.model, "a"), (b.model, "b")):
        m.register_forward_hook(lambda *args, n=name: calls.append(n))
    session = time_forwards({"a": (a.model, dict(enc)), "b": (b.model, dict(enc))},
                            "sentence-embedding", device=torch.device("cpu"), repeats=3, warmup=1)
    assert session.repeats == 3 and all(session.latency(n).median_ms > 0 for n in "ab")
    assert calls == ["a", "b"] * 4  # alternating, warm-up included
    assert a.model.training and not b.model.training
