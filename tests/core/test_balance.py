"""method.balance = "auto": every loss term contributes about its weight's share, whatever
its scale; "none" leaves the sum as it always was."""

import pytest
import torch

from kdstudio.core.batch import Batch
from kdstudio.core.config import default_config
from kdstudio.core.distiller import Distiller
from kdstudio.core.tasks import CAUSAL_LM


def _gpt2(seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=97, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def _batch(seed: int) -> Batch:
    ids = torch.randint(0, 97, (4, 12), generator=torch.Generator().manual_seed(seed))
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    return Batch(b, b, None, ids.numel(), len(ids))


def _method(balance: str):
    m = default_config("causal-lm").method
    m.logit_weight, m.hard_label_weight, m.balance = 1.0, 1.0, balance
    return m


def test_none_weighs_each_term_by_its_weight_alone():
    d = Distiller(CAUSAL_LM, _method("none"), _gpt2(0), _gpt2(1))
    total, values = d(_batch(0))
    assert not hasattr(d, "term_size")
    assert float(total.detach()) == pytest.approx(values["logit"] + values["hard_label"], rel=1e-6)


def test_auto_makes_a_tiny_term_count_as_much_as_a_large_one():
    teacher, student = _gpt2(0), _gpt2(0)
    # A student a hair away from the teacher: the logit term is tiny, the label loss ~log(97).
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    d = Distiller(CAUSAL_LM, _method("auto"), teacher, student)
    for i in range(30):
        w = d.weights(d.terms)  # the weights this forward uses: sizes seen so far
        total, values = d(_batch(i))
    contrib = {k: w[k] * values[k] for k in ("logit", "hard_label")}
    # Unbalanced, the label loss is thousands of times the logit term ...
    assert values["hard_label"] > 1000 * values["logit"]
    # ... balanced, each contributes about the same (equal weights), within the running
    # average's lag.
    assert contrib["logit"] == pytest.approx(contrib["hard_label"], rel=0.5)
    assert float(total.detach()) == pytest.approx(sum(contrib.values()), rel=1e-4)


def test_auto_sizes_travel_with_the_module_state():
    d = Distiller(CAUSAL_LM, _method("auto"), _gpt2(0), _gpt2(1))
    for i in range(3):
        d(_batch(i))
    state = {k: v.clone() for k, v in d.state_dict().items() if k == "term_size"}
    assert state and float(state["term_size"].min()) > 0
    fresh = Distiller(CAUSAL_LM, _method("auto"), _gpt2(0), _gpt2(1))
    assert fresh.weights(fresh.terms) == {"logit": 1.0, "hard_label": 1.0}
    fresh.load_state_dict(d.state_dict(), strict=False)
    assert fresh.weights(fresh.terms) == d.weights(d.terms)


def test_balance_refuses_an_unknown_mode():
    from kdstudio.core.config import config_from_dict
    from kdstudio.core.errors import ConfigError

    with pytest.raises(ConfigError, match="method.balance"):
        config_from_dict({"task": "causal-lm", "method": {"balance": "sometimes"}})
