import json
import threading

import numpy as np
import pytest

from kdstudio.core.config import default_config
from kdstudio.core.errors import ConfigError
from kdstudio.core.run_compare import (
    compare_rows,
    config_diff,
    curves_from_events,
    format_value,
    key_help,
    read_summary,
    run_config_diff,
    run_curves,
    summary_columns,
    summary_rows,
)
from kdstudio.core.trainer import run_training
from tests.conftest import tiny_config


def test_config_diff_lists_exactly_the_changed_keys():
    a = default_config("causal-lm")
    b = default_config("causal-lm")
    b.method.temperature = 4.0
    b.training.max_steps = 7
    b.student.layer_indices = [0, 2]
    diff = config_diff(a, b)
    assert [k for k, _, _ in diff] == ["student.layer_indices", "method.temperature", "training.max_steps"]
    assert ("method.temperature", 1.0, 4.0) in diff
    assert config_diff(a, default_config("causal-lm")) == []


def test_config_diff_of_dicts_names_keys_present_on_one_side():
    diff = config_diff({"a": 1, "s": {"x": 1, "y": None}}, {"a": 1, "s": {"x": 2}})
    assert diff == [("s.x", 1, 2), ("s.y", None, None)]


@pytest.mark.slow
def test_run_config_diff_of_two_real_runs(tiny):
    ra = run_training(tiny_config("causal-lm", tiny["gpt2"], name="a", training={"max_steps": 2}))
    rb = run_training(tiny_config("causal-lm", tiny["gpt2"], name="b", method={"temperature": 3.0},
                                  training={"max_steps": 3}))
    diff = run_config_diff(ra.run_dir, rb.run_dir)
    assert {k: (x, y) for k, x, y in diff} == {"name": ("a", "b"), "method.temperature": (1.0, 3.0),
                                               "training.max_steps": (2, 3)}
    # The curves of run b: one total loss per step, the headline metric from the summary.
    curves = run_curves(rb.run_dir)
    steps, total = curves.losses["total"]
    assert steps.tolist() == [1.0, 2.0, 3.0] and np.all(np.isfinite(total))
    assert curves.headline == "perplexity"
    x, y = curves.series("headline")
    assert x[0] == 0 and x[-1] == 3
    assert y[-1] == pytest.approx(rb.summary["student_metrics"]["perplexity"])
    assert curves.teacher_metrics["perplexity"] == pytest.approx(rb.summary["teacher_metrics"]["perplexity"])
    assert curves.series("loss:nothing") is None


