"""Export a run's student to ONNX (fp32, int8, fp16) or safetensors (fp32, fp16), and check it.

Every export is run on the run's own eval rows beside the PyTorch student: the largest
absolute difference of the outputs, the latency per sample of both, and the run's quality
figure for both. The folder it writes is self-contained (model, tokenizer, config, a card),
and the run's summary.json and README.md record it.

The pieces: graph (what is exported and how it is called), onnx_export and quantize (ONNX,
its graph passes, int8), safetensors_export, measure (checking and timing), record (the
cards and the summary), result (the choices and ExportResult).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from kdstudio.core.config import load_config
from kdstudio.core.data import load_text_data
from kdstudio.core.errors import ExportError, RunError
from kdstudio.core.events import EventSink, Stage, ignore
from kdstudio.core.export.graph import ONNX_INPUTS, Graph, output_name, runner
from kdstudio.core.export.measure import (
    CHECK_STAGE,
    compare,
    model_bytes,
    teacher_embeddings,
    weights_bytes,
)
from kdstudio.core.export.onnx_export import require_onnx, write_onnx
from kdstudio.core.export.record import export_card, record
from kdstudio.core.export.result import FORMATS, QUANTIZE, ExportResult, quality_kept
from kdstudio.core.export.safetensors_export import (
    copy_st_files,
    st_normalizes,
    write_safetensors,
)
from kdstudio.core.runs import Run, atomic_write_json, atomic_write_text
from kdstudio.core.tasks import get_task
from kdstudio.core.timing import time_models

MAX_LOGIT_BYTES = 256 * 2**20  # a generative model's eval batches are cut so their logits fit
MARKER = "kdstudio_export.json"  # in every export folder: what it is, and that it may be replaced

__all__ = ["FORMATS", "QUANTIZE", "ExportError", "ExportResult", "check_choice", "export_run",
           "open_run"]


def export_run(run_dir: str | Path, fmt: str = "onnx", quantize: str | None = None,
               out_dir: str | Path | None = None, on_event: EventSink | None = None, *,
               max_rows: int | None = None) -> ExportResult:
    """Export the student of the run in run_dir; see the module docstring.

    out_dir defaults to <run>/exports/<fmt>-<quantize or fp32>/ and is replaced as a whole.
    max_rows caps the eval rows used for checking (default: the run's evaluation.max_samples).
    on_event receives a Stage as each step begins and Progress while the eval rows are checked.
    """
    emit = on_event or ignore
    quantize = quantize or None
    check_choice(fmt, quantize)
    run = open_run(run_dir)
    if fmt == "onnx":
        require_onnx()
    cfg = load_config(run.config_path)
    task = get_task(cfg.task)
    out = Path(out_dir).expanduser() if out_dir else default_folder(run.path, fmt, quantize)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        # The folder is replaced as a whole: never someone's folder of other things.
        raise ExportError(f"The output folder '{out}' exists and is not an earlier export.",
                          hint="Give a new or empty folder, or leave it out to export into the "
                               "run's exports/ folder.")

    emit(Stage("load student", str(run.student_dir)))
    from kdstudio.core.models import load_model

    trust = cfg.student.trust_remote_code if cfg.student.name else cfg.teacher.trust_remote_code
    loaded = load_model(str(run.student_dir), task, trust_remote_code=trust, role="student")
    model, tok = loaded.model.float().eval(), loaded.tokenizer
    normalize = st_normalizes(run.student_dir) if task.export_pools else False
    graph = Graph(model, task, normalize).eval()
    reference = runner(graph)

    rows = cfg.evaluation.max_samples if max_rows is None else max_rows
    emit(Stage("load eval rows", f"up to {rows or 512} rows of {cfg.data.dataset}"))
    eval_set, batches, sample = _eval_batches(cfg, task, tok, rows or 512, model)
    labels = eval_set.labels

    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=_mkdir(out.parent)))
    try:
        tok.save_pretrained(tmp)
        if fmt == "onnx":
            candidate = write_onnx(graph, model, task, normalize, quantize, batches[0], tmp,
                                   emit, notes)
            model.config.save_pretrained(tmp)  # id2label and sizes, for whoever runs the graph
        else:
            candidate = write_safetensors(model, task, normalize, quantize, tmp, emit, notes)
            if task.saves_sentence_transformers:  # loaded like the student
                copy_st_files(run.student_dir, tmp)

        emit(Stage(CHECK_STAGE, f"{len(eval_set.texts)} eval rows"))
        teacher_emb = None
        if task.export_check_reads_teacher(bool(labels)):
            teacher_emb = teacher_embeddings(run, task, eval_set, model, notes)
        names = [str(n) for _, n in sorted((int(k), v) for k, v in
                                           (getattr(model.config, "id2label", None) or {}).items())]
        check = compare(task, batches, reference, candidate, labels, len(tok), teacher_emb, emit,
                        label_names=names)

        repeats = cfg.evaluation.latency_repeats
        emit(Stage("measure latency", f"median of {max(1, repeats)} passes on one sample, "
                                      "the export and the PyTorch student in turns"))
        session = time_models({"export": lambda run=candidate: run(sample),
                               "student": lambda: reference(sample)}, repeats=repeats)
        lat_export = session.latency("export").median_ms
        lat_student = session.latency("student").median_ms
        result = ExportResult(
            path=out, format=fmt, quantize=quantize, size_bytes=model_bytes(tmp, fmt),
            student_size_bytes=weights_bytes(run.student_dir), max_abs_diff=check.max_abs_diff,
            latency_ms=round(lat_export, 3), student_latency_ms=round(lat_student, 3),
            metric=check.metric, value=check.value, student_value=check.student_value,
            quality_kept=quality_kept(check.metric, check.value, check.student_value),
            extra=check.extra, notes=notes, timing=session.to_dict())
        del candidate  # an ORT session holds the files open on some systems
        atomic_write_text(tmp / "README.md", export_card(run, task, result, len(eval_set.texts)))
        atomic_write_json(tmp / MARKER, {
            "task": task.name, "format": fmt, "quantize": result.precision,
            "inputs": list(ONNX_INPUTS) if fmt == "onnx" else None,
            "output": output_name(task) if fmt == "onnx" else None,
            "normalized": normalize, "max_length": cfg.data.max_length})
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    emit(Stage("record the export", "in the run's summary.json and README.md"))
    record(run, result)
    return result


def default_folder(run_dir: Path, fmt: str, quantize: str | None) -> Path:
    return run_dir / "exports" / f"{fmt}-{quantize or 'fp32'}"


def check_choice(fmt: str, quantize: str | None) -> None:
    """Raise ExportError unless fmt and quantize (None = fp32) are offered together."""
    if fmt not in FORMATS:
        raise ExportError(f"The export format '{fmt}' is not known.",
                          hint=f"Choose one of: {', '.join(FORMATS)}.")
    if quantize not in QUANTIZE[fmt]:
        if fmt == "safetensors" and quantize == "int8":
            # transformers cannot load int8 tensors from a plain safetensors file without an
            # extra quantization library, so such a folder would not be self-contained.
            raise ExportError("int8 is not offered for safetensors: transformers cannot load "
                              "int8 weights from a plain safetensors file without an extra "
                              "quantization library.",
                              hint="Use format 'onnx' with quantize 'int8' (runs with "
                                   "onnxruntime), or safetensors with 'fp16'.")
        allowed = ", ".join("none (fp32)" if q is None else q for q in QUANTIZE[fmt])
        raise ExportError(f"The quantization '{quantize}' is not available for {fmt}.",
                          hint=f"For {fmt} choose one of: {allowed}.")


def open_run(run_dir: str | Path) -> Run:
    """The run in run_dir, if it is a finished (or stopped) run with a saved student."""
    path = Path(run_dir).expanduser()
    if not path.is_dir() or not (path / "config.toml").exists():
        raise RunError(f"'{path}' is not a KD Studio run folder: it has no config.toml.",
                       hint="Give a folder from the run store ('kdstudio runs' lists them).")
    run = Run(path)
    if not (run.student_dir / "config.json").exists():
        raise RunError(f"The run '{path.name}' has no student/ folder with a saved model, so "
                       "there is nothing to export.",
                       hint="Finish or resume the run first; the student is saved at its end.")
    if run.status() == "running":
        raise RunError(f"The run '{path.name}' is still training; its student/ folder may be "
                       "replaced while it is exported.",
                       hint="Wait until the run finishes or stop it, then export.")
    return run


def _eval_batches(cfg: Any, task: Any, tok: Any, rows: int, model: nn.Module):
    """The run's eval rows, tokenized with the student's tokenizer at the run's max_length."""
    from kdstudio.core.evaluation import EvalSet

    data = load_text_data(cfg.data, task, seed=cfg.training.seed)
    bs = cfg.evaluation.batch_size
    # E.g. a language model's logits are (batch x length x vocab): keep one batch modest.
    bs = task.export_batch_size(bs, model, cfg.data.max_length, MAX_LOGIT_BYTES)
    eval_set = EvalSet(task, data.eval_texts, data.eval_labels, max_samples=rows,
                       max_length=cfg.data.max_length, pack=cfg.data.pack, batch_size=bs)
    batches = [{k: b[k] for k in (*ONNX_INPUTS, "labels") if k in b}
               for b in eval_set.batches(tok)]
    if not batches:
        raise ExportError("The run's eval rows give no input to check the export on.",
                          hint="Check the run's data settings (data.eval_fraction, max_length).")
    sample = {k: v for k, v in task.latency_sample(eval_set, tok).items() if k in ONNX_INPUTS}
    return eval_set, batches, sample


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace out with tmp so that a failed export never leaves half a folder behind."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
