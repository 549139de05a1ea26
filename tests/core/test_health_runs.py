"""Run health in real (tiny) runs: the alarms that a run can provoke reach the events, the
run's metrics.jsonl and its summary; a loss that is not a number stops the run without
saving the broken weights."""

import json

import pytest
import torch

from kdstudio.core import events as ev
from kdstudio.core.errors import DivergedError
from kdstudio.core.runs import Run, list_runs
from kdstudio.core.trainer import run_training
from tests.conftest import tiny_config


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, e):
        self.events.append(e)

    def alarms(self):
        return [e.alarm for e in self.events if isinstance(e, ev.Health)]


def _recorded_alarms(run_dir) -> list[str]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r["alarm"] for r in map(json.loads, lines) if r.get("kind") == "health"]


@pytest.mark.slow
def test_a_student_whose_loss_is_not_a_number_stops_and_saves_nothing_broken(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A student with one weight near float32's largest value: its logits overflow to inf
    # on the first step, and the loss is not a number.
    student = AutoModelForCausalLM.from_pretrained(tiny["gpt2"])
    with torch.no_grad():
        student.transformer.wte.weight[:, 0] = 3e38
    folder = tmp_path / "broken-student"
    student.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny["gpt2"]).save_pretrained(folder)
    cfg = tiny_config("causal-lm", tiny["gpt2"], student={"name": str(folder)},
                      training={"max_steps": 6, "save_every": 2, "eval_every": 0})
    rec = Recorder()
    with pytest.raises(DivergedError, match="not a number"):
        run_training(cfg, rec)
    assert rec.alarms() == ["nan_loss"]
    failed = [e for e in rec.events if isinstance(e, ev.Failed)]
    assert failed and failed[0].title == "Training went wrong"
    run = Run(failed[0].run_dir)
    assert run.summary()["status"] == "failed"
    assert _recorded_alarms(run.path) == ["nan_loss"]
    # The broken step is never saved: no checkpoint after it.
    assert run.checkpoints() == []
    assert [e.step for e in rec.events if isinstance(e, ev.Step)] == [1]


@pytest.mark.slow
def test_a_tiny_loss_term_beside_a_large_one_is_called_out_of_balance(tiny):
    # A student cut from its (random) teacher: the logit loss is ~1e-3, the next-token loss
    # ~6, the KD-loss-thousands-of-times-smaller case users report.
    cfg = tiny_config("causal-lm", tiny["gpt2"],
                      method={"logit_weight": 1.0, "hard_label_weight": 1.0},
                      training={"max_steps": 5, "eval_every": 0})
    rec = Recorder()
    result = run_training(cfg, rec)
    assert rec.alarms() == ["unbalanced"]
    h = next(e for e in rec.events if isinstance(e, ev.Health))
    assert "logit distillation" in h.message and h.setting == "method.balance"
    assert "logit distillation" in h.advice and "method." not in h.advice
    assert _recorded_alarms(result.run_dir) == ["unbalanced"]
    assert [a["alarm"] for a in Run(result.run_dir).summary()["health"]] == ["unbalanced"]


@pytest.mark.slow
def test_balancing_the_terms_keeps_the_same_run_quiet(tiny):
    cfg = tiny_config("causal-lm", tiny["gpt2"],
                      method={"logit_weight": 1.0, "hard_label_weight": 1.0, "balance": "auto"},
                      training={"max_steps": 5, "eval_every": 0})
    rec = Recorder()
    result = run_training(cfg, rec)
    assert rec.alarms() == []
    assert "health" not in Run(result.run_dir).summary()


@pytest.mark.slow
def test_a_student_that_cannot_learn_is_noticed(tiny):
    # A learning rate of 0: the weights never move, so neither do the loss or the figures.
    cfg = tiny_config("sequence-classification", tiny["bert"],
                      training={"max_steps": 12, "eval_every": 4, "learning_rate": 0.0},
                      teacher={"prepare": "never"})
    rec = Recorder()
    run_training(cfg, rec)
    assert "not_learning" in rec.alarms()
    h = next(e for e in rec.events if isinstance(e, ev.Health) and e.alarm == "not_learning")
    assert h.setting == "training.learning_rate" and h.step >= 4
