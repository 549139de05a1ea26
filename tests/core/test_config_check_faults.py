"""Faults that 'kdstudio config --check' (and the app's checks, and a run's preflight) find
from a header, a config.json or the first rows, without loading weights or a data set; and a
NaN teacher refused as soon as it has loaded, before anything else is built."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from kdstudio.cli.commands import main
from kdstudio.core.errors import ModelError
from kdstudio.core.events import Stage
from kdstudio.core.preflight import preflight
from tests.conftest import tiny_config

EMBED = "sentence-embedding"
CLASSIFY = "sequence-classification"


def _check(capsys, tmp_path, cfg) -> tuple[int, str]:
    """'kdstudio config --check' on cfg: its exit code and its output on one line."""
    path = tmp_path / "run.toml"
    cfg.save(path)
    rc = main(["config", "--check", str(path)])
    out = " ".join(capsys.readouterr().out.split())
    assert "Traceback" not in out
    return rc, out


def _refused(capsys, tmp_path, cfg) -> str:
    rc, out = _check(capsys, tmp_path, cfg)
    assert rc == 2, out
    return out


def _copy(tiny, tmp_path, name="teacher"):
    return shutil.copytree(tiny["bert"], tmp_path / name)


# -- 1, 2: safetensors files -----------------------------------------------------------------

def test_a_truncated_safetensors_file_is_refused(capsys, tmp_path, tiny):
    folder = _copy(tiny, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])
    out = _refused(capsys, tmp_path, tiny_config(EMBED, folder))
    assert str(weights) in out and "is cut short" in out
    assert f"it has {len(data) // 2:,} bytes" in out and "download the teacher again" in out


@pytest.mark.parametrize("damage,words", [
    ("json", "its header is not valid"),
    ("length", "its first 8 bytes give a header of 1,000,000,000,000 bytes"),
])
def test_a_corrupt_safetensors_header_is_refused(capsys, tmp_path, tiny, damage, words):
    folder = _copy(tiny, tmp_path)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "json":
        data[8:18] = b"not json!!"
    else:
        data[:8] = struct.pack("<Q", 10**12)
    weights.write_bytes(bytes(data))
    out = _refused(capsys, tmp_path, tiny_config(EMBED, folder))
    assert str(weights) in out and "is damaged" in out and words in out


def test_a_sharded_model_missing_a_shard_is_refused(capsys, tmp_path, tiny):
    folder = _copy(tiny, tmp_path)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    out = _refused(capsys, tmp_path, tiny_config(EMBED, folder))
    assert "lacks 1 of the 2 weight files" in out and "model-00002-of-00002" in out


# -- 3: a Hub id while offline ---------------------------------------------------------------

def test_a_hub_id_that_is_not_cached_while_offline_is_refused(capsys, tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    out = _refused(capsys, tmp_path, tiny_config(EMBED, "kd-test/not-in-any-cache"))
    assert "'kd-test/not-in-any-cache' is a Hugging Face Hub id" in out
    assert "not in the local Hugging Face cache" in out and "HF_HUB_OFFLINE is set" in out
    assert "Unset HF_HUB_OFFLINE" in out and "teacher.name to a folder" in out


# -- 4: a model that needs its own code ------------------------------------------------------

def _remote_code_model(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="kd-fancy", architectures=["KdFancyModel"],
                  auto_map={"AutoConfig": "configuration_fancy.KdFancyConfig",
                            "AutoModel": "modeling_fancy.KdFancyModel"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_model_that_needs_remote_code_is_refused_while_trust_is_off(capsys, tmp_path, tiny):
    folder = _remote_code_model(tiny, tmp_path)
    out = _refused(capsys, tmp_path, tiny_config(EMBED, folder))
    assert "needs its own Python code" in out and "'kd-fancy' (KdFancyModel)" in out
    assert "modeling_fancy.KdFancyModel" in out and "teacher.trust_remote_code is off" in out
    assert "set teacher.trust_remote_code = true" in out
    # With trust on, the check lets it through (the model's own code decides at load time).
    preflight(tiny_config(EMBED, folder, teacher={"trust_remote_code": True}))


def test_a_model_type_transformers_does_not_know_without_code_is_refused(capsys, tmp_path,
                                                                        tiny):
    folder = _copy(tiny, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "kd-unheard-of"
    (folder / "config.json").write_text(json.dumps(config))
    out = _refused(capsys, tmp_path, tiny_config(EMBED, folder))
    assert "model type 'kd-unheard-of'" in out and "no auto_map" in out
    assert "upgrade it" in out


# -- 5, 6, 7: data files ---------------------------------------------------------------------

def _csv(tmp_path, name, header, rows):
    path = tmp_path / name
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def test_a_csv_without_a_text_column_is_refused(capsys, tmp_path, tiny):
    data = _csv(tmp_path, "numbers.csv", "review_id,stars", [f"{i},{i % 5 + 1}" for i in range(40)])
    out = _refused(capsys, tmp_path, tiny_config(EMBED, tiny["bert"],
                                                 data={"dataset": str(data)}))
    assert str(data) in out and "has no column of text" in out and "review_id, stars" in out
    assert "data.text_column" in out


@pytest.mark.parametrize("task,label_column", [(CLASSIFY, ""), (CLASSIFY, "mood"),
                                               (EMBED, "mood")])
def test_a_label_column_with_one_class_is_refused(capsys, tmp_path, tiny, task, label_column):
    column = label_column or "label"
    data = _csv(tmp_path, "one.csv", f"text,{column}",
                [f"a sentence number {i},happy" for i in range(40)])
    cfg = tiny_config(task, tiny["bert"], data={"dataset": str(data),
                                                "label_column": label_column})
    out = _refused(capsys, tmp_path, cfg)
    assert f"The label column '{column}' of '{data}' has only one class ('happy')" in out
    assert "at least two classes" in out


def test_a_text_only_file_for_classification_is_refused(capsys, tmp_path, tiny):
    data = tmp_path / "lines.txt"
    data.write_text("".join(f"line {i}\n" for i in range(40)))
    out = _refused(capsys, tmp_path, tiny_config(CLASSIFY, tiny["bert"],
                                                 data={"dataset": str(data)}))
    assert "has only the text column" in out and "label column" in out


@pytest.mark.parametrize("dataset", ["file", "folder", "builtin"])
def test_a_missing_eval_split_is_refused(capsys, tmp_path, tiny, dataset):
    rows = [f"sentence {i},{'ab'[i % 2]}" for i in range(40)]
    if dataset == "file":
        source, have = str(_csv(tmp_path, "d.csv", "text,label", rows)), "train"
    elif dataset == "folder":
        (tmp_path / "d").mkdir()
        _csv(tmp_path / "d", "train.csv", "text,label", rows)
        _csv(tmp_path / "d", "test.csv", "text,label", rows)
        source, have = str(tmp_path / "d"), "test, train"
    else:
        source, have = "builtin:everyday-topics", "train"
    cfg = tiny_config(EMBED, tiny["bert"], data={"dataset": source, "eval_split": "validation"})
    out = _refused(capsys, tmp_path, cfg)
    assert f"The eval split 'validation' is not in '{source}'. Its splits are: {have}." in out
    assert "Set data.eval_split to one of them" in out


def test_good_data_still_passes(capsys, tmp_path, tiny):
    """No false refusals: a folder with train and validation files, detected columns, two
    classes; a jsonl file; a csv with a byte-order mark."""
    rows = [f"a sentence {i},{'ab'[i % 2]}" for i in range(40)]
    (tmp_path / "d").mkdir()
    _csv(tmp_path / "d", "my_train.csv", "sentence,topic", rows)
    _csv(tmp_path / "d", "my_validation.csv", "sentence,topic", rows)
    cfg = tiny_config(CLASSIFY, tiny["bert"], data={"dataset": str(tmp_path / "d"),
                                                    "eval_split": "validation"})
    assert _check(capsys, tmp_path, cfg)[0] == 0
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps({"body": f"t {i}", "n": i, "y": i % 3}) + "\n"
                             for i in range(30)))
    assert _check(capsys, tmp_path, tiny_config(CLASSIFY, tiny["bert"],
                                                data={"dataset": str(jsonl)}))[0] == 0
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufefftext,label\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    assert _check(capsys, tmp_path, tiny_config(EMBED, tiny["bert"],
                                                data={"dataset": str(bom)}))[0] == 0


# -- 8: a NaN teacher, as soon as it has loaded ----------------------------------------------

def test_a_teacher_with_nan_weights_is_refused_as_soon_as_it_loads(tmp_path, tiny):
    import torch
    from transformers import AutoModel

    from kdstudio.core.runs import list_runs
    from kdstudio.core.trainer import run_training

    folder = _copy(tiny, tmp_path, "bert-nan")
    model = AutoModel.from_pretrained(folder)
    with torch.no_grad():
        model.encoder.layer[1].attention.self.query.weight[0, :2] = float("nan")
        model.encoder.layer[2].output.dense.bias[0] = float("inf")
    model.save_pretrained(folder)
    stages: list[str] = []
    with pytest.raises(ModelError) as info:
        run_training(tiny_config(EMBED, folder),
                     lambda e: stages.append(e.name) if isinstance(e, Stage) else None)
    message = str(info.value)
    assert "has 3 NaN or infinite values in its weights" in message
    assert "first in 'encoder.layer.1.attention.self.query.weight', in 2 tensors" in message
    assert stages[-1] == "load teacher"  # refused before the student, the tokenizing, a step
    assert list_runs() == []