def test_run_config_diff_names_a_damaged_config(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.toml").write_text("task = [not toml")
    (tmp_path / "b").mkdir()
    default_config("causal-lm").save(tmp_path / "b" / "config.toml")
    with pytest.raises(ConfigError, match="'a'"):
        run_config_diff(tmp_path / "a", tmp_path / "b")


def test_curves_keep_the_latest_value_of_a_repeated_step_and_skip_damage():
    events = [
        {"kind": "eval", "step": 0, "metrics": {"accuracy": 0.5}, "teacher_metrics": {"accuracy": 0.9}},
        {"kind": "step", "step": 1, "losses": {"total": 3.0, "logit": 2.0}, "lr": 0.1},
        {"kind": "step", "step": 2, "losses": {"total": 2.0, "logit": 1.5}, "lr": 0.1},
        # resumed from the checkpoint at step 1: step 2 again, then 3
        {"kind": "step", "step": 2, "losses": {"total": 1.8, "logit": "bad"}, "lr": 0.05},
        {"kind": "step", "step": 3, "losses": {"total": 1.0}, "lr": 0.01},
        {"kind": "step", "step": "x", "losses": {"total": 99.0}},
        {"kind": "step", "step": 4, "losses": "garbage"},
        "not a dict",
        {"kind": "eval", "step": 3, "metrics": {"accuracy": 0.8}},
    ]
    c = curves_from_events(events, "accuracy")
    assert c.losses["total"][0].tolist() == [1.0, 2.0, 3.0]
    assert c.losses["total"][1].tolist() == [3.0, 1.8, 1.0]
    assert c.losses["logit"][1].tolist() == [2.0, 1.5]
    assert c.lr[1].tolist() == [0.1, 0.05, 0.01]
    assert c.series("headline")[1].tolist() == [0.5, 0.8]
    assert c.teacher_metrics == {"accuracy": 0.9}


def test_summary_rows_show_the_before_after_figures():
    s = {"task": "sequence-classification", "headline_metric": "accuracy",
         "teacher_metrics": {"accuracy": 0.8}, "student_metrics_before": {"accuracy": 0.4, "agreement": 0.5},
         "student_metrics": {"accuracy": 0.72, "agreement": 0.9}, "teacher_params": 1000,
         "student_params": 500, "teacher_size_mb": 4.0, "student_size_mb": 2.0,
         "teacher_latency_ms": 10.0, "student_latency_ms": 4.0, "speedup": 2.5, "quality_retained": 0.9}
    rows = {r[0]: r[1:] for r in summary_rows(s)}
    assert rows["Accuracy"] == ("80.0%", "40.0%", "72.0%")
    assert rows["Agreement with teacher"] == ("100.0%", "50.0%", "90.0%")
    assert rows["Parameters"] == ("1,000", "500", "500")
    assert rows["Weights on disk (MB)"] == ("4", "", "2")
    assert rows["Speed-up"] == ("1x", "", "2.50x")
    assert rows["Quality retained (accuracy)"] == ("100%", "50.0%", "90.0%")


def test_summary_rows_add_plain_training_when_the_run_has_a_baseline():
    s = {"task": "causal-lm", "headline_metric": "perplexity", "steps": 40, "duration_s": 12.0,
         "teacher_metrics": {"perplexity": 10.0}, "student_metrics_before": {"perplexity": 400.0},
         "student_metrics": {"perplexity": 20.0, "kl_to_teacher": 0.5},
         "baseline_metrics": {"perplexity": 25.0, "kl_to_teacher": 0.9},
         "baseline": {"steps": 40, "duration_s": 9.5, "quality_retained": 0.4},
         "teacher_params": 1000, "student_params": 500, "speedup": 2.0, "quality_retained": 0.5}
    assert summary_columns(s) == ["teacher", "student before", "student after",
                                  "plain training (no teacher)"]
    rows = summary_rows(s)
    assert all(len(r) == 5 for r in rows)
    rows = {r[0]: r[1:] for r in rows}
    assert rows["Perplexity (lower is better)"] == ("10", "400", "20", "25")
    assert rows["KL divergence to teacher"][2:] == ("0.5", "0.9")
    assert rows["Parameters"] == ("1,000", "500", "500", "500")
    assert rows["Training steps"] == ("", "", "40", "40")
    assert rows["Training time (s)"] == ("", "", "12.0", "9.5")
    assert rows["Speed-up"] == ("1x", "", "2.00x", "")
    assert rows["Quality retained (perplexity)"] == ("100%", "2.5%", "50.0%", "40.0%")
    # Without "baseline" figures the plain column's quality comes from its metrics.
    del s["baseline"]
    assert {r[0]: r[1:] for r in summary_rows(s)}["Quality retained (perplexity)"][3] == "40.0%"
    # No baseline: the usual three columns, rows of four.
    del s["baseline_metrics"]
    assert summary_columns(s) == ["teacher", "student before", "student after"]
    assert all(len(r) == 4 for r in summary_rows(s))
    assert "Training steps" not in {r[0] for r in summary_rows(s)}


def test_summary_rows_of_a_damaged_summary_do_not_raise(tmp_path):
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert read_summary(tmp_path) == {}
    (tmp_path / "summary.json").write_text("{torn")
    assert read_summary(tmp_path) == {}
    weird = {"student_metrics": "x", "teacher_metrics": {"perplexity": "high"}, "speedup": "fast",
             "student_metrics_before": {"perplexity": 3.0}, "quality_retained": None, "headline_metric": 5}
    rows = summary_rows(weird)
    assert rows == [("Perplexity (lower is better)", "", "3", "")]
    assert compare_rows([weird, {}]) == []  # nothing readable to compare, and no error


def test_compare_rows_put_runs_side_by_side():
    a = {"headline_metric": "perplexity", "student_metrics": {"perplexity": 12.5}, "speedup": 2.0,
         "quality_retained": 0.8, "student_params": 100, "steps": 4, "total_steps": 4}
    b = {"headline_metric": "perplexity", "student_metrics": {"perplexity": 10.0}, "speedup": 1.5,
         "student_params": 200, "steps": 1, "total_steps": 4}
    rows = dict(compare_rows([a, b]))
    assert rows["Headline metric"] == ["Perplexity 12.5", "Perplexity 10"]
    assert rows["Speed-up"] == ["2.00x", "1.50x"]
    assert rows["Quality retained"] == ["80.0%", ""]
    assert rows["Student parameters"] == ["100", "200"]
    assert rows["Steps"] == ["4 of 4", "1 of 4"]
    assert "Latency per sample (ms)" not in rows  # no run has it


def test_metric_names_import_without_torch():
    import subprocess
    import sys

    code = ("import sys, kdstudio.core.metrics, kdstudio.core.run_compare, kdstudio.core.catalog; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_key_help_and_value_format():
    assert "Softens both distributions" in key_help("method.temperature")
    assert key_help("method.nothing") == "" and key_help("name.x") == ""
    assert format_value(True) == "true" and format_value("") == "(empty)" and format_value(None) == "(not set)"
    assert format_value([[1, 2]]) == "[[1, 2]]" and format_value(0.5) == "0.5"


@pytest.mark.slow
def test_curves_of_a_stopped_run_and_a_torn_line(tiny):
    stop = threading.Event()

    def sink(e):
        if e.kind == "step" and e.step >= 1:
            stop.set()

    r = run_training(tiny_config("causal-lm", tiny["gpt2"], name="s", training={"max_steps": 4}), sink, stop)
    assert r.status == "stopped"
    with open(r.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"kind": "step", "step": 9, "losses": {"tot')  # a crash mid-write
    c = run_curves(r.run_dir)
    assert c.losses["total"][0].tolist() == [1.0]
    assert json.loads((r.run_dir / "summary.json").read_text())["status"] == "stopped"
