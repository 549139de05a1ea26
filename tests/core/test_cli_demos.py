"""`kdstudio demo --task ...`: the three demos, a missing demo file, the four-column table."""

import io

from rich.console import Console

from kdstudio.cli.commands import DEMOS, before_after_table, build_parser, main
from tests.conftest import CORPUS, tiny_config


def test_the_demo_command_offers_three_demos(capsys):
    assert set(DEMOS) == {"sentence-embedding", "sequence-classification", "causal-lm",
                          "token-classification"}
    assert DEMOS["causal-lm"] == "causal-lm.toml"
    sub = build_parser()._subparsers._group_actions[0].choices["demo"]
    help_text = " ".join(sub.format_help().split())
    for name in DEMOS:
        assert name in help_text
    assert build_parser().parse_args(["demo", "--task", "causal-lm"]).task == "causal-lm"


def test_a_missing_demo_file_is_named(capsys, tmp_path, monkeypatch):
    (tmp_path / "demos").mkdir()
    monkeypatch.setattr("kdstudio.core.runs.resources_dir", lambda: tmp_path)
    assert main(["demo", "--task", "causal-lm"]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "causal-lm demo's config" in out and "causal-lm.toml" in out and "is missing" in out
    assert "sentence-embedding" in out  # the demos that would work


def test_the_causal_lm_demo_runs_from_its_file(capsys, tmp_path, monkeypatch, tiny):
    (tmp_path / "demos").mkdir()
    (tmp_path / "corpus").symlink_to(CORPUS.parent, target_is_directory=True)
    tiny_config("causal-lm", tiny["gpt2"], name="lm-demo").save(tmp_path / "demos" / "causal-lm.toml")
    monkeypatch.setattr("kdstudio.core.runs.resources_dir", lambda: tmp_path)
    assert main(["demo", "--task", "causal-lm", "--steps", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "causal-lm: distilling a small GPT language model" in out
    assert "before and after distillation" in out and "Perplexity" in out


def test_the_table_has_a_plain_training_column_with_a_baseline():
    s = {"name": "demo", "headline_metric": "perplexity", "teacher_metrics": {"perplexity": 10.0},
         "student_metrics_before": {"perplexity": 400.0}, "student_metrics": {"perplexity": 20.0},
         "baseline_metrics": {"perplexity": 31.0}, "baseline": {"steps": 3, "duration_s": 1.0},
         "steps": 3}
    console = Console(file=io.StringIO(), width=160, highlight=False)
    table = before_after_table(s)
    assert [c.header for c in table.columns][1:] == ["teacher", "student before", "student after",
                                                     "plain training (no teacher)"]
    console.print(table)
    text = console.file.getvalue()
    assert "plain training (no teacher)" in text and "31" in text
    del s["baseline_metrics"]
    assert len(before_after_table(s).columns) == 4
