import pytest
import tomllib

from kdstudio.cli.commands import main
from kdstudio.core.runs import list_runs
from tests.conftest import tiny_config


def test_template_is_a_valid_config(capsys, tmp_path):
    assert main(["config", "--template", "--task", "causal-lm"]) == 0
    text = capsys.readouterr().out
    assert tomllib.loads(text)["task"] == "causal-lm"
    path = tmp_path / "t.toml"
    path.write_text(text)
    assert main(["config", "--check", str(path)]) == 0
    assert "valid causal-lm config" in capsys.readouterr().out


def test_bad_config_is_refused_with_the_key(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('task = "causal-lm"\n[training]\nbatchsize = 4\n')
    assert main(["run", str(path)]) == 2
    out = capsys.readouterr().out
    assert "Invalid run configuration" in out and "training.batchsize" in out and "batch_size" in out
    good = tmp_path / "good.toml"
    good.write_text('task = "causal-lm"\n')
    assert main(["run", str(good), "--set", "method.logit_loss=kl"]) == 2
    assert "'forward_kl'" in capsys.readouterr().out


@pytest.mark.slow
def test_run_list_show_resume(capsys, tmp_path, tiny):
    cfg = tiny_config("causal-lm", tiny["gpt2"], name="cli-run", training={"max_steps": 1})
    path = tmp_path / "run.toml"
    cfg.save(path)
    assert main(["run", str(path), "--set", "training.max_steps=2"]) == 0
    out = capsys.readouterr().out
    assert "before and after distillation" in out and "Perplexity" in out and "Speed-up" in out
    (info,) = list_runs()
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "cli-run" in out and "finished" in out
    assert main(["show", "cli-run"]) == 0
    assert "student after" in capsys.readouterr().out
    assert main(["resume", info.id]) == 0
    assert "already finished" in capsys.readouterr().out
    assert main(["show", "no-such-run"]) == 2
    assert "no run called 'no-such-run'" in capsys.readouterr().out


def test_preview_and_missing_data(capsys, tmp_path):
    assert main(["preview", "builtin:everyday-topics", "--rows", "3"]) == 0
    out = capsys.readouterr().out
    assert "1700 rows" in out and "topic (label)" in out
    assert main(["preview", str(tmp_path / "none.csv")]) == 2
    assert "does not exist" in capsys.readouterr().out


def test_reference_and_help(capsys):
    assert main(["config", "--reference"]) == 0
    assert "`training.max_steps`" in capsys.readouterr().out
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "resume" in out and "--demo" in out
