import math
from types import SimpleNamespace

import pytest
import torch

from kdstudio.core.terms.attention import (
    attention_relation_loss,
    last_layer_qkv,
    relation_kl,
    relation_log_probs,
)


def _pair(b=3, n=6, ds=8, dt=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, ds, generator=g), torch.randn(b, n, dt, generator=g)


def _mask(lengths, n):
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


# -- the loss on tensors -----------------------------------------------------------------------

def test_identical_inputs_give_zero():
    s, _ = _pair()
    mask = _mask([6, 4, 2], 6)
    assert relation_kl(s, s.clone(), mask, heads=2).item() == pytest.approx(0.0, abs=1e-6)


def test_different_inputs_give_a_positive_loss():
    s, t = _pair()
    assert relation_kl(s, t, torch.ones(3, 6, dtype=torch.bool), heads=4).item() > 1e-3


def test_same_relations_in_a_wider_model_give_zero():
    # Each teacher head holds the student's head, zero-padded to twice the size and scaled by
    # 2 ** (1/4) so that the scaled dot products (divided by sqrt(head size)) match.
    s, _ = _pair(ds=8)
    heads = 2
    b, n, _ = s.shape
    sh = s.view(b, n, heads, 4)
    t = torch.cat([sh * 2 ** 0.25, torch.zeros_like(sh)], dim=-1).view(b, n, 16)
    mask = _mask([6, 5, 3], 6)
    assert relation_kl(s, t, mask, heads=heads).item() == pytest.approx(0.0, abs=1e-5)


def test_equals_torch_kl_div_per_relation_head_without_padding():
    s, t = _pair()
    heads = 2
    mask = torch.ones(3, 6, dtype=torch.bool)
    log_s = relation_log_probs(s, mask, heads).reshape(-1, 6)
    log_t = relation_log_probs(t, mask, heads).reshape(-1, 6)
    want = torch.nn.functional.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    assert relation_kl(s, t, mask, heads).item() == pytest.approx(want.item(), rel=1e-5)


def test_relations_are_scaled_dot_products():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])      # (1, 2, 2), one head of size 2
    got = relation_log_probs(x, torch.ones(1, 2), heads=1).exp()[0, 0]
    r = 1 / math.sqrt(2)
    row0 = torch.softmax(torch.tensor([1.0 * r, 0.0]), 0)
    row1 = torch.softmax(torch.tensor([0.0, 4.0 * r]), 0)
    assert torch.allclose(got, torch.stack([row0, row1]), atol=1e-6)


def test_padding_does_not_change_the_loss():
    s, t = _pair(n=4)
    mask = _mask([4, 3, 2], 4)
    base = relation_kl(s, t, mask, heads=2)
    # Two more padded positions holding anything, and new values at the padded positions.
    g = torch.Generator().manual_seed(5)
    s2 = torch.cat([s, 100 * torch.randn(3, 2, 8, generator=g)], 1)
    t2 = torch.cat([t, 100 * torch.randn(3, 2, 12, generator=g)], 1)
    pad = ~_mask([4, 3, 2], 6)
    s2[pad], t2[pad] = 50.0, -50.0
    got = relation_kl(s2, t2, _mask([4, 3, 2], 6), heads=2)
    assert got.item() == pytest.approx(base.item(), rel=1e-5)


def test_padded_keys_get_no_probability_and_padded_rows_stay_finite():
    s, _ = _pair()
    mask = _mask([6, 3, 1], 6)
    p = relation_log_probs(s, mask, heads=2).exp()
    assert torch.isfinite(p).all()
    assert (p[1, :, :, 3:] == 0).all() and (p[2, :, :, 1:] == 0).all()
    assert torch.allclose(p.sum(-1), torch.ones_like(p.sum(-1)))


def test_gradient_flows_to_the_student_and_padding_gets_none():
    s, t = _pair()
    s.requires_grad_(True)
    mask = _mask([6, 4, 2], 6)
    relation_kl(s, t, mask, heads=2).backward()
    assert torch.isfinite(s.grad).all() and s.grad[0].abs().sum() > 0
    assert (s.grad[~mask] == 0).all()


def test_no_real_token_gives_a_zero_connected_to_the_graph():
    s, t = _pair()
    s.requires_grad_(True)
    loss = relation_kl(s, t, torch.zeros(3, 6, dtype=torch.bool), heads=2)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (s.grad == 0).all()


