"""The one training loop: accumulation is exact, stop is honoured, every caller shares it."""

import threading

import pytest
import torch

from kdstudio.core.config import default_config
from kdstudio.core.distiller import Distiller
from kdstudio.core.loop import Optimizer, accumulate, make_optimizer, train_steps
from kdstudio.core.batch import Batch
from kdstudio.core.tasks import CAUSAL_LM, CLASSIFICATION


def _gpt2(seed: int, layers: int = 2):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    # No dropout, so the same inputs give the same gradients however they are batched.
    cfg = GPT2Config(vocab_size=97, n_positions=32, n_embd=16, n_layer=layers, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def _lm_batch(ids: torch.Tensor) -> Batch:
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    return Batch(b, b, None, ids.numel(), len(ids))


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", [{"logit_weight": 1.0, "hard_label_weight": 0.5},
                                    {"logit_weight": 1.0, "hidden_weight": 1.0,
                                     "logit_loss": "jsd"}])
def test_four_micro_batches_give_the_gradient_of_one_batch_four_times_the_size(method):
    teacher, student = _gpt2(0, layers=3), _gpt2(1)
    m = default_config("causal-lm").method
    for k, v in method.items():
        setattr(m, k, v)
    ids = torch.randint(0, 97, (8, 12), generator=torch.Generator().manual_seed(3))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    from contextlib import nullcontext

    one = Distiller(CAUSAL_LM, m, teacher, student)
    losses_one, samples, tokens = accumulate(one, [_lm_batch(ids)], 1, scaler, nullcontext)
    big = _grads(one)
    student.zero_grad(set_to_none=True)
    four = Distiller(CAUSAL_LM, m, teacher, student)
    four.hidden_proj.load_state_dict(one.hidden_proj.state_dict())
    losses_four, samples4, tokens4 = accumulate(
        four, [_lm_batch(ids[i:i + 2]) for i in range(0, 8, 2)], 4, scaler, nullcontext)
    small = _grads(four)
    assert set(big) == set(small) and big
    for name in big:
        torch.testing.assert_close(small[name], big[name], rtol=1e-5, atol=1e-7, msg=name)
    assert (samples, tokens) == (samples4, tokens4) == (8, 96)
    for k in losses_one:
        assert losses_four[k] == pytest.approx(losses_one[k], rel=1e-5)


def test_train_steps_stops_before_a_step_and_counts_from_the_start_step():
    student = _gpt2(1)
    cfg = default_config("causal-lm")
    cfg.method.logit_weight, cfg.method.hard_label_weight = 0.0, 1.0
    d = Distiller(CAUSAL_LM, cfg.method, student, student)
    optimizer, scheduler, scaler = make_optimizer(
        d, lr=1e-3, weight_decay=0.0, scheduler="constant", warmup_steps=0, total_steps=10,
        device=torch.device("cpu"), precision="fp32")
    from contextlib import nullcontext

    opt = Optimizer(optimizer, scheduler, scaler, 1.0, nullcontext)
    seen_micro: list[int] = []
    stop = threading.Event()

    def micro(i: int) -> Batch:
        seen_micro.append(i)
        return _lm_batch(torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(i)))

    steps = []

    def on_step(r):
        steps.append(r.step)
        assert set(r.losses) == {"hard_label", "total"} and r.seconds > 0 and r.tokens == 32
        if r.step == 4:
            stop.set()

    last, stopped = train_steps(d, micro, opt, start_step=2, total_steps=10, accum=2, stop=stop,
                                on_step=on_step)
    assert (last, stopped) == (4, True)
    assert steps == [3, 4]
    assert seen_micro == [4, 5, 6, 7]  # micro-batch numbers continue from the start step


def test_the_plain_objective_needs_no_teacher_and_has_only_the_plain_terms():
    from kdstudio.core.objective import plain_method

    m = default_config("sequence-classification").method
    m.hidden_weight = 1.0
    plain = plain_method(m, CLASSIFICATION)
    assert plain.hard_label_weight == 1.0
    assert plain.logit_weight == plain.hidden_weight == 0.0
    student = _gpt2(1)

    class Boom(torch.nn.Module):
        config = student.config

        def forward(self, **_):
            raise AssertionError("the teacher ran")

    d = Distiller(CAUSAL_LM, plain_method(default_config("causal-lm").method, CAUSAL_LM),
                  Boom(), student)
    loss, parts = d(_lm_batch(torch.randint(0, 97, (2, 8))))
    assert set(parts) == {"hard_label", "total"} and loss.requires_grad


@pytest.mark.parametrize("method", [{"logit_weight": 1.0, "hard_label_weight": 0.5},
                                    {"logit_weight": 1.0, "hidden_weight": 1.0,
                                     "logit_loss": "jsd"},
                                    {"logit_weight": 0.0, "hard_label_weight": 1.0,
                                     "cross_tokenizer_weight": 0.5}])
def test_chunked_head_terms_equal_full_logits_in_value_and_gradient(method):
    """The objective a run trains on: chunked (auto size, and 7 positions, which does not
    divide the batch) against full logits, with some positions ignored."""
    from contextlib import nullcontext

    teacher, student = _gpt2(0, layers=3), _gpt2(1)
    m = default_config("causal-lm").method
    for k, v in method.items():
        setattr(m, k, v)
    b = _lm_batch(torch.randint(0, 97, (4, 12), generator=torch.Generator().manual_seed(3)))
    b.student["labels"][0, :3] = -100
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    out = {}
    for chunk in (-1, 0, 7):
        student.zero_grad(set_to_none=True)
        d = Distiller(CAUSAL_LM, m, teacher, student, chunk=chunk)
        losses, _, _ = accumulate(d, [b], 1, scaler, nullcontext)
        out[chunk] = losses, _grads(student)
    full_losses, full_grads = out[-1]
    for chunk in (0, 7):
        losses, grads = out[chunk]
        assert set(losses) == set(full_losses)
        for k, v in full_losses.items():
            assert losses[k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
        for name, g in full_grads.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)
