"""Tests for kdstudio.core.losses: each loss against its formula on checkable values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdstudio.core.losses import (
    EMBEDDING_LOSSES,
    HIDDEN_LOSSES,
    LOGIT_LOSSES,
    embedding_loss,
    hard_label_loss,
    hidden_state_loss,
    logit_distillation_loss,
    mean_pool,
)


def _logits_of(probs):
    """Logits whose softmax is exactly ``probs`` (rows of a list of lists)."""
    return torch.log(torch.tensor(probs, dtype=torch.float64))


def _kl(p, q):
    """KL(p || q) for plain Python lists of probabilities."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    z = sum(e)
    return [v / z for v in e]


def _reference_forward_kl(s, t, temperature):
    # F.kl_div(input, target) computes KL(target || input).
    n = s.shape[:-1].numel()
    kl = F.kl_div(
        F.log_softmax(s / temperature, dim=-1),
        F.log_softmax(t / temperature, dim=-1),
        log_target=True,
        reduction="sum",
    )
    return kl / n * temperature**2


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 6, 11, generator=g, dtype=torch.float64)
    t = torch.randn(4, 6, 11, generator=g, dtype=torch.float64) * 2
    return s, t


# --------------------------------------------------------------------------- constants


def test_public_constants():
    assert LOGIT_LOSSES == ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl")
    assert HIDDEN_LOSSES == ("mse", "cosine")
    assert EMBEDDING_LOSSES == ("mse", "cosine", "mse+cosine")


# --------------------------------------------------------------------------- logit losses


@pytest.mark.parametrize("loss", LOGIT_LOSSES)
def test_identical_logits_give_zero(loss, pair):
    s, _ = pair
    value = logit_distillation_loss(s, s.clone(), loss=loss, temperature=2.0, alpha=0.3)
    assert value.dim() == 0
    assert value.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("loss", LOGIT_LOSSES)
def test_different_logits_give_positive_loss(loss, pair):
    s, t = pair
    value = logit_distillation_loss(s, t, loss=loss, alpha=0.3)
    assert value.item() > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_forward_kl_matches_kl_div(pair, temperature):
    s, t = pair
    got = logit_distillation_loss(s, t, loss="forward_kl", temperature=temperature)
    expected = _reference_forward_kl(s, t, temperature)
    torch.testing.assert_close(got, expected)


def test_forward_kl_default_and_classification_shape():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 3, generator=g)
    t = torch.randn(5, 3, generator=g)
    got = logit_distillation_loss(s, t)  # defaults: forward_kl, T=1
    torch.testing.assert_close(got, _reference_forward_kl(s, t, 1.0))


def test_forward_kl_hand_value():
    t_p, s_p = [0.2, 0.8], [0.6, 0.4]
    got = logit_distillation_loss(_logits_of([s_p]), _logits_of([t_p]), loss="forward_kl")
    assert got.item() == pytest.approx(_kl(t_p, s_p), rel=1e-12)


def test_reverse_kl_is_forward_kl_swapped(pair):
    s, t = pair
    reverse = logit_distillation_loss(s, t, loss="reverse_kl", temperature=1.5)
    forward_swapped = logit_distillation_loss(t, s, loss="forward_kl", temperature=1.5)
    forward = logit_distillation_loss(s, t, loss="forward_kl", temperature=1.5)
    torch.testing.assert_close(reverse, forward_swapped)
    # KL is not symmetric on these inputs, so the two directions must differ.
    assert abs(reverse.item() - forward.item()) > 1e-3


def test_jsd_endpoints_equal_forward_and_reverse(pair):
    s, t = pair
    fwd = logit_distillation_loss(s, t, loss="forward_kl", temperature=2.0)
    rev = logit_distillation_loss(s, t, loss="reverse_kl", temperature=2.0)
    torch.testing.assert_close(logit_distillation_loss(s, t, loss="jsd", beta=0.0, temperature=2.0), fwd)
    torch.testing.assert_close(logit_distillation_loss(s, t, loss="jsd", beta=1.0, temperature=2.0), rev)


