"""Sequence-level, on-policy and cross-tokenizer distillation of causal LMs, and the baseline."""

import json
import threading

import pytest
import torch

from kdstudio.core import events as ev
from kdstudio.core.errors import CompatibilityError, ConfigError
from kdstudio.core.lm import (
    GENERATIONS_FILE,
    align_by_text,
    load_generations,
    prompts_from_texts,
    text_batch,
)
from kdstudio.core.losses import cross_tokenizer_loss
from kdstudio.core.models import load_tokenizer
from kdstudio.core.runs import Run
from kdstudio.core.trainer import run_training
from tests.conftest import tiny_config
from tests.core.test_trainer import Recorder

GEN = {"prompt_tokens": 4, "max_new_tokens": 6, "batch_size": 16, "max_prompts": 24}


# -- the cross-tokenizer loss ---------------------------------------------------------------------

def test_cross_tokenizer_loss_zero_for_identical_and_grows_apart():
    torch.manual_seed(0)
    t = torch.randn(5, 40)
    assert cross_tokenizer_loss(t.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    # A permutation of the vocabulary is the same sorted distribution: still zero, which is
    # why it works across vocabularies of different sizes and orders.
    perm = t[:, torch.randperm(40)]
    assert cross_tokenizer_loss(perm, t).item() == pytest.approx(0.0, abs=1e-6)
    padded = torch.cat([t, torch.full((5, 10), -1e4)], dim=1)  # 10 more, impossible tokens
    assert cross_tokenizer_loss(padded, t).item() == pytest.approx(0.0, abs=1e-5)
    values = [cross_tokenizer_loss(t * s, t).item() for s in (1.0, 0.7, 0.4, 0.0)]
    assert values[0] < values[1] < values[2] < values[3]
    assert values[3] <= 2 + 1e-6  # the L1 distance of two distributions is at most 2


def test_cross_tokenizer_loss_hand_value_and_grad():
    s = torch.log(torch.tensor([[0.2, 0.8]])).requires_grad_()
    t = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    # sorted: [0.8, 0.2, 0] vs [0.5, 0.3, 0.2] -> |0.3| + |0.1| + |0.2| = 0.6
    loss = cross_tokenizer_loss(s, t)
    assert loss.item() == pytest.approx(0.6, abs=1e-5)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    empty = cross_tokenizer_loss(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 4))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="aligned"):
        cross_tokenizer_loss(torch.zeros(2, 3), torch.zeros(3, 3))


# -- alignment by text ----------------------------------------------------------------------------

def test_align_by_text_pairs_positions_that_end_at_the_same_character():
    # "the cat sat": student tokens "the", " cat", " sat"; teacher "th", "e", " ca", "t", " sat"
    s_off = [[(0, 3), (3, 7), (7, 11)]]
    t_off = [[(0, 2), (2, 3), (3, 6), (6, 7), (7, 11)]]
    keep = torch.ones(1, 3, dtype=torch.bool)
    pairs = align_by_text(s_off, t_off, keep).tolist()
    # student 0 ("the" ends at 3) ~ teacher 1 ("e" ends at 3); student 1 (ends 7) ~ teacher 3
    assert pairs == [[0, 0, 1], [0, 1, 3]]
    keep[0, 0] = False
    assert align_by_text(s_off, t_off, keep).tolist() == [[0, 1, 3]]


