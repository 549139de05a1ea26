import math

import pytest
import torch

from kdstudio.core.terms.similarity import (
    off_diagonal_cosines,
    similarity_structure_loss,
)

KINDS = ("kl", "mse")


def _pair(b=6, ds=5, dt=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, ds, generator=g), torch.randn(b, dt, generator=g)


@pytest.mark.parametrize("kind", KINDS)
def test_identical_embeddings_give_zero(kind):
    s, _ = _pair()
    assert similarity_structure_loss(s, s.clone(), kind=kind).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_same_structure_in_another_width_gives_zero(kind):
    # An orthonormal map into a wider space keeps every cosine.
    s, _ = _pair(ds=4)
    q, _ = torch.linalg.qr(torch.randn(9, 4, generator=torch.Generator().manual_seed(1)))
    assert similarity_structure_loss(s, s @ q.T, kind=kind).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_invariant_to_scaling_each_embedding(kind):
    s, t = _pair()
    scale_s = torch.tensor([0.1, 2.0, 5.0, 1.0, 30.0, 0.5]).unsqueeze(1)
    scale_t = torch.tensor([3.0, 0.2, 1.0, 7.0, 1.0, 11.0]).unsqueeze(1)
    base = similarity_structure_loss(s, t, kind=kind)
    scaled = similarity_structure_loss(s * scale_s, t * scale_t, kind=kind)
    assert scaled.item() == pytest.approx(base.item(), rel=1e-5)


def test_hand_computed_three_by_two():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # Student cosines: s01 = 0, s02 = s12 = 1/sqrt(2); teacher: t01 = 1, t02 = t12 = 0.
    a = 1 / math.sqrt(2)
    # mse: the six off-diagonal cells hold (0-1)^2 twice and (a-0)^2 four times.
    mse = (2 * 1.0 + 4 * a * a) / 6
    assert similarity_structure_loss(s, t, kind="mse").item() == pytest.approx(mse, rel=1e-6)
    # kl at T = 1: rows 0 and 1 see teacher (1, 0) against student (0, a); row 2 is uniform
    # in both models and adds 0.
    p, q = math.e / (math.e + 1), 1 / (math.e + 1)
    z = math.log(1 + math.exp(a))
    row = p * (math.log(p) + z) + q * (math.log(q) - a + z)
    kl = similarity_structure_loss(s, t, kind="kl", temperature=1.0)
    assert kl.item() == pytest.approx(2 * row / 3, rel=1e-6)
    # A temperature divides the cosines: T = 0.5 equals T = 1 on doubled cosines.
    p2, q2 = math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)
    z2 = math.log(1 + math.exp(2 * a))
    row2 = p2 * (math.log(p2) + z2) + q2 * (math.log(q2) - 2 * a + z2)
    kl2 = similarity_structure_loss(s, t, kind="kl", temperature=0.5)
    assert kl2.item() == pytest.approx(2 * row2 / 3, rel=1e-6)


