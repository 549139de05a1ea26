"""Run health in real (tiny) runs: the alarms that a run can provoke reach the events, the
run's metrics.jsonl and its summary; a loss that is not a number stops the run without
saving the broken weights."""

import json

import pytest
import torch

from kdstudio.core import events as ev
from kdstudio.core.errors import DivergedError
from kdstudio.core.health import repeated_share
from kdstudio.core.runs import Run
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


def _health(rec: Recorder, alarm: str) -> ev.Health:
    return next(e for e in rec.events if isinstance(e, ev.Health) and e.alarm == alarm)


@pytest.fixture(scope="module")
def looping_student(tmp_path_factory):
    """The built-in everyday-gpt teacher, and a 1-layer student trained on the true next words
    alone of a text that loops: its answers to the pinned prompts loop, and its predictions
    become far surer than the teacher's (the student's entropy falls from 4.7 to 1.7 nats in
    20 steps against the teacher's 4.8)."""
    from kdstudio.core.runs import resources_dir

    folder = tmp_path_factory.mktemp("looping")
    loop = "the cat sat on the mat and the dog sat on the log . " * 4
    (folder / "loop.jsonl").write_text((json.dumps({"text": loop}) + "\n") * 80, encoding="utf-8")
    cfg = tiny_config("causal-lm", resources_dir() / "models" / "everyday-gpt",
                      student={"layers": 1},
                      data={"dataset": str(folder / "loop.jsonl"), "max_eval_samples": 8},
                      method={"logit_weight": 0.0, "hard_label_weight": 1.0},
                      training={"max_steps": 20, "eval_every": 10, "learning_rate": 3e-3},
                      evaluation={"pinned_inputs": ["the cat", "the dog"]})
    rec = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDSTUDIO_HOME", str(folder / "home"))
        result = run_training(cfg, rec)
    return rec, result


@pytest.mark.slow
def test_a_student_whose_answers_loop_is_called_collapsing(looping_student):
    rec, result = looping_student
    h = _health(rec, "repetition")
    assert h.setting == "method.hard_label_weight" and "repeat themselves" in h.message
    looped = [e for e in rec.events if isinstance(e, ev.Eval) and e.step == h.step][0]
    assert all(repeated_share(s["student"]) > 0.5 for s in looped.samples)
    assert all(repeated_share(s["teacher"]) < 0.2 for s in looped.samples)
    assert "repetition" in _recorded_alarms(result.run_dir)


@pytest.mark.slow
def test_a_student_far_surer_than_its_teacher_is_called_collapsing(looping_student):
    rec, result = looping_student
    h = _health(rec, "entropy_collapse")
    assert h.setting == "method.logit_loss"
    evals = [e for e in rec.events if isinstance(e, ev.Eval)]
    teacher = evals[0].teacher_metrics["entropy"]
    # Raised at the first evaluation whose entropy is under half the teacher's, not before.
    assert [e.step for e in evals if e.metrics["entropy"] < 0.5 * teacher][0] == h.step
    assert evals[0].metrics["entropy"] > 0.5 * teacher
    assert "entropy_collapse" in [a["alarm"] for a in Run(result.run_dir).summary()["health"]]


@pytest.mark.slow
def test_a_student_distilled_from_a_useless_teacher_is_worse_than_plain_training(tiny):
    # The tiny random teacher predicts every next token about equally: imitating it teaches
    # nothing, while the plain-training baseline learns the true next words.
    cfg = tiny_config("causal-lm", tiny["gpt2"],
                      method={"logit_weight": 1.0, "hard_label_weight": 0.0},
                      training={"max_steps": 10, "eval_every": 0},
                      evaluation={"baseline": True})
    rec = Recorder()
    result = run_training(cfg, rec)
    h = _health(rec, "worse_than_plain")
    s = Run(result.run_dir).summary()
    assert s["student_metrics"]["perplexity"] > 1.01 * s["baseline_metrics"]["perplexity"]
    assert h.setting == "method.hard_label_weight" and h.step == 10
    assert "worse_than_plain" in _recorded_alarms(result.run_dir)


