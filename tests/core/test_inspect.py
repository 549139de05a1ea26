import shutil

import pytest

from kdstudio.core.config import default_config
from kdstudio.core.errors import ModelError
from kdstudio.core.models import (
    count_params,
    derive_student,
    hidden_size,
    load_model,
    num_layers,
)
from kdstudio.core.plan.shapes import (
    check_pair,
    derived_estimate,
    derived_student_estimate,
    inspect_model,
)


@pytest.mark.parametrize("shape,task", [("bert", "sentence-embedding"), ("gpt2", "causal-lm"),
                                        ("llama", "causal-lm"), ("gpt2-padded", "causal-lm"),
                                        ("bert", "sequence-classification")])
def test_inspection_matches_the_real_model(tiny, shape, task):
    insp = inspect_model(str(tiny[shape]), task, role="teacher")
    real = load_model(str(tiny[shape]), task)
    info = insp.info
    assert info["parameters"] == count_params(real.model)
    assert info["layers"] == num_layers(real.model) == len(info["layer_params"])
    assert info["hidden_size"] == hidden_size(real.model)
    assert info["vocab_size"] == len(real.tokenizer)
    assert sum(info["layer_params"]) + info["other_params"] == info["parameters"]
    assert info["weights_on_disk_mb"] > 0
    # Shape only: the meta model holds no memory.
    assert next(insp.model.parameters()).device.type == "meta"


def test_derived_estimate_matches_a_derived_student(tiny):
    insp = inspect_model(str(tiny["bert"]), "sentence-embedding")
    teacher = load_model(str(tiny["bert"]), "sentence-embedding").model
    for kept in ([0, 3], [1, 2, 3], [2]):
        est = derived_estimate(insp.info, kept)
        real = derive_student(teacher, layer_indices=kept).model
        assert est["parameters"] == count_params(real)
        assert est["removed_parameters"] == count_params(teacher) - count_params(real)
        # Identical blocks: the layer-compute estimate is the ratio of layer counts.
        assert est["speedup"] == pytest.approx(4 / len(kept))
    with pytest.raises(ValueError):
        derived_estimate(insp.info, [0, 7])


def test_narrow_estimate_counts_the_pruned_student(tiny):
    from kdstudio.core.pruning import PruneShape, prune_model

    insp = inspect_model(str(tiny["bert"]), "sentence-embedding")
    assert insp.info["valid_widths"] == [16, 32]
    teacher = load_model(str(tiny["bert"]), "sentence-embedding").model
    est = derived_student_estimate(insp, layers=2, hidden=16)
    # A BERT teacher is pruned to the narrower width (its best channels), not started afresh.
    real = prune_model(teacher, PruneShape(est["kept_layers"], hidden=16), None)
    assert not est["fresh_init"] and est["parameters"] == count_params(real)
    assert est["speedup"] > 2  # two layers, each about a quarter of the compute
    same = derived_student_estimate(insp, layers=2)
    assert not same["fresh_init"] and same["speedup"] == pytest.approx(2)


def test_check_pair_red_for_other_tokenizer_green_for_derived(tiny):
    method = default_config("causal-lm").method
    teacher = inspect_model(str(tiny["gpt2"]), "causal-lm", role="teacher")
    other = inspect_model(str(tiny["gpt2-othertok"]), "causal-lm", role="student")
    bad = check_pair("causal-lm", method, teacher, other)
    assert bad.level == "error" and "tokenizers differ" in bad.message
    good = check_pair("causal-lm", method, teacher, None, default_config("causal-lm").student)
    assert good.level == "ok"


def test_classification_head_is_noticed_and_counts_follow_the_data(tiny):
    cfg = default_config("sequence-classification")
    teacher = inspect_model(str(tiny["bert"]), "sequence-classification", role="teacher")
    assert teacher.info["has_task_head"] is False
    assert "prepare teacher" in teacher.info["notes"][0]
    student = inspect_model(str(tiny["bert-wide"]), "sequence-classification", role="student")
    comp = check_pair("sequence-classification", cfg.method, teacher, student)
    assert comp.level == "ok"


def test_bad_sources_name_the_problem(tiny, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        inspect_model(str(tmp_path / "nope"), "sentence-embedding", role="teacher")
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(tiny["bert"] / "config.json", folder / "config.json")
    with pytest.raises(ModelError, match="no weight files"):
        inspect_model(str(folder), "sentence-embedding", role="teacher")


@pytest.mark.slow
def test_architecture_without_the_task_variant(tiny, tmp_path):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    tok = AutoTokenizer.from_pretrained(str(tiny["bert"]))
    folder = tmp_path / "distilbert"
    DistilBertModel(DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=2, n_heads=2,
                                     hidden_dim=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    with pytest.raises(ModelError, match="cannot be used for causal-lm"):
        inspect_model(str(folder), "causal-lm", role="teacher")
