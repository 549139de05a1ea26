"""The causal-LM demo: distilling the built-in GPT beats training the same student without it."""

import pytest

from kdstudio.core.config import load_config
from kdstudio.core.runs import resources_dir
from kdstudio.core.trainer import run_training

pytestmark = pytest.mark.slow  # every test here takes more than about two seconds


def test_distilled_student_beats_plain_training_in_few_steps():
    cfg = load_config(resources_dir() / "demos" / "causal-lm.toml")
    assert cfg.teacher.name == "everyday-gpt" and cfg.evaluation.baseline
    # The demo's own settings, shortened: fewer steps and a smaller held-out slice.
    cfg = cfg.with_overrides(["training.max_steps=40", "training.eval_every=0",
                              "evaluation.latency_repeats=2", "evaluation.pinned_inputs=[]",
                              "training.device=\"cpu\""])
    s = run_training(cfg).summary
    teacher, before = s["teacher_metrics"], s["student_metrics_before"]
    after, plain = s["student_metrics"], s["baseline_metrics"]
    # The order the demo's table shows: teacher best, then the distilled student, then plain
    # training of the same student, then the untrained half-depth student.
    assert teacher["perplexity"] < after["perplexity"] < plain["perplexity"] < before["perplexity"]
    assert after["top1_agreement"] > plain["top1_agreement"]
    assert after["kl_to_teacher"] < plain["kl_to_teacher"]
    assert s["baseline"]["steps"] == s["steps"] == 40