@pytest.mark.slow
def test_a_loss_that_keeps_rising_is_noticed(tiny):
    # The learning rate warms up over the whole run to 10, far past what the student can
    # take: after a first fall, every evaluation interval's loss is above the last.
    cfg = tiny_config("causal-lm", tiny["gpt2"], data={"max_eval_samples": 8},
                      method={"logit_weight": 0.0, "hard_label_weight": 1.0},
                      training={"max_steps": 30, "eval_every": 5, "learning_rate": 10.0,
                                "scheduler": "constant_with_warmup", "warmup_ratio": 1.0})
    rec = Recorder()
    result = run_training(cfg, rec)
    h = _health(rec, "loss_rising")
    assert h.setting == "training.learning_rate" and h.step == 20
    # Each interval's mean loss, from the steps themselves: three rises in a row.
    totals = [e.losses["total"] for e in rec.events if isinstance(e, ev.Step)]
    means = [sum(totals[i:i + 5]) / 5 for i in range(0, 20, 5)]
    assert all(b > a for a, b in zip(means, means[1:])), means
    assert "loss_rising" in _recorded_alarms(result.run_dir)


@pytest.mark.slow
def test_sentence_vectors_that_become_all_alike_are_called_collapsing():
    from tests.conftest import minilm_folder

    # MiniLM's vectors lie well apart (spread 0.94 on these texts); a 1-layer student pushed
    # at a learning rate of 0.5 maps every sentence to the same vector within 5 steps.
    cfg = tiny_config("sentence-embedding", minilm_folder(), student={"layers": 1},
                      data={"max_eval_samples": 16},
                      training={"max_steps": 10, "eval_every": 5, "learning_rate": 0.5,
                                "scheduler": "constant"})
    rec = Recorder()
    result = run_training(cfg, rec)
    h = _health(rec, "embedding_collapse")
    assert h.setting == "method.similarity_weight" and h.step == 5
    evals = [e for e in rec.events if isinstance(e, ev.Eval)]
    assert evals[0].teacher_metrics["embedding_spread"] > 0.5
    assert evals[0].metrics["embedding_spread"] > 0.5
    assert [e.metrics["embedding_spread"] < 0.05 for e in evals[:2]] == [False, True]
    assert "embedding_collapse" in _recorded_alarms(result.run_dir)


@pytest.mark.slow
def test_quality_that_peaked_and_fell_is_noticed(tiny):
    # Eight training texts and a high learning rate: the student learns what the texts share,
    # then learns them by heart, and its held-out perplexity rises far past its best.
    cfg = tiny_config("causal-lm", tiny["gpt2"],
                      data={"max_train_samples": 8, "max_eval_samples": 16},
                      method={"logit_weight": 0.0, "hard_label_weight": 1.0},
                      training={"max_steps": 40, "eval_every": 10, "learning_rate": 1e-2,
                                "scheduler": "constant", "warmup_ratio": 0.0})
    rec = Recorder()
    result = run_training(cfg, rec)
    h = _health(rec, "quality_falling")
    ppl = {e.step: e.metrics["perplexity"] for e in rec.events
           if isinstance(e, ev.Eval) and e.step <= h.step}
    best = min(ppl, key=ppl.get)
    assert 0 < best < h.step and f"best at step {best}" in h.message
    # The last two evaluations are both worse than the best by more than its 1% noise.
    assert all(ppl[s] > 1.01 * ppl[best] for s in sorted(ppl)[-2:])
    assert h.setting == "training.max_steps"
    assert "quality_falling" in _recorded_alarms(result.run_dir)


@pytest.mark.slow
def test_balancing_a_single_term_changes_nothing(tiny):
    """The sentence-embedding demo has one loss term: automatic balance scales it by its own
    size over its own size, exactly 1, so its run is the same bit for bit."""
    from kdstudio.core.config import load_config
    from kdstudio.core.objective import active_terms
    from kdstudio.core.runs import resources_dir
    from kdstudio.core.tasks import get_task

    demo = load_config(resources_dir() / "demos" / "sentence-embedding.toml")
    assert len(active_terms(get_task("sentence-embedding"), demo.method)) == 1
    losses = {}
    for balance in ("none", "auto"):
        cfg = tiny_config("sentence-embedding", tiny["bert"], method={"balance": balance},
                          training={"max_steps": 6, "eval_every": 0})
        rec = Recorder()
        run_training(cfg, rec)
        losses[balance] = [e.losses for e in rec.events if isinstance(e, ev.Step)]
    assert len(losses["none"]) == 6 and losses["auto"] == losses["none"]
