"""What a finished run leaves behind: the student folder, size/speed figures and a model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from kdstudio.core.evaluation import (
    METRIC_LABELS,
    Evaluator,
    latency_sample,
    time_forwards,
    weights_size_bytes,
)
from kdstudio.core.runs import Run, atomic_write_text
from kdstudio.core.tasks import get_task
from kdstudio.core.timing import run_figures, summary_latency, summary_session, speedup_text

# Sentence-transformers reads these beside the transformers files.
_ST_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
]
_ST_NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize",
                 "type": "sentence_transformers.models.Normalize"}


def save_student(folder: Path, student: torch.nn.Module, tokenizer: Any, task: str,
                 teacher_source: str, state_dict: dict[str, Any] | None = None) -> None:
    """save_pretrained with the tokenizer; for a sentence encoder also the sentence-transformers files.

    Written to a temporary folder and swapped in, so an earlier student survives a failed save.
    ``state_dict``: the student's whole weights when the module holds only a shard (FSDP).
    """
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    student.save_pretrained(tmp, safe_serialization=True,
                            **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.save_pretrained(tmp)
    if get_task(task).saves_sentence_transformers:
        _write_sentence_transformers_files(tmp, student, teacher_source)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _write_sentence_transformers_files(folder: Path, student: torch.nn.Module, teacher_source: str) -> None:
    dim = student.config.hidden_size
    teacher = Path(teacher_source)
    normalize = False
    if (teacher / "modules.json").exists():
        try:
            mods = json.loads((teacher / "modules.json").read_text(encoding="utf-8"))
            normalize = any(m.get("type", "").endswith("Normalize") for m in mods)
        except (OSError, json.JSONDecodeError):
            normalize = False
    modules = list(_ST_MODULES) + ([_ST_NORMALIZE] if normalize else [])
    (folder / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    max_len = 256
    if (teacher / "sentence_bert_config.json").exists():
        try:
            max_len = json.loads((teacher / "sentence_bert_config.json").read_text())["max_seq_length"]
        except (OSError, KeyError, json.JSONDecodeError):
            pass
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_len, "do_lower_case": False}), encoding="utf-8")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": dim, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2), encoding="utf-8")
    if normalize:
        (folder / "2_Normalize").mkdir(exist_ok=True)


def measure(evaluator: Evaluator, teacher: torch.nn.Module, student: torch.nn.Module,
            teacher_tok: Any, student_tok: Any, teacher_source: str, student_dir: Path,
            repeats: int) -> dict[str, Any]:
    """Size on disk and latency per sample of both models (timed together, in turns: median,
    spread and the machine's load, timing.run_figures), and the speed-up."""
    es, dev, ac = evaluator.eval_set, evaluator.device, evaluator.autocast
    session = time_forwards({"teacher": (teacher, latency_sample(es, teacher_tok)),
                             "student": (student, latency_sample(es, student_tok))},
                            es.task, device=dev, repeats=repeats, autocast=ac)
    t_size = weights_size_bytes(teacher_source)
    s_size = weights_size_bytes(student_dir)
    return {
        "teacher_size_mb": round(t_size / 2**20, 3), "student_size_mb": round(s_size / 2**20, 3),
        **run_figures(session),
        "size_ratio": round(s_size / t_size, 4) if t_size else None,
    }


def fmt_metric(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _latency(s: dict[str, Any], role: str) -> str:
    lat = summary_latency(s, role)
    return lat.text() if lat is not None else "-"


def _timing_note(s: dict[str, Any]) -> str:
    """Where and when both were timed, and the load, in words."""
    session = summary_session(s)
    if session is None:
        return ""
    load = session.load.words()
    return (f"\n\nBoth timed together on {session.device} at {session.timed_at}: the median of "
            f"{session.repeats} passes in turns, with the p10\u2013p90 spread"
            + (f"; {load}." if load else "."))


def write_model_card(run: Run, s: dict[str, Any]) -> None:
    """README.md in the run folder (and the student folder): what was distilled and how well."""
    metrics = list(dict.fromkeys([*s.get("teacher_metrics", {}), *s.get("student_metrics", {})]))
    rows = "\n".join(
        f"| {METRIC_LABELS.get(m, m)} | {fmt_metric(s.get('teacher_metrics', {}).get(m))} | "
        f"{fmt_metric(s.get('student_metrics_before', {}).get(m))} | "
        f"{fmt_metric(s.get('student_metrics', {}).get(m))} |" for m in metrics)
    qr = s.get("quality_retained")
    text = f"""# {s.get('name', run.path.name)}

A student model distilled with KD Studio.

- Task: {s.get('task')}
- Teacher: {s.get('teacher')} ({s.get('teacher_params', 0):,} parameters)
- Student: {s.get('student')} ({s.get('student_params', 0):,} parameters)
- Kept teacher layers: {s.get('kept_layers') or '-'}
- Steps: {s.get('steps')} on {s.get('device')} ({s.get('precision')})

## Quality

| metric | teacher | student before | student after |
|---|---|---|---|
{rows}

Quality retained ({s.get('headline_metric')}): {f'{qr:.1%}' if qr is not None else '-'}

## Size and speed

| | teacher | student |
|---|---|---|
| Parameters | {s.get('teacher_params', 0):,} | {s.get('student_params', 0):,} |
| Weights on disk (MB) | {fmt_metric(s.get('teacher_size_mb'))} | {fmt_metric(s.get('student_size_mb'))} |
| Latency per sample | {_latency(s, 'teacher')} | {_latency(s, 'student')} |

Speed-up: {speedup_text(s.get('speedup'), s.get('speedup_spread'), s.get('speedup_rounds'))}{_timing_note(s)}

The full configuration is in config.toml; every logged event in metrics.jsonl.
"""
    atomic_write_text(run.path / "README.md", text)
    if run.student_dir.is_dir():
        atomic_write_text(run.student_dir / "README.md", text)
