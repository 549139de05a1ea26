"""What an export leaves behind: its own card (README.md in the export folder), and its entry
in the run's summary.json["exports"] and the run card's "## Exports" section."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from kdstudio.core.export.graph import output_name
from kdstudio.core.export.result import ExportResult
from kdstudio.core.runs import Run, atomic_write_text


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def percent(v: float | None) -> str:
    return f"{v:.1%}" if v is not None else "-"


def summary_entry(run: Run, r: ExportResult) -> dict[str, Any]:
    """The export as summary.json lists it; the folder relative to the run when inside it."""
    try:
        where = str(r.path.resolve().relative_to(run.path.resolve()))
    except ValueError:
        where = str(r.path)
    return {"format": r.format, "quantize": r.precision, "path": where,
            "size_bytes": r.size_bytes, "size_mb": round(r.size_bytes / 2**20, 3),
            "size_ratio": round(r.size_ratio, 4) if r.size_ratio else None,
            "max_abs_diff": r.max_abs_diff, "latency_ms": r.latency_ms,
            "student_latency_ms": r.student_latency_ms, "metric": r.metric, "value": r.value,
            "student_value": r.student_value, "quality_kept": r.quality_kept,
            "timing": r.timing or None,
            "created": _dt.datetime.now().isoformat(timespec="seconds")}


def record(run: Run, result: ExportResult) -> None:
    """Add (or replace, for the same folder) the export in summary.json and the run's card."""
    entry = summary_entry(run, result)
    exports = [e for e in run.summary().get("exports", []) if e.get("path") != entry["path"]]
    summary = run.update_summary(exports=[*exports, entry])
    readme = run.path / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else f"# {run.path.name}\n"
    atomic_write_text(readme, with_exports_section(text, summary.get("exports", [])))


def _entry_latency(e: dict[str, Any], name: str) -> str:
    """An export's or its student's latency as listed: the median, and its spread where the
    entry has its timing session (exports from before have the median alone)."""
    from kdstudio.core.timing import Session

    session = Session.from_dict(e.get("timing"))
    if session is not None and name in session.samples:
        return session.latency(name).text("4g")
    return fmt(e.get("latency_ms" if name == "export" else "student_latency_ms"))


def with_exports_section(text: str, exports: list[dict[str, Any]]) -> str:
    """The card with its '## Exports' section (re)written from the summary's list."""
    start = text.find("\n## Exports")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + (text[end:] if end >= 0 else "\n")
    rows = "\n".join(
        f"| {e['format']} | {e['quantize']} | {e['path']} | {fmt(e['size_mb'])} | "
        f"{percent(e.get('size_ratio'))} | {fmt(e['max_abs_diff'], 3)} | "
        f"{_entry_latency(e, 'export')} | "
        f"{_entry_latency(e, 'student')} | {e['metric']}: {fmt(e['value'])} "
        f"(student {fmt(e['student_value'])}) | "
        f"{percent(e.get('quality_kept'))} |" for e in exports)
    section = ("\n## Exports\n\nChecked on the run's eval rows against the PyTorch student "
               "(latency: median ms per sample on this machine's CPU, with the p10\u2013p90 "
               "spread; the export and the student timed in turns).\n\n"
               "| format | precision | folder | size (MB) | size vs student | max abs diff | "
               "latency (ms) | student latency (ms) | quality | quality kept |\n"
               "|---|---|---|---|---|---|---|---|---|---|\n" + rows + "\n")
    return text.rstrip("\n") + "\n" + section