def test_three_relations_are_summed():
    (qs, qt), (ks, kt), (vs, vt) = (_pair(seed=i) for i in range(3))
    mask = _mask([6, 5, 4], 6)
    want = sum(relation_kl(a, b, mask, 2) for a, b in ((qs, qt), (ks, kt), (vs, vt)))
    got = attention_relation_loss((qs, ks, vs), (qt, kt, vt), mask, heads=2)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_half_precision_inputs_give_a_float32_loss():
    s, t = _pair()
    mask = _mask([6, 4, 2], 6)
    loss = relation_kl(s.bfloat16(), t.half(), mask, heads=2)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(relation_kl(s, t, mask, 2).item(), rel=0.05)


def test_bad_inputs_name_the_problem():
    s, t = _pair()
    with pytest.raises(ValueError, match="must divide the width 8"):
        relation_kl(s, t, torch.ones(3, 6), heads=3)
    with pytest.raises(ValueError, match="share .batch, length."):
        relation_kl(s, t[:, :4], torch.ones(3, 6), heads=2)


# -- the term on tiny BERT models ---------------------------------------------------------------

def _bert(hidden=32, layers=4, heads=2, seed=0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=2 * hidden,
                     max_position_embeddings=64, initializer_range=0.3)
    # A wide initialisation: the default (0.02) gives nearly uniform relations.
    return BertModel(cfg).eval()


def _inputs(pad_to=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (3, 7), generator=g)
    mask = _mask([7, 5, 3], 7).long()
    ids = ids * mask   # 0 is BERT's pad id
    if pad_to:
        extra = pad_to - ids.shape[1]
        ids = torch.cat([ids, torch.zeros(3, extra, dtype=ids.dtype)], 1)
        mask = torch.cat([mask, torch.zeros(3, extra, dtype=mask.dtype)], 1)
    return {"input_ids": ids, "attention_mask": mask}


def _term_loss(student, teacher, inputs, heads=2, teacher_grad=False):
    from kdstudio.core.term import TermInputs
    from kdstudio.core.terms.attention import TERM

    s = {"hidden_states": student(**inputs, output_hidden_states=True).hidden_states}
    with torch.set_grad_enabled(teacher_grad):
        t = {"hidden_states": teacher(**inputs, output_hidden_states=True).hidden_states}
    batch = SimpleNamespace(student=inputs)
    distiller = SimpleNamespace(student=student, teacher=[teacher])
    x = TermInputs(batch, s, t, SimpleNamespace(attention_relation_heads=heads), distiller, 0)
    return TERM.compute(x)


def test_identical_models_give_zero():
    teacher = _bert()
    student = _bert()
    student.load_state_dict(teacher.state_dict())
    assert _term_loss(student, teacher, _inputs()).item() == pytest.approx(0.0, abs=1e-6)


def test_a_different_student_gives_a_positive_loss():
    assert _term_loss(_bert(layers=2, seed=1), _bert(), _inputs()).item() > 1e-3


def test_gradients_flow_to_the_student_only():
    teacher, student = _bert(), _bert(layers=2, seed=1)
    student.train(False)
    # Even with the teacher's forward pass recorded, nothing reaches the teacher.
    _term_loss(student, teacher, _inputs(), teacher_grad=True).backward()
    last = student.encoder.layer[-1].attention.self
    for lin in (last.query, last.key, last.value):
        assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    assert student.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_padding_does_not_change_the_loss_of_the_models():
    teacher, student = _bert(), _bert(layers=2, seed=1)
    base = _term_loss(student, teacher, _inputs())
    padded = _term_loss(student, teacher, _inputs(pad_to=11))
    assert padded.item() == pytest.approx(base.item(), rel=1e-4)


def test_a_narrower_student_with_fewer_heads_and_layers():
    teacher = _bert(hidden=32, layers=4, heads=2)
    student = _bert(hidden=16, layers=2, heads=1, seed=1)
    loss = _term_loss(student, teacher, _inputs(), heads=4)
    assert torch.isfinite(loss) and loss.item() > 1e-3
    loss.backward()
    assert student.encoder.layer[-1].attention.self.query.weight.grad.abs().sum() > 0


