from pathlib import Path

import pytest
import tomllib

from kdstudio.core.config import (
    RunConfig,
    config_from_dict,
    default_config,
    load_config,
)
from kdstudio.core.config_reference import config_reference_markdown
from kdstudio.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_toml_round_trip(tmp_path):
    cfg = default_config("sequence-classification")
    cfg.teacher.name = "some/teacher"
    cfg.student.layer_indices = [0, 2, 5]
    cfg.method.layer_pairs = [[1, 2], [2, 4]]
    cfg.training.max_steps = 77
    path = tmp_path / "run.toml"
    cfg.save(path)
    back = load_config(path)
    assert back == cfg
    assert tomllib.loads(path.read_text())["training"]["max_steps"] == 77


def test_task_defaults_differ():
    emb = default_config("sentence-embedding")
    cls = default_config("sequence-classification")
    assert emb.method.logit_weight == 0 and emb.method.embedding_weight == 1
    assert cls.method.logit_weight == 1 and cls.method.hard_label_weight > 0


def test_unknown_key_names_key_and_known_keys():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"training": {"max_step": 10}})
    msg = str(e.value)
    assert "training.max_step" in msg and "max_steps" in msg


def test_unknown_section():
    with pytest.raises(ConfigError, match="'trainer'"):
        config_from_dict({"trainer": {"max_steps": 1}})


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"task": "causal-lm", "method": {"logit_loss": "kl"}})
    msg = str(e.value)
    assert "method.logit_loss" in msg and "'forward_kl'" in msg and "'jsd'" in msg


def test_bad_task():
    with pytest.raises(ConfigError, match="task is 'translation'.*'causal-lm'"):
        config_from_dict({"task": "translation"})


def test_wrong_type_and_range():
    with pytest.raises(ConfigError, match="training.batch_size is 'big'.*integer"):
        config_from_dict({"training": {"batch_size": "big"}})
    with pytest.raises(ConfigError, match="method.beta is 1.5.*at most 1"):
        config_from_dict({"task": "causal-lm", "method": {"beta": 1.5}})
    with pytest.raises(ConfigError, match="training.batch_size is 0.*at least 1"):
        config_from_dict({"training": {"batch_size": 0}})


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="method.logit_weight.*sentence-embedding"):
        config_from_dict({"task": "sentence-embedding", "method": {"logit_weight": 1.0}})
    with pytest.raises(ConfigError, match="Every loss weight"):
        config_from_dict({"task": "causal-lm", "method": {"logit_weight": 0.0}})
    with pytest.raises(ConfigError, match="layer_pairs"):
        config_from_dict({"task": "causal-lm", "method": {"layer_pairs": [[1, 2, 3]]}})
    with pytest.raises(ConfigError, match="student.layers is 2.5"):
        config_from_dict({"student": {"layers": 2.5}})


def test_overrides_parse_values():
    cfg = default_config("causal-lm").with_overrides(
        ["training.max_steps=12", "method.temperature=3.5", "teacher.name=gpt2",
         "student.layer_indices=[0, 3]", "data.pack=false"])
    assert cfg.training.max_steps == 12
    assert cfg.method.temperature == 3.5
    assert cfg.teacher.name == "gpt2"
    assert cfg.student.layer_indices == [0, 3]
    assert cfg.data.pack is False


def test_override_errors_name_the_key():
    base = default_config("causal-lm")
    with pytest.raises(ConfigError, match="training.nope"):
        base.with_overrides(["training.nope=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        base.with_overrides(["training.max_steps"])
    with pytest.raises(ConfigError, match="'bogus' is not a section"):
        base.with_overrides(["bogus.x=1"])


def test_load_config_errors_name_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("task = \n")
    with pytest.raises(ConfigError, match="bad.toml.*not valid TOML"):
        load_config(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[data]\ncolumn = 'x'\n")
    with pytest.raises(ConfigError, match="wrong.toml: Unknown key 'data.column'"):
        load_config(wrong)


def test_reference_lists_every_key():
    ref = config_reference_markdown()
    for section in ("teacher", "student", "method", "data", "training", "evaluation"):
        for key in getattr(RunConfig(), section).__dataclass_fields__:
            assert f"`{section}.{key}`" in ref


def test_readme_reference_is_current():
    """The README's config reference is generated; regenerate it with `kdstudio config --reference`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert config_reference_markdown() in readme


@pytest.mark.parametrize("demo", sorted((ROOT / "resources" / "demos").glob("*.toml")))
def test_demo_configs_are_valid(demo):
    cfg = load_config(demo)
    from kdstudio.core.catalog import BUILTIN_MODELS

    assert cfg.teacher.name in BUILTIN_MODELS  # every demo runs offline
    from kdstudio.core.catalog import BUILTIN_DATASETS

    # Every demo reads a built-in data set (the corpus, or the entities tagged in it).
    assert cfg.data.dataset.removeprefix("builtin:") in BUILTIN_DATASETS