def test_jsd_half_hand_value():
    t_p, s_p = [0.2, 0.8], [0.6, 0.4]
    m = [0.5 * a + 0.5 * b for a, b in zip(t_p, s_p)]  # [0.4, 0.6]
    expected = 0.5 * _kl(t_p, m) + 0.5 * _kl(s_p, m)
    got = logit_distillation_loss(_logits_of([s_p]), _logits_of([t_p]), loss="jsd", beta=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # JSD at 0.5 is bounded by log 2.
    assert 0.0 < got.item() < math.log(2)


def test_jsd_general_beta_hand_value():
    beta = 0.3
    t_p, s_p = [0.1, 0.3, 0.6], [0.5, 0.25, 0.25]
    m = [beta * a + (1 - beta) * b for a, b in zip(t_p, s_p)]
    expected = beta * _kl(t_p, m) + (1 - beta) * _kl(s_p, m)
    got = logit_distillation_loss(_logits_of([s_p]), _logits_of([t_p]), loss="jsd", beta=beta)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_jsd_symmetric_at_half(pair):
    s, t = pair
    a = logit_distillation_loss(s, t, loss="jsd", beta=0.5)
    b = logit_distillation_loss(t, s, loss="jsd", beta=0.5)
    torch.testing.assert_close(a, b)
    # And not symmetric away from 0.5, so the check above means something.
    c = logit_distillation_loss(s, t, loss="jsd", beta=0.2)
    d = logit_distillation_loss(t, s, loss="jsd", beta=0.2)
    assert abs(c.item() - d.item()) > 1e-4


def test_skew_kl_endpoints(pair):
    s, t = pair
    fwd = logit_distillation_loss(s, t, loss="forward_kl")
    torch.testing.assert_close(logit_distillation_loss(s, t, loss="skew_kl", alpha=0.0), fwd)
    assert logit_distillation_loss(s, t, loss="skew_kl", alpha=1.0).item() == pytest.approx(0.0, abs=1e-12)


def test_skew_reverse_kl_endpoints(pair):
    s, t = pair
    rev = logit_distillation_loss(s, t, loss="reverse_kl")
    torch.testing.assert_close(logit_distillation_loss(s, t, loss="skew_reverse_kl", alpha=0.0), rev)
    assert logit_distillation_loss(s, t, loss="skew_reverse_kl", alpha=1.0).item() == pytest.approx(
        0.0, abs=1e-12
    )


def test_skew_hand_values():
    alpha = 0.1
    t_p, s_p = [0.2, 0.8], [0.6, 0.4]
    s, t = _logits_of([s_p]), _logits_of([t_p])
    mix_t = [alpha * a + (1 - alpha) * b for a, b in zip(t_p, s_p)]
    mix_s = [alpha * b + (1 - alpha) * a for a, b in zip(t_p, s_p)]
    got = logit_distillation_loss(s, t, loss="skew_kl", alpha=alpha)
    assert got.item() == pytest.approx(_kl(t_p, mix_t), rel=1e-12)
    got = logit_distillation_loss(s, t, loss="skew_reverse_kl", alpha=alpha)
    assert got.item() == pytest.approx(_kl(s_p, mix_s), rel=1e-12)


def test_temperature_squared_scaling_explicit():
    s_logits, t_logits = [1.0, 2.0, 0.5], [3.0, -1.0, 0.0]
    temperature = 2.0
    s_p = _softmax([x / temperature for x in s_logits])
    t_p = _softmax([x / temperature for x in t_logits])
    expected = _kl(t_p, s_p) * temperature**2
    got = logit_distillation_loss(
        torch.tensor([s_logits], dtype=torch.float64),
        torch.tensor([t_logits], dtype=torch.float64),
        temperature=temperature,
    )
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # Without the T**2 factor the value would be 4x smaller: make sure that is not what we got.
    assert got.item() != pytest.approx(expected / 4, rel=1e-3)


def test_mean_over_positions_not_sum(pair):
    s, t = pair
    whole = logit_distillation_loss(s, t)
    per_row = [logit_distillation_loss(s[i : i + 1], t[i : i + 1]) for i in range(s.shape[0])]
    torch.testing.assert_close(whole, torch.stack(per_row).mean())


@pytest.mark.parametrize("loss", LOGIT_LOSSES)
def test_mask_excludes_positions(loss, pair):
    s, t = pair
    mask = torch.ones(s.shape[:-1], dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, :] = False
    before = logit_distillation_loss(s, t, loss=loss, mask=mask, alpha=0.3, beta=0.3)

    s2, t2 = s.clone(), t.clone()
    s2[~mask] = 100.0 * torch.randn_like(s2[~mask])
    t2[~mask] = -50.0
    after = logit_distillation_loss(s2, t2, loss=loss, mask=mask, alpha=0.3, beta=0.3)
    torch.testing.assert_close(before, after)

    # And the kept positions alone give the same value.
    alone = logit_distillation_loss(s[mask], t[mask], loss=loss, alpha=0.3, beta=0.3)
    torch.testing.assert_close(before, alone)
    # The unmasked value differs, so the mask did something.
    unmasked = logit_distillation_loss(s2, t2, loss=loss, alpha=0.3, beta=0.3)
    assert abs(unmasked.item() - before.item()) > 1e-3


def test_masked_mean_explicit(pair):
    s, t = pair
    mask = torch.zeros(s.shape[:-1], dtype=torch.bool)
    mask[1, 2] = True
    mask[3, 0] = True
    got = logit_distillation_loss(s, t, mask=mask, temperature=2.0)
    expected = (
        _reference_forward_kl(s[1, 2], t[1, 2], 2.0) + _reference_forward_kl(s[3, 0], t[3, 0], 2.0)
    ) / 2
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("loss", LOGIT_LOSSES)
def test_all_masked_is_zero_with_grad(loss, pair):
    s, t = pair
    s = s.clone().requires_grad_(True)
    mask = torch.zeros(s.shape[:-1], dtype=torch.bool)
    value = logit_distillation_loss(s, t, loss=loss, mask=mask)
    assert value.item() == 0.0
    assert value.grad_fn is not None
    value.backward()
    assert s.grad is not None
    assert torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize("loss", LOGIT_LOSSES)
def test_gradients_flow_to_student(loss, pair):
    s, t = pair
    s = s.clone().requires_grad_(True)
    mask = torch.ones(s.shape[:-1], dtype=torch.bool)
    mask[0, :] = False
    value = logit_distillation_loss(s, t, loss=loss, mask=mask, alpha=0.3, temperature=2.0)
    value.backward()
    assert s.grad is not None
    assert torch.isfinite(s.grad).all()
    assert s.grad[1:].abs().sum() > 0
    # Masked positions get exactly no gradient.
    assert torch.equal(s.grad[0], torch.zeros_like(s.grad[0]))


@pytest.mark.parametrize("loss", LOGIT_LOSSES)
def test_gradcheck(loss):
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True], [True, True, False]])

    def fn(a, b):
        return logit_distillation_loss(a, b, loss=loss, temperature=1.7, beta=0.4, alpha=0.2, mask=mask)

    assert torch.autograd.gradcheck(fn, (s, t))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("loss", LOGIT_LOSSES)
