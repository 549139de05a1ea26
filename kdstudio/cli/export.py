"""`kdstudio export`: a run's student as ONNX (fp32, int8, fp16) or safetensors (fp32, fp16).

It prints each stage as the engine reports it, then a table of what the export keeps and
saves against the PyTorch student (and the run's teacher): size, latency, quality, and the
largest difference from PyTorch's outputs. The engine (torch) is imported inside the
command, so `kdstudio --help` stays instant. Imports go one way: commands -> export -> progress.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kdstudio.cli.progress import ProgressSink

USAGE = "kdstudio export RUN --format onnx|safetensors [--quantize int8|fp16] [--out DIR]"


def add_export_parser(sub: Any) -> None:
    ex = sub.add_parser(
        "export", help="export a run's student to ONNX or safetensors, checked against PyTorch",
        description="Export the student of a finished run to ONNX (fp32, int8 or fp16, run with "
                    "onnxruntime) or safetensors (fp32 or fp16, loaded with transformers). The "
                    "export is checked on the run's eval rows beside the PyTorch student (largest "
                    "difference, quality, latency) and recorded in the run's summary.json and "
                    "README.md.",
        usage=USAGE)
    ex.add_argument("run", help="run folder, folder name (or a unique prefix) or run name")
    ex.add_argument("--format", required=True, metavar="onnx|safetensors",
                    help="onnx: one graph for onnxruntime (any language, CPU or GPU); "
                         "safetensors: a transformers folder")
    ex.add_argument("--quantize", default=None, metavar="int8|fp16",
                    help="int8 (ONNX only: the smallest, for CPUs) or fp16 (half the size, for "
                         "GPUs); leave out for full precision (fp32)")
    ex.add_argument("--out", default=None, metavar="DIR",
                    help="the export folder (default: <run>/exports/<format>-<precision>); "
                         "replaced as a whole, so it must be new, empty or an earlier export")


def _quantize(value: str | None) -> str | None:
    if value is None or value.strip().lower() in ("", "none", "fp32"):
        return None
    return value.strip().lower()


def _run_path(ref: str) -> Path:
    """A folder is given to the engine as it is (it says what is wrong with it); anything
    else is a run id or name, as 'kdstudio show' takes it."""
    p = Path(ref).expanduser()
    if p.is_dir() or p.parent != Path("."):
        return p
    from kdstudio.core.runs import find_run

    return find_run(ref).path


def cmd_export(args: argparse.Namespace, console: Any) -> int:
    fmt, quantize = args.format.strip().lower(), _quantize(args.quantize)
    from kdstudio.core.export import check_choice, export_run, open_run

    check_choice(fmt, quantize)  # before the run is looked up: the cheaper mistake first
    run = open_run(_run_path(args.run))
    console.print(f"[bold]Exporting the student of[/] {run.path.name} to {fmt} "
                  f"({quantize or 'fp32'})")
    try:
        with ProgressSink(console) as sink:
            result = export_run(run.path, fmt, quantize, args.out, sink)
    except KeyboardInterrupt:
        console.print("[yellow]Aborted.[/] Nothing was written; the run is unchanged.")
        return 130
    console.print(export_table(result, run.summary()))
    for note in result.notes:
        console.print(f"[dim]   {note}[/]")
    console.print(f"The export is in [bold]{result.path}[/] (its README.md says how to run it).")
    return 0


def export_table(result: Any, summary: dict[str, Any]) -> Any:
    """The export against the PyTorch student and the teacher: the engine's figures."""
    from rich.table import Table

    from kdstudio.core.export.record import figures

    rows = figures(result, summary)
    table = Table(title=f"{summary.get('name', result.path.parent.name)}: "
                        f"{result.format} {result.precision} against the PyTorch student")
    table.add_column("")
    table.add_column(f"{result.format} {result.precision}", justify="right")
    table.add_column("PyTorch student", justify="right")
    teacher = any(r[3] for r in rows)
    if teacher:
        table.add_column("teacher (from the run)", justify="right")
    for what, export, student, teach in rows:
        table.add_row(what, export, student, *([teach] if teacher else []))
    return table
