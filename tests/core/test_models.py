import pytest
import torch

from kdstudio.core.config import default_config
from kdstudio.core.errors import CompatibilityError, ConfigError, ModelError
from kdstudio.core.models import (
    check_compatibility,
    count_params,
    derive_student,
    evenly_spaced,
    find_layer_list,
    load_model,
    model_summary,
    require_compatible,
    resolve_model_source,
)


def test_evenly_spaced_matches_distilbert():
    assert evenly_spaced(12, 6) == [0, 2, 4, 7, 9, 11]
    assert evenly_spaced(6, 3) == [0, 3, 5]
    assert evenly_spaced(6, 1) == [5]
    assert evenly_spaced(4, 4) == [0, 1, 2, 3]


@pytest.mark.parametrize("shape,task", [("bert", "sentence-embedding"), ("gpt2", "causal-lm"),
                                        ("llama", "causal-lm")])
def test_derived_student_copies_kept_layers(tiny, shape, task):
    teacher = load_model(str(tiny[shape]), task).model
    d = derive_student(teacher, layers=2)
    assert d.kept_layers == [0, 3]
    assert d.model.config.num_hidden_layers == 2
    _, _, t_blocks = find_layer_list(teacher)
    _, _, s_blocks = find_layer_list(d.model)
    assert len(s_blocks) == 2
    for s_idx, t_idx in enumerate(d.kept_layers):
        for (n1, p1), (n2, p2) in zip(s_blocks[s_idx].named_parameters(),
                                      t_blocks[t_idx].named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2)
    emb_t = teacher.get_input_embeddings().weight
    emb_s = d.model.get_input_embeddings().weight
    assert torch.equal(emb_t, emb_s) and emb_s.data_ptr() != emb_t.data_ptr()
    assert count_params(d.model) < count_params(teacher)
    # The student runs, and training it leaves the teacher untouched.
    ids = torch.randint(5, 200, (2, 10))
    out = d.model(input_ids=ids, attention_mask=torch.ones_like(ids))
    (out.logits if task == "causal-lm" else out.last_hidden_state).sum().backward()
    assert emb_s.grad is not None and emb_t.grad is None


def test_derived_student_fraction_and_indices(tiny):
    teacher = load_model(str(tiny["bert"]), "sentence-embedding").model
    assert derive_student(teacher, layers=0.5).kept_layers == [0, 3]
    assert derive_student(teacher, layer_indices=[1, 2, 3]).kept_layers == [1, 2, 3]
    with pytest.raises(ConfigError, match="layer_indices names layer.*only 4 layers"):
        derive_student(teacher, layer_indices=[0, 9])
    with pytest.raises(ConfigError, match="student.layers is 7.*only 4"):
        derive_student(teacher, layers=7)


def test_derived_student_save_load_round_trip(tiny, tmp_path):
    teacher = load_model(str(tiny["llama"]), "causal-lm").model
    d = derive_student(teacher, layers=2)
    d.model.save_pretrained(tmp_path / "s")
    from transformers import AutoModelForCausalLM

    back = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    ids = torch.randint(5, 200, (1, 8))
    d.model.eval()
    back.eval()
    assert torch.allclose(back(ids).logits, d.model(ids).logits, atol=1e-5)


def test_narrow_student_is_fresh_and_says_so(tiny):
    teacher = load_model(str(tiny["bert"]), "sentence-embedding").model
    d = derive_student(teacher, layers=2, hidden=16)
    assert d.fresh_init and "fresh random" in d.notes[0]
    assert d.model.config.hidden_size == 16
    with pytest.raises(ConfigError, match="multiple of the attention head size 16"):
        derive_student(teacher, layers=2, hidden=20)


def test_model_sources(tiny, tmp_path):
    assert resolve_model_source(str(tiny["bert"])) == str(tiny["bert"])
    assert resolve_model_source("all-MiniLM-L6-v2").endswith("model")
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_source(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_source(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="neither a built-in model"):
        resolve_model_source("not a model id!")
    with pytest.raises(ModelError, match="No teacher model"):
        resolve_model_source("", role="teacher")


def test_hub_failure_is_a_model_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="Could not get 'kdstudio-test/does-not-exist'"):
        resolve_model_source("kdstudio-test/does-not-exist")


def test_classification_new_head_detected(tiny):
    m = load_model(str(tiny["bert"]), "sequence-classification", label_names=["a", "b", "c"])
    assert m.new_head and m.model.config.num_labels == 3
    assert m.model.config.id2label[2] == "c"


def test_damaged_model_folder(tiny, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny["gpt2"], bad)
    (bad / "config.json").write_text("{ not json")
    with pytest.raises(ModelError, match="config.json in .* is damaged: it is not valid JSON"):
        load_model(str(bad), "causal-lm", role="teacher")


def test_model_summary(tiny):
    m = load_model(str(tiny["gpt2"]), "causal-lm")
    s = model_summary(m.model, m.tokenizer)
    assert s["layers"] == 4 and s["hidden_size"] == 32 and s["vocab_size"] == len(m.tokenizer)
    assert s["parameters"] == count_params(m.model)


def test_compatibility_same_and_padded_vocab(tiny):
    method = default_config("causal-lm").method
    t = load_model(str(tiny["gpt2"]), "causal-lm")
    p = load_model(str(tiny["gpt2-padded"]), "causal-lm")
    c = check_compatibility("causal-lm", method, t.model, p.model, t.tokenizer, p.tokenizer)
    assert c.level == "warn" and c.same_vocab and c.vocab_size == len(t.tokenizer)
    assert "pad their vocabularies" in c.message
    require_compatible(c)  # padded rows are handled, not an error


def test_compatibility_different_vocab_names_working_methods(tiny):
    method = default_config("causal-lm").method
    t = load_model(str(tiny["gpt2"]), "causal-lm")
    o = load_model(str(tiny["gpt2-othertok"]), "causal-lm")
    c = check_compatibility("causal-lm", method, t.model, o.model, t.tokenizer, o.tokenizer)
    assert c.level == "error" and not c.same_vocab
    assert "tokenizers differ" in c.message and "hard-label loss" in c.message
    with pytest.raises(CompatibilityError):
        require_compatible(c)


def test_compatibility_width_projection_note(tiny):
    method = default_config("sentence-embedding").method
    method.hidden_weight = 1.0
    t = load_model(str(tiny["bert"]), "sentence-embedding")
    w = load_model(str(tiny["bert-wide"]), "sentence-embedding")
    c = check_compatibility("sentence-embedding", method, t.model, w.model, t.tokenizer, w.tokenizer)
    assert c.level == "warn" and "projection" in c.message


def test_student_of_a_frozen_teacher_is_trainable(tiny):
    teacher = load_model(str(tiny["bert"]), "sentence-embedding").model.requires_grad_(False)
    student = derive_student(teacher, layers=2).model
    assert all(p.requires_grad for p in student.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