def test_half_precision_inputs(loss, dtype, pair):
    s, t = pair
    s_half = s.to(dtype).requires_grad_(True)
    t_half = t.to(dtype)
    value = logit_distillation_loss(s_half, t_half, loss=loss, temperature=2.0)
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    # Against the float64 computation on the same rounded inputs.
    reference = logit_distillation_loss(s_half.detach().double(), t_half.double(), loss=loss, temperature=2.0)
    assert value.item() == pytest.approx(reference.item(), rel=1e-4)
    value.backward()
    assert s_half.grad is not None and s_half.grad.dtype == dtype
    assert torch.isfinite(s_half.grad.float()).all()


def test_float32_result_for_float32_inputs(pair):
    s, t = pair
    assert logit_distillation_loss(s.float(), t.float()).dtype == torch.float32


@pytest.mark.parametrize("loss", ["forward_kl", "jsd", "skew_kl"])
def test_teacher_minus_inf_logits_are_finite(loss):
    # A teacher that rules a token out (e.g. padded vocabulary) must not produce NaN.
    s = torch.tensor([[0.5, 1.0, -0.3, 0.2]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[1.0, 2.0, 0.0, -math.inf]], dtype=torch.float64)
    value = logit_distillation_loss(s, t, loss=loss, beta=0.5, alpha=0.1)
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(s.grad).all()
    if loss == "forward_kl":
        # The ruled-out token has teacher probability 0 and contributes nothing.
        t_p = _softmax([1.0, 2.0, 0.0]) + [0.0]
        s_p = _softmax([0.5, 1.0, -0.3, 0.2])
        assert value.item() == pytest.approx(_kl(t_p, s_p), rel=1e-12)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"student_logits and teacher_logits.*\(2, 3\).*\(2, 4\)"):
        logit_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_bad_loss_name_raises():
    with pytest.raises(ValueError, match=r"loss must be one of .*forward_kl.*skew_reverse_kl.*'kl'"):
        logit_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), loss="kl")


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan")])
def test_bad_beta_raises(beta):
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
        logit_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), loss="jsd", beta=beta)


