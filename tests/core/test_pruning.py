"""Students pruned from the teacher: importance, surgery, the vocabulary cut, the planner and
the refusals. Tiny models built from configs here (and the shipped everyday-gpt); no downloads."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    BertModel,
    BertTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaModel,
    pipeline,
)

from kdstudio.core.config import StudentConfig, config_from_dict
from kdstudio.core.errors import ConfigError, StoppedError
from kdstudio.core.importance import measure_importance
from kdstudio.core.prune_plan import choose_layers, plan_shape
from kdstudio.core.pruning import (
    PruneShape,
    check_shape,
    check_student_fields,
    meta_params,
    pruned_config,
    prune_model,
    uses_pruning,
)

WORDS = ("the a cat dog sat on mat ran fast slow big small red blue and of to in is was "
         "bird fish tree house").split()
TEXTS = ["the cat sat on the mat", "a big dog ran fast", "the red bird is in the tree",
         "a small fish was slow", "the blue house and the big tree", "a dog sat on a cat"]


def tiny_tokenizer(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ed", "zebra"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizer(str(path))


def batches(tok, texts=TEXTS):
    enc = tok(list(texts), padding=True, return_tensors="pt")
    return [{"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}]


def random_batches(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return [{"input_ids": ids, "attention_mask": mask}]


def tiny(kind, vocab=40):
    torch.manual_seed(0)
    if kind == "bert":
        return BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=4,
                                    num_attention_heads=4, intermediate_size=64,
                                    max_position_embeddings=64))
    if kind == "roberta":
        return RobertaModel(RobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=4,
                                          num_attention_heads=4, intermediate_size=64,
                                          max_position_embeddings=70, pad_token_id=1))
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=4, n_head=4,
                                          n_positions=64, bos_token_id=0, eos_token_id=0))
    kw = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, intermediate_size=64, bos_token_id=0, eos_token_id=0)
    cls, cfg = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config),
                "mistral": (MistralForCausalLM, MistralConfig)}[kind]
    return cls(cfg(**kw))


@pytest.mark.parametrize("kind", ["bert", "roberta", "gpt2", "llama", "qwen2", "mistral"])
def test_pruned_model_loads_with_plain_transformers_and_runs_in_a_pipeline(kind, tmp_path):
    tok = tiny_tokenizer(tmp_path)
    teacher = tiny(kind, vocab=len(tok)).eval()
    imp = measure_importance(teacher, random_batches(len(tok)))
    # Tied families: 2 heads means width 2 x 8; Llama's width is free of its heads.
    shape = PruneShape([0, 2, 3], heads=2, inter=24, hidden=16)
    student = prune_model(teacher, shape, imp)
    folder = tmp_path / "student"
    student.save_pretrained(folder)
    tok.save_pretrained(folder)
    auto = AutoModel if kind in ("bert", "roberta") else AutoModelForCausalLM
    loaded = auto.from_pretrained(folder).eval()
    assert sum(p.numel() for p in loaded.parameters()) == \
        sum(p.numel() for p in student.parameters())
    assert loaded.config.num_hidden_layers == 3
    if kind in ("bert", "roberta"):
        out = pipeline("feature-extraction", model=str(folder), tokenizer=str(folder))("the cat sat")
        assert len(out[0][0]) == 16
    else:
        gen = pipeline("text-generation", model=str(folder), tokenizer=str(folder))
        text = gen("the cat", max_new_tokens=3, do_sample=False)[0]["generated_text"]
        assert text.startswith("the cat")


def test_width_pruned_student_starts_far_closer_to_the_teacher_than_a_random_one():
    from kdstudio.core.catalog import BUILTIN_MODELS
    from kdstudio.core.models import load_tokenizer

    folder = str(BUILTIN_MODELS["everyday-gpt"][0]())
    teacher = GPT2LMHeadModel.from_pretrained(folder).eval()
    tok = load_tokenizer(folder)
    texts = ["The museum opened a new wing for children", "Is it worth taking the early train",
             "Our local bakery sells fresh bread every morning", "The team won the last match"]
    imp = measure_importance(teacher, batches(tok, texts))
    shape = PruneShape(list(range(6)), heads=3, inter=256)  # 75% of the heads, half the MLP
    pruned = prune_model(teacher, shape, imp).eval()
    torch.manual_seed(0)
    random_init = GPT2LMHeadModel(pruned.config).eval()
    b = batches(tok, ["The park is busy on sunny weekends", "We cooked soup for dinner"])[0]
    mask = b["attention_mask"].bool()

    def kl(student):
        with torch.no_grad():
            t = teacher(**b).logits.log_softmax(-1)
            s = student(**b).logits.log_softmax(-1)
        return (t.exp() * (t - s)).sum(-1)[mask].mean().item()

    assert kl(pruned) < 0.35 * kl(random_init)


def test_grouped_query_attention_keeps_whole_key_value_groups():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=2, intermediate_size=32, head_dim=8)
    teacher = LlamaForCausalLM(cfg).eval()
    imp = measure_importance(teacher, random_batches(40))
    imp.heads[:] = 0.0
    imp.heads[:, 5] = 10.0       # one head of group 1 (heads 4-7) stands out
    imp.heads[:, 0] = 1.0
    student = prune_model(teacher, PruneShape([0, 1], heads=4), imp)
    assert student.config.num_attention_heads == 4 and student.config.num_key_value_heads == 1
    for t_layer, s_layer in zip(teacher.model.layers, student.model.layers):
        t_att, s_att = t_layer.self_attn, s_layer.self_attn
        assert torch.equal(s_att.q_proj.weight, t_att.q_proj.weight[32:64])    # heads 4..7
        assert torch.equal(s_att.k_proj.weight, t_att.k_proj.weight[8:16])     # kv group 1
        assert torch.equal(s_att.v_proj.weight, t_att.v_proj.weight[8:16])
        assert torch.equal(s_att.o_proj.weight, t_att.o_proj.weight[:, 32:64])
    with pytest.raises(ConfigError, match="student.attention_heads is 3.*Choose one of 4, 8"):
        check_shape(cfg, heads=3)


def test_importance_ranks_silenced_heads_neurons_and_layers_last():
    torch.manual_seed(0)
    model = tiny("gpt2").eval()
    hd = 8
    with torch.no_grad():
        h = model.transformer.h
        # Head 2 of layer 0 writes nothing: its value projection is zero.
        h[0].attn.c_attn.weight[:, 64 + 2 * hd:64 + 3 * hd] = 0
        h[0].attn.c_attn.bias[64 + 2 * hd:64 + 3 * hd] = 0
        # Neuron 7 of layer 1 never fires: gelu(0) = 0.
        h[1].mlp.c_fc.weight[:, 7] = 0
        h[1].mlp.c_fc.bias[7] = 0
        # Layer 2 is the identity: nothing is added to the residual stream.
        for lin in (h[2].attn.c_proj, h[2].mlp.c_proj):
            lin.weight.zero_()
            lin.bias.zero_()
        model.transformer.h[3].mlp.c_proj.weight.mul_(8)  # layer 3 changes the stream most
    imp = measure_importance(model, random_batches(40))
    assert int(imp.heads[0].argmin()) == 2 and imp.heads[0, 2] == 0
    assert int(imp.neurons[1].argmin()) == 7 and imp.neurons[1, 7] == 0
    assert imp.layers[2].abs() < 1e-6
    assert int(imp.layers.argmax()) == 3
    assert choose_layers(4, 3, "importance", imp.layers) == [0, 1, 3]
    assert choose_layers(4, 3, "even", imp.layers) == [0, 2, 3]
    # Pruning keeps the important head: the silenced one is the one dropped.
    student = prune_model(model, PruneShape([0, 1, 2, 3], heads=3), imp)
    assert student.config.n_head == 3


def test_bad_shapes_are_refused_with_the_allowed_values():
    bert = tiny("bert").config
    with pytest.raises(ConfigError, match="student.attention_heads is 6, but the teacher has only 4"):
        check_shape(bert, heads=6)
    with pytest.raises(ConfigError, match=r"student.hidden_size is 20.*Valid widths: 8, 16, 24, 32"):
        check_shape(bert, hidden=20)
    with pytest.raises(ConfigError, match="student.intermediate_size is 100"):
        check_shape(bert, inter=100)
    gpt = tiny("gpt2").config
    with pytest.raises(ConfigError, match="student.vocabulary is 'data'.*allowed: teacher, data"):
        check_student_fields(StudentConfig(vocabulary="data"), gpt)
    with pytest.raises(ConfigError, match="not WordPiece"):
        check_student_fields(StudentConfig(vocabulary="data"), tiny("roberta").config)
    # The run's config refuses a vocabulary cut on a causal LM before anything loads.
    with pytest.raises(ConfigError, match="student.vocabulary is 'data'"):
        config_from_dict({"task": "causal-lm", "teacher": {"name": "everyday-gpt"},
                             "student": {"vocabulary": "data"}})
    with pytest.raises(ConfigError, match="student.shape"):
        config_from_dict({"student": {"target_size": 0.5, "shape": "deep"}})
    with pytest.raises(ConfigError, match="student.layer_choice"):
        config_from_dict({"student": {"layer_choice": "best"}})
    with pytest.raises(ConfigError, match="student.target_size"):
        config_from_dict({"student": {"target_size": 0.5, "attention_heads": 2}})


def test_preflight_refuses_too_many_heads_before_anything_loads():
    from kdstudio.core.preflight import ModelFacts, check_student_shape

    facts = ModelFacts("everyday-gpt", None, {"model_type": "gpt2", "n_embd": 128, "n_head": 4,
                                              "n_layer": 6, "vocab_size": 2048})
    cfg = config_from_dict({"task": "causal-lm", "teacher": {"name": "everyday-gpt"},
                               "student": {"attention_heads": 8}})
    with pytest.raises(ConfigError, match="only 4 attention heads.*Choose 1 to 4"):
        check_student_shape(cfg, facts)


def test_defaults_keep_todays_layer_dropping_student():
    assert not uses_pruning(StudentConfig())
    assert not uses_pruning(StudentConfig(layers=3))
    assert uses_pruning(StudentConfig(layer_choice="importance"))
    assert uses_pruning(StudentConfig(hidden_size=64), tiny("gpt2").config)


@pytest.mark.parametrize("shape", ["layers", "width", "both"])
def test_planner_lands_near_the_target_and_says_what_it_picked(shape):
    model = tiny("gpt2")
    planned = plan_shape(GPT2LMHeadModel, model.config, 0.5, shape)
    assert planned.params == meta_params(GPT2LMHeadModel,
                                         pruned_config(model.config, planned.shape))
    assert abs(planned.share - 0.5) < 0.1
    assert "student keeps" in planned.note and f"'{shape}'" in planned.note
    if shape == "width":
        assert len(planned.shape.layers) == 4
    if shape == "layers":
        assert planned.shape.heads == 0


def test_vocabulary_cut_to_the_data_loads_in_transformers_and_sentence_transformers(tmp_path):
    from kdstudio.core.student_prep import data_vocabulary, trimmed_tokenizer, unknown_share

    tok = tiny_tokenizer(tmp_path)
    teacher = tiny("bert", vocab=len(tok)).eval()
    train = TEXTS[:4]
    ids = data_vocabulary(tok, train, 32)
    assert set(tok.all_special_ids) <= set(ids) and len(ids) < len(tok)
    small = trimmed_tokenizer(tok, ids)
    assert len(small) == len(ids)
    student = prune_model(teacher, PruneShape([0, 1, 2, 3]), None, token_ids=ids).eval()
    assert student.get_input_embeddings().weight.shape[0] == len(ids)
    # A kept text reads the same and embeds the same as with the teacher.
    enc_t, enc_s = tok(train[0], return_tensors="pt"), small(train[0], return_tensors="pt")
    assert [ids[i] for i in enc_s["input_ids"][0].tolist()] == enc_t["input_ids"][0].tolist()
    with torch.no_grad():
        assert torch.allclose(teacher(**enc_t).last_hidden_state,
                              student(**enc_s).last_hidden_state, atol=1e-5)
    # A held-out word outside the data becomes one unknown token.
    changed, unknown, total = unknown_share(tok, small, ["the zebra sat", "the cats"], 32, ids)
    assert (changed, unknown, total) == (3, 3, 6)  # zebra; cat ##s (##s is not in the data)
    folder = tmp_path / "student"
    student.save_pretrained(folder)
    small.save_pretrained(folder)
    again = AutoModel.from_pretrained(folder)
    assert again.config.vocab_size == len(ids)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    assert st.encode(["the cat sat", "a zebra"]).shape == (2, 32)


def test_importance_is_measured_once_and_stop_leaves_nothing(tmp_path, monkeypatch):
    from kdstudio.core.models import LoadedModel
    from kdstudio.core.student_prep import importance_dir, teacher_importance

    monkeypatch.setenv("KDSTUDIO_HOME", str(tmp_path / "home"))
    tok = tiny_tokenizer(tmp_path)
    teacher = LoadedModel(model=tiny("bert", vocab=len(tok)), tokenizer=tok, source="tiny")
    cfg = config_from_dict({"teacher": {"name": "tiny-bert"}})
    data = SimpleNamespace(train_texts=TEXTS * 3, eval_texts=TEXTS, text_column="text")
    events = []
    stop = threading.Event()
    stop.set()
    ctx = SimpleNamespace(emit=events.append, stop=stop, device=torch.device("cpu"))
    with pytest.raises(StoppedError):
        teacher_importance(cfg, teacher, data, ctx)
    assert not importance_dir(cfg, teacher, data).exists()
    ctx.stop = threading.Event()
    first = teacher_importance(cfg, teacher, data, ctx)
    assert any(getattr(e, "stage", "") == "measure importance" for e in events)
    assert (importance_dir(cfg, teacher, data) / "importance.pt").exists()
    events.clear()
    again = teacher_importance(cfg, teacher, data, ctx)
    assert torch.equal(first.heads, again.heads) and first.token_ids == again.token_ids
    assert any("Reusing" in getattr(e, "message", "") for e in events)


def test_sweep_over_sizes_and_shapes_makes_a_series_per_shape(tmp_path, monkeypatch):
    import argparse

    from kdstudio.cli.sweep import _plan
    from kdstudio.core.config import load_config
    from kdstudio.core.sweep.queue import SweepError

    monkeypatch.setenv("KDSTUDIO_HOME", str(tmp_path / "home"))
    demo = "resources/demos/causal-lm.toml"
    args = argparse.Namespace(config=demo, set=[], layers="", students="", sizes="0.3,0.5",
                              temperatures="", methods="", shapes="layers,width,both", int8=False)
    sweep = _plan(args)
    assert sweep.axis == "shape" and sweep.axis_values == ["layers", "width", "both"]
    assert [e.label for e in sweep.entries][:3] == [
        "30% of the teacher, layers", "30% of the teacher, width", "30% of the teacher, both"]
    cfg = sweep.config_for(sweep.entries[4])
    assert (cfg.student.target_size, cfg.student.shape) == (0.5, "width")
    assert cfg.student.name == "" and cfg.student.hidden_size == 0
    # The base config and its student are otherwise untouched.
    assert cfg.method == load_config(demo).method
    with pytest.raises(SweepError, match="--shapes cuts students of a target size"):
        _plan(argparse.Namespace(**{**vars(args), "layers": "2"}))
    with pytest.raises(SweepError, match="'deep' is not one"):
        _plan(argparse.Namespace(**{**vars(args), "shapes": "layers,deep"}))
    with pytest.raises(SweepError, match="between 0 and 1"):
        _plan(argparse.Namespace(**{**vars(args), "sizes": "1.5"}))


def test_a_width_pruned_student_projects_back_onto_the_channels_it_kept():
    from kdstudio.core.config import default_config
    from kdstudio.core.distiller import Distiller

    teacher = tiny("bert").eval()
    imp = measure_importance(teacher, random_batches(40))
    student = prune_model(teacher, PruneShape([0, 1, 2, 3], hidden=16), imp)
    kept = student.pruned_channels
    assert len(kept) == 16 and kept == sorted(kept)
    dist = Distiller("sentence-embedding", default_config("sentence-embedding").method, teacher,
                     student)
    w = dist.embed_proj.weight
    assert w.shape == (32, 16) and torch.equal(w[kept, torch.arange(16)], torch.ones(16))
    assert w.sum() == 16  # a pure selection: each kept channel back in its place


def test_the_load_student_stage_names_what_the_student_is():
    """A target size overrides student.layers: the stage must not say '3 layers' for it."""
    from kdstudio.core.student_prep import derived_words

    assert derived_words(StudentConfig(layers=3)) == "derived from the teacher (3 layers)"
    assert derived_words(StudentConfig(layers=3, layer_indices=[0, 5])) == \
        "derived from the teacher (layers 0, 5)"
    assert derived_words(StudentConfig(layers=3, target_size=0.3, shape="both")) == \
        "pruned from the teacher to about 30% of its parameters (both)"
