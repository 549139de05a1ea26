"""Tests for kdstudio.core.chunked: chunked head + loss against losses.py on full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdstudio.core.chunk_size import auto_chunk_size
from kdstudio.core.chunked import (
    chunked_distillation_loss,
    chunked_head_loss,
    cross_tokenizer_sum,
    hard_label_sum,
    logit_distillation_sum,
)
from kdstudio.core.chunked_eval import chunked_token_logprobs
from kdstudio.core.losses import (
    LOGIT_LOSSES,
    cross_tokenizer_loss,
    hard_label_loss,
    logit_distillation_loss,
)

N, H, H_T, V = 37, 16, 24, 101
CHUNKS = [8, 64, 10]  # 10 does not divide 37; 64 is one chunk larger than N
RTOL, ATOL = 1e-5, 1e-10


def _setup(dtype=torch.float64, seed=0, v_teacher=V):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=1.0):
        return torch.randn(*shape, generator=g, dtype=dtype) * s

    st = {
        "hidden": r(N, H).requires_grad_(),
        "weight": r(V, H, s=0.5).requires_grad_(),
        "bias": r(V, s=0.3).requires_grad_(),
        # The teacher's parameters want grads too: none may reach them.
        "t_hidden": r(N, H_T),
        "t_weight": r(v_teacher, H_T, s=0.5).requires_grad_(),
        "t_bias": r(v_teacher, s=0.3).requires_grad_(),
    }
    labels = torch.randint(0, V, (N,), generator=g)
    labels[torch.rand(N, generator=g) < 0.25] = -100
    st["labels"] = labels
    st["mask"] = labels != -100
    return st


def _teacher(st):
    return lambda pos: F.linear(st["t_hidden"][pos], st["t_weight"], st["t_bias"])


def _reference(st, fn):
    """Value and grads (hidden, weight, bias) of fn(student_logits, teacher_logits) unchunked."""
    s = F.linear(st["hidden"], st["weight"], st["bias"])
    with torch.no_grad():
        t = F.linear(st["t_hidden"], st["t_weight"], st["t_bias"])
    value = fn(s, t)
    grads = torch.autograd.grad(value, [st["hidden"], st["weight"], st["bias"]])
    return value.detach(), grads


def _check(st, ref, total):
    value, ref_grads = ref
    torch.testing.assert_close(total.detach(), value, rtol=RTOL, atol=ATOL)
    total.backward()
    for name, g in zip(("hidden", "weight", "bias"), ref_grads):
        torch.testing.assert_close(st[name].grad, g, rtol=RTOL, atol=ATOL, msg=name)
    assert st["t_weight"].grad is None and st["t_bias"].grad is None


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("loss", LOGIT_LOSSES)
def test_each_divergence_matches_unchunked(loss, chunk):
    st = _setup()
    kw = {"loss": loss, "temperature": 2.0, "beta": 0.3, "alpha": 0.2}
    ref = _reference(st, lambda s, t: logit_distillation_loss(s, t, mask=st["mask"], **kw))
    out = chunked_distillation_loss(st["hidden"], st["weight"], st["bias"], _teacher(st),
                                    weights={"logit": 1.0}, mask=st["mask"], chunk_size=chunk,
                                    **kw)
    _check(st, ref, out.total)
    torch.testing.assert_close(out.terms["logit"], ref[0], rtol=RTOL, atol=ATOL)
    assert not out.terms["logit"].requires_grad


@pytest.mark.parametrize("chunk", CHUNKS)
def test_hard_label_matches_unchunked(chunk):
    st = _setup()
    ref = _reference(st, lambda s, t: hard_label_loss(s, st["labels"]))
    out = chunked_distillation_loss(st["hidden"], st["weight"], st["bias"], None,
                                    weights={"hard_label": 1.0}, labels=st["labels"],
                                    chunk_size=chunk)
    _check(st, ref, out.total)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_cross_tokenizer_matches_unchunked_with_another_vocab(chunk):
    st = _setup(v_teacher=73)
    m = st["mask"]
    ref = _reference(st, lambda s, t: cross_tokenizer_loss(s[m], t[m], temperature=1.5))
    out = chunked_distillation_loss(st["hidden"], st["weight"], st["bias"], _teacher(st),
                                    weights={"cross_tokenizer": 1.0}, mask=m, temperature=1.5,
                                    chunk_size=chunk)
    _check(st, ref, out.total)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_two_terms_share_one_head_pass(chunk):
    st = _setup()
    m, lab = st["mask"].clone(), st["labels"]
    m[:5] = True  # the logit term keeps positions the labels ignore, and vice versa
    m[-3:] = False

    def full(s, t):
        return (0.7 * logit_distillation_loss(s, t, loss="jsd", mask=m)
                + 0.3 * hard_label_loss(s, lab))

    ref = _reference(st, full)
    calls = []

    def teacher(pos):
        calls.append(len(pos))
        return _teacher(st)(pos)

    out = chunked_distillation_loss(st["hidden"], st["weight"], st["bias"], teacher,
                                    weights={"logit": 0.7, "hard_label": 0.3}, labels=lab,
                                    mask=m, loss="jsd", chunk_size=chunk)
    _check(st, ref, out.total)
    s = F.linear(st["hidden"], st["weight"], st["bias"]).detach()
    t = _teacher(st)(torch.arange(N)).detach()
    torch.testing.assert_close(out.terms["logit"],
                               logit_distillation_loss(s, t, loss="jsd", mask=m), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(out.terms["hard_label"], hard_label_loss(s, lab), rtol=RTOL, atol=ATOL)
    # Only positions some term keeps reach the head, each once.
    assert sum(calls) == int((m | (lab != -100)).sum())


def test_sparse_top_k_teacher_rows_match_unchunked():
    st = _setup()
    with torch.no_grad():
        t_full = F.linear(st["t_hidden"], st["t_weight"], st["t_bias"])
        top = t_full.topk(5, dim=-1)
        sparse = torch.full_like(t_full, float("-inf")).scatter(-1, top.indices, top.values)
    ref = _reference(st, lambda s, t: logit_distillation_loss(s, sparse, mask=st["mask"]))
    out = chunked_distillation_loss(st["hidden"], st["weight"], st["bias"], lambda pos: sparse[pos],
                                    weights={"logit": 1.0}, mask=st["mask"], chunk_size=8)
    assert torch.isfinite(out.total)
    _check(st, ref, out.total)


def test_generic_callback_float32_and_no_bias():
    st = _setup(dtype=torch.float32)
    lab = st["labels"]

    def full(s, t):
        return 2.0 * hard_label_loss(s, lab)

    s = st["hidden"] @ st["weight"].T
    value = full(s, None)
    ref_gh, ref_gw = torch.autograd.grad(value, [st["hidden"], st["weight"]])
    out = chunked_head_loss(st["hidden"], st["weight"], None,
                            lambda z, rows: {"ce": hard_label_sum(z, lab[rows])},
                            weights={"ce": 2.0}, normalizer=(lab != -100).sum(), chunk_size=10)
    torch.testing.assert_close(out.total.detach(), value.detach(), rtol=1e-5, atol=1e-6)
    out.total.backward()
    torch.testing.assert_close(st["hidden"].grad, ref_gh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st["weight"].grad, ref_gw, rtol=1e-5, atol=1e-6)
    assert out.total.dtype == torch.float32


def test_grad_output_scales_the_gradients():
    st = _setup()
    out = chunked_distillation_loss(st["hidden"], st["weight"], st["bias"], None,
                                    weights={"hard_label": 1.0}, labels=st["labels"], chunk_size=8)
    (3.0 * out.total).backward()
    st2 = _setup()
    ref = hard_label_loss(F.linear(st2["hidden"], st2["weight"], st2["bias"]), st2["labels"])
    (3.0 * ref).backward()
    torch.testing.assert_close(st["weight"].grad, st2["weight"].grad, rtol=RTOL, atol=ATOL)


def test_sums_divided_by_count_equal_losses_means():
    st = _setup()
    s = F.linear(st["hidden"], st["weight"], st["bias"]).detach()
    t = _teacher(st)(torch.arange(N)).detach()
    m, lab = st["mask"], st["labels"]
    n = int(m.sum())
    for loss in LOGIT_LOSSES:
        torch.testing.assert_close(logit_distillation_sum(s, t, loss=loss, mask=m) / n,
                                   logit_distillation_loss(s, t, loss=loss, mask=m))
    torch.testing.assert_close(hard_label_sum(s, lab) / n, hard_label_loss(s, lab))
    torch.testing.assert_close(cross_tokenizer_sum(s, t, mask=m) / n,
                               cross_tokenizer_loss(s[m], t[m]))


def test_fully_masked_gives_zero_loss_and_zero_grads():
    st = _setup()
    none = torch.zeros(N, dtype=torch.bool)
    labels = torch.full((N,), -100)
    out = chunked_distillation_loss(st["hidden"], st["weight"], st["bias"], _teacher(st),
                                    weights={"logit": 1.0, "hard_label": 1.0}, labels=labels,
                                    mask=none, chunk_size=8)
    assert out.total.item() == 0.0
    assert all(v.item() == 0.0 for v in out.terms.values())
    out.total.backward()
    for name in ("hidden", "weight", "bias"):
        assert torch.count_nonzero(st[name].grad) == 0, name
        assert torch.isfinite(st[name].grad).all()

    # The generic function on an all-ignored chunk and a zero normalizer: no NaN either.
    st = _setup()
    out = chunked_head_loss(st["hidden"], st["weight"], st["bias"],
                            lambda z, rows: {"ce": hard_label_sum(z, labels[rows])},
                            weights={"ce": 1.0}, normalizer=0, chunk_size=16)
    out.total.backward()
    assert out.total.item() == 0.0 and torch.count_nonzero(st["hidden"].grad) == 0


def test_bf16_hidden_under_autocast_runs_close_to_fp32():
    st = _setup(dtype=torch.float32)
    lab = st["labels"]
    ref = hard_label_loss(F.linear(st["hidden"], st["weight"], st["bias"]), lab)
    ref.backward()
    ref_gw = st["weight"].grad.clone()
    st["weight"].grad = None
    hidden = st["hidden"].detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = chunked_distillation_loss(hidden, st["weight"], st["bias"], _teacher(st),
                                        weights={"hard_label": 1.0, "logit": 0.5}, labels=lab,
                                        chunk_size=10)
    assert out.total.dtype == torch.float32  # the loss itself ran in fp32
    out.total.backward()
    assert hidden.grad.dtype == torch.bfloat16 and st["weight"].grad.dtype == torch.float32
    assert torch.isfinite(out.total) and torch.isfinite(hidden.grad.float()).all()
    torch.testing.assert_close(out.terms["hard_label"], ref.detach(), rtol=3e-2, atol=0)
    assert torch.count_nonzero(st["weight"].grad) > 0
    assert F.cosine_similarity(st["weight"].grad.flatten(), ref_gw.flatten(), dim=0) > 0.9


def test_auto_chunk_size_bounds_multiple_and_override():
    v = 151_936
    assert auto_chunk_size(v, 896, free_bytes=10**15) == 8192
    assert auto_chunk_size(v, 896, free_bytes=1) == 64
    mid = auto_chunk_size(v, 896, free_bytes=24 * 2**30)
    assert 64 <= mid <= 8192 and mid % 64 == 0
    # The working set of 6 fp32 (chunk, vocab) copies stays under 1/8 of free memory.
    assert 6 * mid * v * 4 <= 24 * 2**30 / 8
    assert 6 * (mid + 64) * v * 4 > 24 * 2**30 / 8  # and it is not needlessly small
    assert auto_chunk_size(v, 896, free_bytes=10**15, override=100) == 100
    assert 64 <= auto_chunk_size(v, 896, device="cpu") <= 8192  # from the machine's free memory
    with pytest.raises(ValueError):
        auto_chunk_size(v, 896, override=0)


@pytest.mark.parametrize("chunk", [8, 64])
def test_evaluation_helper_matches_full_computation(chunk):
    st = _setup()
    lab = st["labels"]
    with torch.no_grad():
        s = F.linear(st["hidden"], st["weight"], st["bias"])[:, :97]
        t = F.linear(st["t_hidden"], st["t_weight"], st["t_bias"])[:, :97]
    lab97 = lab.clone()
    lab97[lab >= 97] = -100
    got = chunked_token_logprobs(st["hidden"], st["weight"], lab97, student_bias=st["bias"],
                                 teacher_hidden=st["t_hidden"], teacher_weight=st["t_weight"],
                                 teacher_bias=st["t_bias"], vocab_size=97, chunk_size=chunk)
    m = lab97 != -100
    torch.testing.assert_close(got.student_nll, F.cross_entropy(s, lab97, reduction="none"))
    torch.testing.assert_close(got.teacher_nll, F.cross_entropy(t, lab97, reduction="none"))
    assert torch.equal(got.agree, s.argmax(-1) == t.argmax(-1))
    torch.testing.assert_close((got.kl * m).sum() / m.sum(), logit_distillation_loss(s, t, mask=m))
    assert got.student_nll.shape == (N,) and (got.student_nll[~m] == 0).all()
    assert not got.student_nll.requires_grad

    alone = chunked_token_logprobs(st["hidden"], st["weight"], lab97, student_bias=st["bias"],
                                   vocab_size=97, chunk_size=chunk)
    assert alone.teacher_nll is None and alone.kl is None
    torch.testing.assert_close(alone.student_nll, got.student_nll)


def test_no_grad_call_gives_the_same_value():
    st = _setup()
    with torch.no_grad():
        out = chunked_distillation_loss(st["hidden"], st["weight"], st["bias"], _teacher(st),
                                        weights={"logit": 1.0}, mask=st["mask"], chunk_size=8)
    s = F.linear(st["hidden"], st["weight"], st["bias"]).detach()
    t = _teacher(st)(torch.arange(N)).detach()
    assert not out.total.requires_grad
    torch.testing.assert_close(out.total, logit_distillation_loss(s, t, mask=st["mask"]))


def test_bad_arguments_name_what_is_wrong():
    st = _setup()
    with pytest.raises(ValueError, match="unknown term"):
        chunked_distillation_loss(st["hidden"], st["weight"], None, None, weights={"kl": 1.0})
    with pytest.raises(ValueError, match="needs labels"):
        chunked_distillation_loss(st["hidden"], st["weight"], None, None,
                                  weights={"hard_label": 1.0})
    with pytest.raises(ValueError, match="weight"):
        chunked_head_loss(st["hidden"], st["weight"][:, :5], None, lambda z, r: {},
                          weights={"x": 1.0}, normalizer=1)
    with pytest.raises(KeyError, match="ce"):
        chunked_head_loss(st["hidden"], st["weight"], None, lambda z, r: {},
                          weights={"ce": 1.0}, normalizer=1, chunk_size=8)