@pytest.mark.parametrize("alpha", [-0.5, 2.0])
def test_bad_alpha_raises(alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        logit_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), loss="skew_kl", alpha=alpha)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises(temperature):
    with pytest.raises(ValueError, match=r"temperature must be .*> 0"):
        logit_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=temperature)


def test_bad_mask_raises():
    s = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match=r"mask must have the leading shape \(2, 4\)"):
        logit_distillation_loss(s, s, mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must be a bool tensor"):
        logit_distillation_loss(s, s, mask=torch.ones(2, 4, dtype=torch.long))


# --------------------------------------------------------------------------- hard labels


def test_hard_label_loss_matches_cross_entropy():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 5, 7, generator=g)
    labels = torch.randint(0, 7, (3, 5), generator=g)
    labels[0, :2] = -100
    labels[2, 4] = -100
    got = hard_label_loss(logits, labels)
    expected = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(got, expected)
    # Ignoring positions changes the value, so the ignore path is exercised.
    everything = F.cross_entropy(logits.reshape(-1, 7), labels.clamp(min=0).reshape(-1))
    assert abs(everything.item() - got.item()) > 1e-4


def test_hard_label_loss_classification_and_custom_ignore_index():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([0, 1, -1])
    got = hard_label_loss(logits, labels, ignore_index=-1)
    expected = (
        -math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.exp(1) / (math.exp(1) + 1))
    ) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_hard_label_loss_all_ignored_is_zero_with_grad():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    labels = torch.full((2, 3), -100)
    value = hard_label_loss(logits, labels)
    assert value.item() == 0.0
    assert value.grad_fn is not None
    value.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_hard_label_loss_half_precision():
    logits = torch.randn(4, 6).half().requires_grad_(True)
    labels = torch.tensor([0, 5, 2, 3])
    value = hard_label_loss(logits, labels)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, F.cross_entropy(logits.detach().float(), labels))
    value.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_hard_label_loss_bad_labels_raise():
    with pytest.raises(ValueError, match=r"labels must have the leading shape \(2, 3\)"):
        hard_label_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must be an integer tensor"):
        hard_label_loss(torch.zeros(2, 4), torch.zeros(2))


# --------------------------------------------------------------------------- hidden states


def test_hidden_state_mse_hand_value():
    s = torch.tensor([[[1.0, 2.0], [0.0, 0.0], [9.0, 9.0]]])
    t = torch.tensor([[[1.0, 0.0], [3.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # Position 0: (0 + 4) / 2 = 2; position 1: (9 + 1) / 2 = 5; position 2 masked out.
    got = hidden_state_loss(s, t, kind="mse", mask=mask)
    assert got.item() == pytest.approx(3.5)
    # Without the mask the third position adds (81 + 81) / 2 = 81.
    assert hidden_state_loss(s, t, kind="mse").item() == pytest.approx((2 + 5 + 81) / 3)


def test_hidden_state_cosine_hand_value():
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]])
    t = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])
    # cosines: 1, 1/sqrt(2), -1 -> 1 - cos: 0, 1 - 1/sqrt(2), 2
    mask = torch.tensor([[True, True, False]])
    got = hidden_state_loss(s, t, kind="cosine", mask=mask)
    assert got.item() == pytest.approx((0 + 1 - 1 / math.sqrt(2)) / 2, rel=1e-6)
    got_all = hidden_state_loss(s, t, kind="cosine")
    assert got_all.item() == pytest.approx((0 + 1 - 1 / math.sqrt(2) + 2) / 3, rel=1e-6)


def test_hidden_state_two_dimensional():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    assert hidden_state_loss(s, t).item() == pytest.approx(2.0)  # default kind is mse


