"""Estimates that say how they were made, stay within what the counts allow, and learn from
this machine's finished runs (a fake run store: no training)."""

import datetime as _dt

import pytest

from kdstudio.core.config import default_config
from kdstudio.core.plan.memory import ModelShape
from kdstudio.core.plan.record import estimate_check
from kdstudio.core.plan.shapes import derived_estimate
from kdstudio.core.plan.speedup import speedup_cap, speedup_text
from kdstudio.core.plan.time import ROUGH_FLOPS, estimate_run_times
from kdstudio.core.runs import Run, create_run
from kdstudio.core.sweep.plan import estimate_time, record_planned
from kdstudio.core.sweep.spec import derived
from kdstudio.core.sweep.store import Sweep

# all-MiniLM-L6-v2's shape: 6 blocks of 384 wide (1.77M parameters each), 30,522 tokens.
VOCAB, T_BLOCK = 30522, 1_774_464
T_PARAMS = 22_713_216
S_BLOCK_128 = 4 * 128 * 128 + 2 * 128 * 512 + 8 * 128  # one block 128 wide
S_PARAMS_128 = VOCAB * 128 + 512 * 128 + 2 * S_BLOCK_128


def _minilm_info():
    return {"parameters": T_PARAMS, "layer_params": [T_BLOCK] * 6}


def test_a_narrow_two_layer_student_is_not_promised_26x():
    est = derived_estimate(_minilm_info(), [0, 5], student_layer_params=[S_BLOCK_128] * 2,
                           student_params=S_PARAMS_128)
    cap = max(T_PARAMS / S_PARAMS_128, 6 / 2)
    # The layers' compute alone says about 27x: more than the counts allow.
    assert 6 * T_BLOCK / (2 * S_BLOCK_128) > 20
    assert est["speedup"] == pytest.approx(cap) and est["speedup"] < 6
    assert "parameter and layer counts" in est["speedup_how"]
    assert "parameter and layer counts" in speedup_text(est["speedup"], est["speedup_how"])


def test_dropping_layers_keeps_the_layer_ratio():
    est = derived_estimate(_minilm_info(), [0, 5])  # same width: the blocks' ratio is 3
    assert est["speedup"] == pytest.approx(3.0)
    assert speedup_cap(T_PARAMS, est["parameters"], 6, 2) == pytest.approx(3.0)


def test_a_pruned_narrow_student_of_a_real_config_stays_within_the_counts():
    from transformers import BertConfig

    from kdstudio.core.config import StudentConfig
    from kdstudio.core.plan.pruned import pruned_estimate

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=384, num_hidden_layers=6,
                     num_attention_heads=12, intermediate_size=1536)
    p = pruned_estimate(StudentConfig(layers=2, hidden_size=128), cfg, "sentence-embedding")
    cap = speedup_cap(p["teacher_parameters"], p["parameters"], 6, len(p["layers"]))
    assert p["speedup"] <= cap + 1e-9 and p["speedup"] < 10
    assert p["speedup_how"]


# -- time estimates from this machine's runs -----------------------------------------------------

def _config(max_steps=40):
    cfg = default_config("sentence-embedding")
    cfg.training.max_steps = max_steps
    cfg.training.device = "cpu"
    return cfg


def _fake_run(cfg, *, teacher="another/teacher", steps=40, duration=12.0, t_params=T_PARAMS,
              s_params=T_PARAMS // 2, name="past"):
    """A finished run as the trainer leaves it, on another teacher (no same-setup match)."""
    run = create_run(cfg.to_toml(), name=name, task=cfg.task, teacher=teacher, student="s")
    # Created 5 s before its training began: the set-up (loading, evaluations) took 5 s.
    created = _dt.datetime.now() - _dt.timedelta(seconds=duration + 5)
    run.update_summary(status="finished", device="cpu", steps=steps, total_steps=steps,
                       duration_s=duration, teacher_params=t_params, student_params=s_params,
                       created=created.isoformat(timespec="seconds"))
    return run


SHAPE = ModelShape(params=T_PARAMS, hidden_size=384, num_layers=6, vocab_size=VOCAB,
                   layer_params=6 * T_BLOCK)


def test_without_runs_the_estimate_is_a_rough_guess_that_says_so():
    est = estimate_run_times(_config(), {0: derived(3)[0]}, teacher_shape=SHAPE, device="cpu")
    assert est.method == "rough" and "rough guess" in est.text


def test_the_machines_measured_speed_replaces_the_typical_one():
    cfg = _config()
    # Two earlier runs of another teacher, same sizes: 40 steps took 12 s of training here.
    _fake_run(cfg, name="one")
    _fake_run(cfg, name="two", duration=12.0)
    est = estimate_run_times(cfg, {0: derived(3)[0]}, teacher_shape=SHAPE, device="cpu")
    assert est.method == "calibrated" and "this machine measured in 2 earlier runs" in est.text
    # The same steps and tokens, scaled by the work per step (2T + 6S parameters) against the
    # past runs' (2T + 6 x T/2), plus the 5 s of set-up those runs took around their steps.
    s3 = T_PARAMS - 3 * T_BLOCK
    expected = 5.0 + 12.0 * (2 * T_PARAMS + 6 * s3) / (2 * T_PARAMS + 3 * T_PARAMS)
    assert est.total_s == pytest.approx(expected, abs=1.5)
    rough_flops_s = 40 * 16 * 128 * (2 * T_PARAMS + 6 * T_PARAMS / 2) / ROUGH_FLOPS["cpu"]
    assert est.total_s < rough_flops_s  # the table's CPU speed was far too slow for this machine


def test_a_sweep_records_its_plan_beside_what_the_run_took():
    cfg = _config()
    sweep = Sweep.new(cfg, derived(2, 3), teacher_layers=6)
    est = estimate_time(sweep, teacher_shape=SHAPE, device="cpu")
    entry = sweep.entries[0]
    run = _fake_run(cfg, teacher=cfg.teacher.name, duration=25.0, name="entry")
    entry.run_dir = str(run.path)
    record_planned(sweep, entry, 31.0)

    summary = Run(run.path).summary()
    recorded = summary["estimate"]
    assert recorded["planned_s"] == pytest.approx(est.per_entry[entry.index], abs=0.1)
    assert recorded["method"] == est.method and recorded["measured_s"] == 31.0
    line = estimate_check(summary)
    assert line.startswith("Planned at") and "it took 31 s" in line
    assert ("less than planned" in line or "more than planned" in line
            or "close to the plan" in line)


def test_the_error_of_a_plan_is_said_in_words():
    s = {"estimate": {"planned_s": 480.0, "method": "rough", "note": "a rough guess"},
         "duration_s": 30.0}
    assert estimate_check(s) == ("Planned at 8 min (a rough guess); it took 30 s, "
                                 "16.0x less than planned.")
    assert estimate_check({"duration_s": 30.0}) == ""