def export_card(run: Run, task: Any, r: ExportResult, eval_rows: int) -> str:
    """The export folder's README.md: what it is, how to run it, and its figures."""
    name = run.summary().get("name", run.path.name)
    if r.format == "onnx":
        usage = (f"```python\nimport onnxruntime as ort\nfrom transformers import AutoTokenizer\n"
                 f"tok = AutoTokenizer.from_pretrained('.')\n"
                 f"sess = ort.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])\n"
                 f"enc = tok(['some text'], padding=True, return_tensors='np')\n"
                 f"{output_name(task)} = sess.run(None, {{'input_ids': enc['input_ids'], "
                 f"'attention_mask': enc['attention_mask']}})[0]\n```\n")
    else:
        usage = "Load it with transformers' from_pretrained on this folder.\n"
    notes = "".join(f"- {n}\n" for n in r.notes)
    lat_e, lat_s = r.latencies()
    if lat_e.load.busy:
        notes += f"- The latencies were {lat_e.load.words()}.\n"
    return (f"# {name}: {r.format} {r.precision}\n\nThe student of the KD Studio run "
            f"'{run.path.name}' ({task.name}), exported to {r.format} ({r.precision}).\n\n"
            f"{usage}\n"
            f"| | export | PyTorch student |\n|---|---|---|\n"
            f"| Size on disk (MB) | {fmt(r.size_bytes / 2**20)} | "
            f"{fmt(r.student_size_bytes / 2**20)} |\n"
            f"| Latency per sample (CPU, median and p10\u2013p90) | {lat_e.text('4g')} | "
            f"{lat_s.text('4g')} |\n"
            f"| {r.metric} on {eval_rows} eval rows | {fmt(r.value)} | "
            f"{fmt(r.student_value)} |\n\n"
            f"Largest absolute difference from the PyTorch student's outputs: "
            f"{fmt(r.max_abs_diff, 3)}.\n\n{notes}")


# Fidelity figures beside the run's own metric (ExportResult.extra).
EXTRA_LABELS = {"cosine_to_student": "Mean cosine to the PyTorch student",
                "neighbour_agreement_with_student": "Nearest-neighbour agreement with the student",
                "agreement_with_student": "Predictions agreeing with the student"}


def metric_value(metric: str, v: float | None) -> str:
    from kdstudio.core.metrics import PERCENT_METRICS

    if v is None:
        return "-"
    return f"{v:.2%}" if metric in PERCENT_METRICS else f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def figures(r: ExportResult, summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, export, PyTorch student, teacher) rows for a table of the export's figures.

    The teacher's column comes from the run's summary.json (measured when the run ended);
    its latency is left out, since it was timed at another moment on a differently loaded
    machine.
    """
    from kdstudio.core.metrics import METRIC_LABELS

    mb = 2**20
    teacher_mb = summary.get("teacher_size_mb")
    ratio = f" ({r.size_ratio:.1%} of the student)" if r.size_ratio else ""
    speed = (f" ({r.student_latency_ms / r.latency_ms:.2g}x as fast)"
             if r.latency_ms > 0 else "")
    lat_e, lat_s = r.latencies()
    busy = f" ({lat_e.load.words()})" if lat_e.load.busy else ""
    teacher_value = (summary.get("teacher_metrics") or {}).get(r.metric)
    label = METRIC_LABELS.get(r.metric) or EXTRA_LABELS.get(r.metric, r.metric)
    rows = [("Size on disk", f"{r.size_bytes / mb:.2f} MB{ratio}",
             f"{r.student_size_bytes / mb:.2f} MB",
             f"{teacher_mb:.2f} MB" if isinstance(teacher_mb, (int, float)) else ""),
            ("Latency per sample (median, p10\u2013p90)", f"{lat_e.text()}{speed}{busy}",
             lat_s.text(), ""),
            (label, metric_value(r.metric, r.value), metric_value(r.metric, r.student_value),
             metric_value(r.metric, teacher_value) if teacher_value is not None else ""),
            ("Quality kept (of the student's)", percent(r.quality_kept), "100%", "")]
    rows += [(EXTRA_LABELS.get(k, k), f"{v:.4f}", "", "") for k, v in r.extra.items()]
    rows.append(("Largest difference from PyTorch", f"{r.max_abs_diff:.2g}", "", ""))
    return rows