def test_hidden_state_masked_positions_ignored_and_all_masked():
    g = torch.Generator().manual_seed(5)
    s = torch.randn(2, 4, 3, generator=g, requires_grad=True)
    t = torch.randn(2, 4, 3, generator=g)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    for kind in HIDDEN_LOSSES:
        before = hidden_state_loss(s, t, kind=kind, mask=mask)
        t2 = t.clone()
        t2[~mask] = 1e6
        after = hidden_state_loss(s, t2, kind=kind, mask=mask)
        torch.testing.assert_close(before, after)
    none = torch.zeros(2, 4, dtype=torch.bool)
    for kind in HIDDEN_LOSSES:
        value = hidden_state_loss(s, t, kind=kind, mask=none)
        assert value.item() == 0.0
        assert value.grad_fn is not None
        value.backward()
        assert torch.equal(s.grad, torch.zeros_like(s))


def test_hidden_state_gradients_flow():
    s = torch.randn(2, 3, 4, requires_grad=True)
    t = torch.randn(2, 3, 4)
    for kind in HIDDEN_LOSSES:
        s.grad = None
        hidden_state_loss(s, t, kind=kind).backward()
        assert s.grad is not None and s.grad.abs().sum() > 0


def test_hidden_state_validation():
    with pytest.raises(ValueError, match=r"student_hidden and teacher_hidden.*\(1, 2, 3\).*\(1, 2, 4\)"):
        hidden_state_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"kind must be one of mse, cosine"):
        hidden_state_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), kind="l1")
    with pytest.raises(ValueError, match=r"mask must have the leading shape"):
        hidden_state_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), mask=torch.ones(1, 3, dtype=torch.bool))


# --------------------------------------------------------------------------- embeddings


def test_embedding_loss_hand_values():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    mse = (1 + 1 + 0 + 1) / 4
    cosine = ((1 - 0) + (1 - 1)) / 2
    assert embedding_loss(s, t, kind="mse").item() == pytest.approx(mse)
    assert embedding_loss(s, t, kind="cosine").item() == pytest.approx(cosine)
    assert embedding_loss(s, t, kind="mse+cosine").item() == pytest.approx(mse + cosine)
    assert embedding_loss(s, t).item() == pytest.approx(mse + cosine)  # default
    torch.testing.assert_close(embedding_loss(s, t, kind="mse"), F.mse_loss(s, t))


def test_embedding_loss_zero_for_identical_and_grad():
    s = torch.randn(3, 5, requires_grad=True)
    for kind in EMBEDDING_LOSSES:
        assert embedding_loss(s, s.detach().clone(), kind=kind).item() == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(3, 5)
    embedding_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_embedding_loss_empty_batch_is_zero():
    s = torch.zeros(0, 4, requires_grad=True)
    value = embedding_loss(s, torch.zeros(0, 4))
    assert value.item() == 0.0
    value.backward()


def test_embedding_loss_validation():
    with pytest.raises(ValueError, match=r"student_emb and teacher_emb.*\(2, 3\).*\(2, 5\)"):
        embedding_loss(torch.zeros(2, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"kind must be one of mse, cosine, mse\+cosine"):
        embedding_loss(torch.zeros(2, 3), torch.zeros(2, 3), kind="cos")


# --------------------------------------------------------------------------- mean pooling


def test_mean_pool_hand_example():
    hidden = torch.tensor(
        [
            [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
            [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]],
        ]
    )
    attention_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pooled = mean_pool(hidden, attention_mask)
    expected = torch.tensor([[2.0, 3.0], [7.0, 8.0]])
    torch.testing.assert_close(pooled, expected)


def test_mean_pool_all_padding_row_is_zero_and_bool_mask():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[float("nan"), 1.0], [2.0, 2.0]]])
    mask = torch.tensor([[False, False], [False, True]])
    pooled = mean_pool(hidden, mask)
    torch.testing.assert_close(pooled, torch.tensor([[0.0, 0.0], [2.0, 2.0]]))


def test_mean_pool_half_precision_keeps_dtype():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float16)
    pooled = mean_pool(hidden, torch.tensor([[1, 0]]))
    assert pooled.dtype == torch.float16
    torch.testing.assert_close(pooled, torch.tensor([[1.0, 2.0]], dtype=torch.float16))
    empty = mean_pool(hidden, torch.tensor([[0, 0]]))
    assert torch.equal(empty, torch.zeros(1, 2, dtype=torch.float16))


def test_mean_pool_validation():
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(1, 2\)"):
        mean_pool(torch.zeros(1, 2, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"hidden must be \(batch, seq, dim\)"):
        mean_pool(torch.zeros(2, 3), torch.ones(2, 3))
