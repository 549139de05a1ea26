"""The built-in demos on the real MiniLM teacher, shortened to a few steps."""

import pytest

from kdstudio.core.config import load_config
from kdstudio.core.runs import resources_dir
from kdstudio.core.trainer import run_training

pytestmark = pytest.mark.slow  # every test here takes more than about two seconds


def test_embedding_demo_measurably_helps():
    cfg = load_config(resources_dir() / "demos" / "sentence-embedding.toml").with_overrides(
        ["training.max_steps=40", "training.eval_every=0", "evaluation.latency_repeats=3",
         "training.device=cpu"])
    s = run_training(cfg).summary
    before, after = s["student_metrics_before"], s["student_metrics"]
    assert s["teacher_params"] == 22_713_216  # the real all-MiniLM-L6-v2
    assert s["kept_layers"] == [0, 3, 5]
    assert after["cosine_to_teacher"] > before["cosine_to_teacher"] + 0.05
    assert after["neighbour_agreement"] > before["neighbour_agreement"] + 0.03
    assert after["spearman"] > before["spearman"] + 0.05


def test_classification_demo_prepares_a_real_teacher():
    cfg = load_config(resources_dir() / "demos" / "sequence-classification.toml").with_overrides(
        ["teacher.prepare_epochs=0.6", "training.max_steps=15", "training.eval_every=0",
         "evaluation.latency_repeats=3", "training.device=cpu"])
    s = run_training(cfg).summary
    assert s["teacher_metrics"]["accuracy"] > 0.5  # ten topics: chance is 0.1
    assert s["student_metrics"]["accuracy"] > 0.3
    assert s["student_metrics"]["agreement"] > s["student_metrics_before"]["agreement"]
