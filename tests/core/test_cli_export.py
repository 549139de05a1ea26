"""`kdstudio export` on tiny fake runs (tests/core/test_export.py builds them)."""

from __future__ import annotations

import json

import pytest

from kdstudio.cli.commands import main
from kdstudio.core.runs import runs_dir
from tests.core.test_export import make_run


def _with_teacher(run, **figures):
    """The teacher's figures as a finished run's summary.json holds them."""
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary.update(figures)
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")


def _summary(run) -> dict:
    return json.loads((run / "summary.json").read_text(encoding="utf-8"))


def test_safetensors_fp16_by_run_id_prints_stages_and_the_table(capsys):
    run = make_run(runs_dir(), "sequence-classification")  # in the store: found by its id
    _with_teacher(run, teacher_metrics={"accuracy": 0.875}, teacher_size_mb=12.5)
    assert main(["export", "run-sequence", "--format", "safetensors", "--quantize", "fp16"]) == 0
    out = capsys.readouterr().out
    for stage in ("load student", "write safetensors", "check against the PyTorch student",
                  "measure latency", "record the export"):
        assert f"-> {stage}" in out
    table = out[out.index("against the PyTorch student\n"):]
    for row in ("Size on disk", "Latency per sample", "Accuracy", "Quality kept",
                "Largest difference from PyTorch", "safetensors fp16", "PyTorch student",
                "teacher (from the run)", "12.50 MB", "87.50%", "% of the student)"):
        assert row in table, row
    folder = run / "exports" / "safetensors-fp16"
    assert str(folder) in out.replace("\n", "")
    (entry,) = _summary(run)["exports"]
    assert entry["path"] == "exports/safetensors-fp16" and entry["quantize"] == "fp16"
    assert f"{entry['size_ratio']:.1%} of the student" in table


def test_out_folder_and_fp32_spelled_out(capsys, tmp_path):
    run = make_run(tmp_path, "sentence-embedding")
    out_dir = tmp_path / "shipped"
    assert main(["export", str(run), "--format", "SafeTensors", "--quantize", "fp32",
                 "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "safetensors fp32" in out and "teacher" not in out  # no teacher figures in this run
    assert "Mean cosine to the PyTorch student" in out
    assert (out_dir / "model.safetensors").is_file() and (out_dir / "modules.json").is_file()
    assert _summary(run)["exports"][0]["path"] == str(out_dir)


@pytest.mark.slow
def test_onnx_int8_of_a_language_model(capsys, tmp_path):
    run = make_run(tmp_path, "causal-lm")
    _with_teacher(run, teacher_metrics={"perplexity": 159.03}, teacher_size_mb=5.61)
    assert main(["export", str(run), "--format", "onnx", "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    assert "-> quantize to int8" in out and "Perplexity (lower is better)" in out
    assert "159.03" in out and "5.61 MB" in out and "int8: dynamic quantization" in out
    assert (run / "exports" / "onnx-int8" / "model.onnx").is_file()
    assert [e["quantize"] for e in _summary(run)["exports"]] == ["int8"]


@pytest.mark.parametrize("args, words", [
    (["--format", "tflite"], ["Export failed", "'tflite'", "onnx, safetensors"]),
    (["--format", "safetensors", "--quantize", "int8"],
     ["Export failed", "int8 is not offered for safetensors", "'onnx'"]),
    (["--format", "onnx", "--quantize", "int4"], ["Export failed", "'int4'", "int8, fp16"]),
])
def test_unknown_format_or_quantization(capsys, tmp_path, args, words):
    run = make_run(tmp_path, "causal-lm", student=False)
    assert main(["export", str(run), *args]) == 2
    out = capsys.readouterr()
    for w in words:
        assert w in out.out, w
    assert "Traceback" not in out.out + out.err
    assert not (run / "exports").exists()


def test_not_a_run_a_missing_id_and_no_student(capsys, tmp_path):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    out = capsys.readouterr().out
    assert "Run problem" in out and "not a KD Studio run folder" in out and "Exporting" not in out
    assert main(["export", "no-such-run", "--format", "onnx"]) == 2
    assert "no run called 'no-such-run'" in capsys.readouterr().out
    run = make_run(tmp_path, "sentence-embedding", student=False)
    assert main(["export", str(run), "--format", "safetensors"]) == 2
    out = capsys.readouterr()
    assert "no student/ folder" in out.out and "Traceback" not in out.out + out.err


def test_format_is_required_and_help_is_light(capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "some-run"])
    assert info.value.code == 2
    assert "--format" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert "--quantize int8|fp16" in out and "--out DIR" in out