def test_kl_equals_torch_kl_div_on_the_off_diagonal_rows():
    s, t = _pair(b=8)
    tau = 0.1
    log_s = torch.log_softmax(off_diagonal_cosines(s) / tau, -1)
    log_t = torch.log_softmax(off_diagonal_cosines(t) / tau, -1)
    want = torch.nn.functional.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    got = similarity_structure_loss(s, t, kind="kl", temperature=tau)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_off_diagonal_cosines_leaves_out_the_diagonal():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    assert off_diagonal_cosines(e).tolist() == [[0.0, -1.0], [0.0, 0.0], [-1.0, 0.0]]


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_flows_to_the_student_only(kind):
    s, t = _pair()
    s.requires_grad_(True)
    loss = similarity_structure_loss(s, t, kind=kind, temperature=0.1)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_same_permutation_of_both_batches_gives_the_same_loss(kind):
    s, t = _pair(b=7)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    a = similarity_structure_loss(s, t, kind=kind, temperature=0.1)
    b = similarity_structure_loss(s[perm], t[perm], kind=kind, temperature=0.1)
    assert b.item() == pytest.approx(a.item(), rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_different_structure_gives_a_positive_loss(kind):
    s, t = _pair()
    assert similarity_structure_loss(s, t, kind=kind).item() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_one_gives_a_zero_connected_to_the_graph(kind):
    s = torch.randn(1, 4, requires_grad=True)
    loss = similarity_structure_loss(s, torch.randn(1, 6), kind=kind)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert s.grad is not None and (s.grad == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_two_and_zero_vectors_stay_finite(kind):
    s = torch.zeros(2, 3, requires_grad=True)
    loss = similarity_structure_loss(s, torch.randn(2, 3), kind=kind)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    s4 = torch.randn(4, 3)
    s4[2] = 0.0
    assert torch.isfinite(similarity_structure_loss(s4, torch.randn(4, 5), kind=kind))


def test_half_precision_inputs_give_a_float32_loss():
    s, t = _pair()
    loss = similarity_structure_loss(s.bfloat16(), t.half(), kind="kl")
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(similarity_structure_loss(s, t).item(), rel=0.05)


def test_bad_inputs_name_the_problem():
    s, t = _pair()
    with pytest.raises(ValueError, match="kind must be one of kl, mse"):
        similarity_structure_loss(s, t, kind="angle")
    with pytest.raises(ValueError, match="temperature"):
        similarity_structure_loss(s, t, temperature=0.0)
    with pytest.raises(ValueError, match="same batch size"):
        similarity_structure_loss(s, t[:3])
    with pytest.raises(ValueError, match="batch, dim"):
        similarity_structure_loss(s.unsqueeze(0), t)


def test_similarity_weight_is_only_for_sentence_embeddings():
    from kdstudio.core.config import default_config
    from kdstudio.core.errors import ConfigError

    cfg = default_config("sentence-embedding")
    cfg.method.embedding_weight, cfg.method.similarity_weight = 0.0, 1.0
    cfg.validate()  # the relational term alone is enough to learn from
    lm = default_config("causal-lm")
    lm.method.similarity_weight = 1.0
    with pytest.raises(ConfigError, match="method.similarity_weight"):
        lm.validate()


def test_run_with_the_similarity_term_and_a_narrower_student(tiny):
    from kdstudio.core import events as ev
    from kdstudio.core.trainer import run_training
    from tests.conftest import tiny_config

    cfg = tiny_config("sentence-embedding", tiny["bert"],
                      student={"layers": 2.0, "hidden_size": 16},
                      method={"similarity_weight": 1.0, "similarity_temperature": 0.1})
    steps = []
    run_training(cfg, lambda e: steps.append(e) if isinstance(e, ev.Step) else None)
    assert steps and set(steps[0].losses) == {"embedding", "similarity", "total"}
    assert all(math.isfinite(s.losses["similarity"]) for s in steps)


def test_the_term_module_is_the_whole_method():
    """Found in core/terms: its term joins the objective for sentence encoders only, and its
    settings join [method] with their help text and rules."""
    import dataclasses

    from kdstudio.core.config import MethodConfig, config_from_dict
    from kdstudio.core.config_reference import config_reference_markdown
    from kdstudio.core.errors import ConfigError
    from kdstudio.core.objective import all_terms, terms_for
    from kdstudio.core.tasks import CAUSAL_LM, EMBEDDING

    assert "similarity" in [t.name for t in all_terms()]
    assert [t.name for t in terms_for(EMBEDDING)][-1] == "similarity"
    assert "similarity" not in [t.name for t in terms_for(CAUSAL_LM)]
    fields = {f.name: f for f in dataclasses.fields(MethodConfig)}
    assert fields["similarity_weight"].default == 0.0
    assert "`method.similarity_temperature`" in config_reference_markdown()
    with pytest.raises(ConfigError, match="method.similarity_loss is 'cosine'.*'kl', 'mse'"):
        config_from_dict({"task": "sentence-embedding", "method": {"similarity_loss": "cosine"}})