def test_relation_heads_that_do_not_divide_a_width_are_named():
    from kdstudio.core.errors import ConfigError

    teacher = _bert(hidden=32, heads=2)
    student = _bert(hidden=16, layers=2, heads=1, seed=1)
    with pytest.raises(ConfigError, match=r"attention_relation_heads is 3.*"
                                          r"Choose one of 1, 2, 4, 8, 16"):
        _term_loss(student, teacher, _inputs(), heads=3)


def test_an_architecture_without_query_key_value_maps_is_named():
    from transformers import GPT2Config, GPT2Model

    from kdstudio.core.errors import CompatibilityError

    gpt = GPT2Model(GPT2Config(vocab_size=100, n_positions=16, n_embd=16, n_layer=2, n_head=2))
    hidden = gpt(input_ids=torch.ones(1, 4, dtype=torch.long), output_hidden_states=True)
    with pytest.raises(CompatibilityError, match="GPT2Model has none"):
        last_layer_qkv(gpt, hidden.hidden_states)


# -- the term in runs and in the config ---------------------------------------------------------

@pytest.mark.parametrize("task", ["sentence-embedding", "sequence-classification"])
def test_run_with_the_attention_term_and_a_narrower_student(tiny, task):
    from kdstudio.core import events as ev
    from kdstudio.core.trainer import run_training
    from tests.conftest import tiny_config

    cfg = tiny_config(task, tiny["bert"], student={"layers": 2.0, "hidden_size": 16},
                      method={"attention_weight": 1.0, "attention_relation_heads": 4})
    steps = []
    run_training(cfg, lambda e: steps.append(e) if isinstance(e, ev.Step) else None)
    assert steps and "attention" in steps[0].losses
    if task == "sentence-embedding":
        assert set(steps[0].losses) == {"embedding", "attention", "total"}
    assert all(math.isfinite(s.losses["attention"]) and s.losses["attention"] > 0 for s in steps)


def test_attention_weight_is_only_for_encoders():
    from kdstudio.core.config import default_config
    from kdstudio.core.errors import ConfigError

    for task in ("sentence-embedding", "sequence-classification"):
        cfg = default_config(task)
        cfg.method.attention_weight = 1.0
        cfg.validate()
    lm = default_config("causal-lm")
    lm.method.attention_weight = 1.0
    with pytest.raises(ConfigError, match="method.attention_weight"):
        lm.validate()


def test_the_term_module_is_the_whole_method():
    import dataclasses

    from kdstudio.core.config import MethodConfig, config_from_dict
    from kdstudio.core.config_reference import config_reference_markdown
    from kdstudio.core.errors import ConfigError
    from kdstudio.core.objective import terms_for
    from kdstudio.core.tasks import CAUSAL_LM, CLASSIFICATION, EMBEDDING
    from kdstudio.core.terms.attention import TERM

    assert "attention" in [t.name for t in terms_for(EMBEDDING)]
    assert "attention" in [t.name for t in terms_for(CLASSIFICATION)]
    assert "attention" not in [t.name for t in terms_for(CAUSAL_LM)]
    assert TERM.needs.teacher_inside and TERM.needs.same_tokens and not TERM.needs.output
    fields = {f.name: f for f in dataclasses.fields(MethodConfig)}
    assert fields["attention_weight"].default == 0.0
    assert "`method.attention_relation_heads`" in config_reference_markdown()
    with pytest.raises(ConfigError, match="method.attention_relation_heads"):
        config_from_dict({"task": "sentence-embedding", "method": {"attention_relation_heads": 0}})


def test_the_term_alone_learns_no_layer_projections_for_a_narrower_student():
    """It reads hidden states but pairs no layers: the distiller builds no hidden-state
    projections for it (they would get no gradient, and DDP would wait for one)."""
    from kdstudio.core.config import default_config
    from kdstudio.core.distiller import Distiller
    from kdstudio.core.tasks import EMBEDDING

    m = default_config("sentence-embedding").method
    m.embedding_weight, m.attention_weight, m.attention_relation_heads = 0.0, 1.0, 2
    d = Distiller(EMBEDDING, m, _bert(hidden=32), _bert(hidden=16, layers=2, heads=1))
    assert [t.name for t in d.terms] == ["attention"]
    assert d.pairs == [] and len(d.hidden_proj) == 0