def test_text_batch_across_tokenizers(tiny):
    s_tok = load_tokenizer(str(tiny["gpt2"]))
    t_tok = load_tokenizer(str(tiny["gpt2-othertok"]))
    texts = ["The kettle boiled while we talked about the weather.", "Rain again today."]
    b = text_batch(texts, [len("The kettle"), 0], s_tok, t_tok, 32, torch.device("cpu"))
    assert b.teacher["input_ids"].shape[0] == 2 and b.align.shape[1] == 3
    assert len(b.align) > 5
    labels = b.student["labels"]
    # The prompt "The kettle" is context only: its tokens carry no label.
    n_prompt = len(s_tok("The kettle", add_special_tokens=False)["input_ids"])
    assert (labels[0, :n_prompt] == -100).all() and (labels[0, n_prompt:][b.student["attention_mask"][0, n_prompt:] == 1] != -100).all()
    # Every aligned pair predicts the same next text: the tokens after them start at the same place.
    s_off = s_tok(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    t_off = t_tok(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for r, k, j in b.align.tolist():
        assert s_off[r][k][1] == t_off[r][j][1]
        assert labels[r, k + 1] != -100


def test_prompts_are_clean_prefixes(tiny):
    tok = load_tokenizer(str(tiny["gpt2"]))
    texts = ["Fresh bread smells best in the early morning.", "Hi there"]
    prompts = prompts_from_texts(tok, texts, 4)
    for text, prompt in zip(texts, prompts):
        assert text.startswith(prompt) and 0 < len(prompt) < len(text)
    assert len(tok(prompts[0], add_special_tokens=False)["input_ids"]) == 4


# -- runs -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cross_tokenizer_run_trains_and_says_what_works(tiny):
    other = str(tiny["gpt2-othertok"])
    cfg = tiny_config("causal-lm", tiny["gpt2"], student={"name": other},
                      method={"logit_weight": 0.0, "hard_label_weight": 1.0,
                              "cross_tokenizer_weight": 1.0})
    rec = Recorder()
    result = run_training(cfg, rec)
    steps = rec.of(ev.Step)
    assert len(steps) == 4 and all(s.losses["cross_tokenizer"] > 0 for s in steps)
    assert set(result.summary["student_metrics"]) == {"perplexity"}
    # Token-level logit distillation across tokenizers is refused, naming what still works.
    bad = tiny_config("causal-lm", tiny["gpt2"], student={"name": other})
    with pytest.raises(CompatibilityError, match="cross_tokenizer_weight.*sequence_level"):
        run_training(bad)


@pytest.mark.slow
@pytest.mark.parametrize("student", ["derived", "othertok"])
def test_sequence_level_run_saves_and_reuses_generations(tiny, student, capsys):
    s = {"layers": 2} if student == "derived" else {"name": str(tiny["gpt2-othertok"])}
    cfg = tiny_config("causal-lm", tiny["gpt2"], student=s, generation=GEN,
                      method={"sequence_level": True, "logit_weight": 0.0, "hard_label_weight": 1.0})
    rec = Recorder()
    result = run_training(cfg, rec)
    assert result.status == "finished"
    path = result.run_dir / GENERATIONS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == GEN["max_prompts"]
    assert all(r["prompt"] and isinstance(r["continuation"], str) for r in rows)
    assert sum(len(r["continuation"]) for r in rows) > 0
    gen_progress = [e for e in rec.of(ev.Progress) if e.stage == "generate"]
    assert gen_progress and gen_progress[-1].current == gen_progress[-1].total == GEN["max_prompts"]
    assert rec.of(ev.Started)[0].train_samples == GEN["max_prompts"]
    # Reusing the generations skips the generation stage.
    rec2 = Recorder()
    reuse = tiny_config("causal-lm", tiny["gpt2"], student=s,
                        generation={**GEN, "reuse": str(result.run_dir)},
                        method={"sequence_level": True, "logit_weight": 0.0, "hard_label_weight": 1.0})
    run_training(reuse, rec2)
    assert not [e for e in rec2.of(ev.Stage) if e.name == "generate"]
    assert load_generations(path) == load_generations(result.run_dir)

    # `kdstudio show` lets a person read what the student trained on.
    from kdstudio.cli.commands import main

    capsys.readouterr()
    assert main(["show", result.run_dir.name]) == 0
    out = capsys.readouterr().out
    assert "The teacher's continuations" in out and rows[0]["prompt"][:10] in out


@pytest.mark.slow
def test_sequence_level_with_logits_when_tokenizers_match(tiny):
    cfg = tiny_config("causal-lm", tiny["gpt2"], generation=GEN, student={"layers": 2},
                      method={"sequence_level": True, "logit_weight": 1.0, "hard_label_weight": 1.0})
    rec = Recorder()
    run_training(cfg, rec)
    assert {"logit", "hard_label"} <= set(rec.of(ev.Step)[0].losses)


@pytest.mark.slow
def test_bad_reuse_file_is_a_clear_error(tiny, tmp_path):
    bad = tmp_path / "g.jsonl"
    bad.write_text("not json\n")
    cfg = tiny_config("causal-lm", tiny["gpt2"], generation={**GEN, "reuse": str(bad)},
                      method={"sequence_level": True, "logit_weight": 0.0, "hard_label_weight": 1.0})
    with pytest.raises(ConfigError, match="Line 1 .* 'prompt' and 'continuation'"):
        run_training(cfg)
    with pytest.raises(ConfigError, match="no generations file"):
        load_generations(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("share", [0.5, 1.0])
def test_on_policy_share(tiny, share, monkeypatch):
    import kdstudio.core.run_steps as run_steps

    calls = []
    real = run_steps.on_policy_batch

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out)
        return out
    monkeypatch.setattr(run_steps, "on_policy_batch", spy)
    cfg = tiny_config("causal-lm", tiny["gpt2"], generation=GEN, student={"layers": 2},
                      training={"max_steps": 6, "eval_every": 0},
                      method={"on_policy_share": share, "logit_weight": 1.0, "hard_label_weight": 0.5})
    rec = Recorder()
    run_training(cfg, rec)
    steps = rec.of(ev.Step)
    if share == 1.0:
        assert len(calls) == 6
        # On the student's own samples there is no hard-label loss, only the teacher's judgement.
        assert all("hard_label" not in s.losses and s.losses["logit"] > 0 for s in steps)
    else:
        assert 0 < len(calls) < 6
        assert any("hard_label" in s.losses for s in steps)
    for b in calls:
        assert b.on_policy and (b.student["labels"] != -100).any()
        # The prompt (first tokens) is context: no loss on it.
        assert (b.student["labels"][:, 0] == -100).all()


@pytest.mark.slow
def test_on_policy_across_tokenizers(tiny):
    cfg = tiny_config("causal-lm", tiny["gpt2"], generation=GEN,
                      student={"name": str(tiny["gpt2-othertok"])},
                      method={"on_policy_share": 1.0, "logit_weight": 0.0,
                              "hard_label_weight": 1.0, "cross_tokenizer_weight": 1.0})
    rec = Recorder()
    run_training(cfg, rec)
    assert all(s.losses["cross_tokenizer"] >= 0 and "hard_label" not in s.losses
               for s in rec.of(ev.Step))


@pytest.mark.slow
def test_on_policy_resume_matches_uninterrupted(tiny):
    base = dict(generation=GEN, student={"layers": 2},
                training={"max_steps": 4, "eval_every": 0, "save_every": 0},
                method={"on_policy_share": 0.5, "logit_weight": 1.0})
    full = run_training(tiny_config("causal-lm", tiny["gpt2"], **base))
    stop = threading.Event()
    part = run_training(tiny_config("causal-lm", tiny["gpt2"], **base),
                        Recorder(stop_at_step=2, stop=stop), stop)
    resumed = run_training(None, resume=part.run_dir)
    from safetensors.torch import load_file

    a = load_file(Run(full.run_dir).student_dir / "model.safetensors")
    b = load_file(Run(resumed.run_dir).student_dir / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


@pytest.mark.slow
def test_baseline_trains_the_same_student_without_a_teacher(tiny):
    cfg = tiny_config("causal-lm", tiny["gpt2"], student={"layers": 2},
                      evaluation={"baseline": True, "latency_repeats": 2})
    rec = Recorder()
    result = run_training(cfg, rec)
    s = result.summary
    assert set(s["baseline_metrics"]) == set(s["student_metrics"])
    assert s["baseline"]["steps"] == s["steps"] == 4
    assert s["baseline_metrics"] != s["student_metrics"]
    assert s["baseline_metrics"]["perplexity"] != s["student_metrics_before"]["perplexity"]
    progress = [e for e in rec.of(ev.Progress) if e.stage == "baseline"]
    assert [p.current for p in progress] == [1, 2, 3, 4]
    assert any("Plain training without a teacher" in e.message for e in rec.of(ev.Log))


def test_baseline_refused_for_embeddings(tiny):
    with pytest.raises(ConfigError, match="evaluation.baseline"):
        tiny_config("sentence-embedding", tiny["bert"], evaluation={"baseline": True})


def test_generation_options_only_for_causal_lm(tiny):
    with pytest.raises(ConfigError, match="method.sequence_level .* only to the causal-lm"):
        tiny_config("sequence-classification", tiny["bert"], method={"sequence_level": True})
