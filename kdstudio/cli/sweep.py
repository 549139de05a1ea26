"""`kdstudio sweep`: the size/quality tradeoff explorer on the command line.

It plans the queue (students x second axis), shows the number of runs and a time estimate,
runs them one after another with the usual progress bar, then writes table.csv and
chart.png into the sweep folder and prints the table and a one-sentence summary. With
--int8 each finished student is also exported as int8 ONNX and charted beside itself. Ctrl-C
stops the current run with a checkpoint; `kdstudio sweep --resume ID` goes on from there.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kdstudio.cli.progress import ProgressSink, ctrl_c_stops
from kdstudio.core.events import Event, SweepProgress


def add_sweep_parser(sub: Any) -> None:
    sw = sub.add_parser(
        "sweep", help="distill several students of one teacher and chart quality against size",
        description="Run one distillation per student (and per second-axis value) in a queue, "
                    "then write the tradeoff table (table.csv) and chart (chart.png) into the "
                    "sweep folder. The queue survives interruptions: --resume continues it.")
    sw.add_argument("config", nargs="?", help="the base run config (TOML); its student is replaced "
                    "by each student of the sweep")
    sw.add_argument("--layers", default="", metavar="N,N,...",
                    help="students derived from the teacher, by layers kept, e.g. 1,2,3,4")
    sw.add_argument("--sizes", default="", metavar="SHARE,...",
                    help="students pruned from the teacher to these shares of its parameters, "
                         "e.g. 0.3,0.5,0.7 (the shape is --shapes', else the config's "
                         "student.shape)")
    sw.add_argument("--students", default="", metavar="NAME,...",
                    help="other student models: Hub ids, local folders or built-in names")
    axis = sw.add_mutually_exclusive_group()
    axis.add_argument("--temperatures", default="", metavar="T,T,...",
                      help="second axis: distill each student at these temperatures, e.g. 1,2,4")
    axis.add_argument("--methods", default="", metavar="LOSS,...",
                      help="second axis: distill each student with these logit losses, "
                           "e.g. forward_kl,reverse_kl")
    axis.add_argument("--shapes", default="", metavar="SHAPE,...",
                      help="second axis, with --sizes: cut each size by layers, width or both "
                           "(each shape a series of the chart), e.g. layers,width,both")
    sw.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a key of the base config, e.g. --set training.max_steps=200")
    sw.add_argument("--int8", action="store_true",
                    help="also export each student as int8 ONNX (smaller, usually a little less "
                         "accurate) and chart the export beside it; with --resume, turns this on "
                         "for an earlier sweep and exports its finished students")
    sw.add_argument("--resume", metavar="SWEEP", help="continue an unfinished sweep (its id or folder)")
    sw.add_argument("--list", action="store_true", help="list the sweeps and exit")
    sw.add_argument("--axis", choices=("params", "latency", "size"), default=None,
                    help="the chart's x axis: parameters, latency or size on disk (default: "
                         "parameters, or size on disk for a sweep with --int8, where an int8 "
                         "export has its student's parameters but a quarter of its size)")
    sw.add_argument("--yes", "-y", action="store_true", help="start without asking")
    sw.add_argument("--processes", type=int, default=1, metavar="N",
                    help="run each student in N processes on this machine through Accelerate "
                         "(one per GPU; gloo on a CPU), one student after another; "
                         "training.batch_size is then each process's share")
    sw.add_argument("--fsdp", action="store_true",
                    help="with --processes: shard each student with FSDP2 instead of DDP")


def _numbers(text: str, option: str, example: str, whole: bool) -> list[float]:
    from kdstudio.core.sweep.queue import SweepError

    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            value = None
        if value is None or value <= 0 or (whole and value >= 1 and value != int(value)):
            kind = "whole layer counts (or fractions below 1)" if whole else "positive numbers"
            raise SweepError(f"{option} '{text}': '{part}' is not one of the {kind} it takes.",
                             hint=f"Separate them with commas, e.g. {option} {example}.")
        out.append(value)
    return out


def _plan(args: argparse.Namespace) -> Any:
    from kdstudio.core.config import load_config
    from kdstudio.core.sweep.plan import teacher_shape_for
    from kdstudio.core.sweep.queue import StudentSpec, Sweep, SweepError

    if not args.config:
        raise SweepError("No config given.", hint="Usage: kdstudio sweep CONFIG.toml --layers 1,2,3 "
                         "(or --resume SWEEP to continue one).")
    cfg = load_config(args.config)
    if args.set:
        cfg = cfg.with_overrides(args.set)
    students = [StudentSpec(layers=k) for k in _numbers(args.layers, "--layers", "1,2,3,4", True)]
    sizes, shapes = getattr(args, "sizes", ""), getattr(args, "shapes", "")
    students += [StudentSpec(target=t) for t in _numbers(sizes, "--sizes", "0.3,0.5,0.7", False)]
    students += [StudentSpec(name=n.strip()) for n in args.students.split(",") if n.strip()]
    if not students:
        raise SweepError("The sweep has no students.",
                         hint="Give --layers 1,2,3, --sizes 0.3,0.5 and/or --students NAME,NAME.")
    if shapes and any(not s.target for s in students):
        raise SweepError("--shapes cuts students of a target size; every student of this sweep "
                         "must then come from --sizes.",
                         hint="Give --sizes 0.3,0.5,0.7 with --shapes layers,width,both, and no "
                              "--layers or --students.")
    axis, values = "", []
    if args.temperatures:
        axis, values = "temperature", _numbers(args.temperatures, "--temperatures", "1,2,4", False)
    elif args.methods:
        axis, values = "method", [m.strip() for m in args.methods.split(",") if m.strip()]
    elif shapes:
        axis, values = "shape", [m.strip() for m in shapes.split(",") if m.strip()]
    layers = None
    if any(s.derived for s in students):
        layers = teacher_shape_for(cfg).num_layers
    return Sweep.new(cfg, students, axis, values, teacher_layers=layers,
                     quantize_int8=args.int8)


def _list(console: Any) -> int:
    from rich.table import Table

    from kdstudio.core.sweep.queue import list_sweeps, sweeps_dir

    sweeps = list_sweeps()
    if not sweeps:
        console.print(f"No sweeps yet in {sweeps_dir()}.")
        return 0
    table = Table(title=f"Sweeps in {sweeps_dir()}")
    for col in ("sweep", "teacher", "task", "students", "state"):
        table.add_column(col, overflow="fold")
    for s in sweeps:
        table.add_row(s.id, s.base.teacher.name, s.base.task,
                      ", ".join(st.label for st in s.students), s.describe())
    console.print(table)
    return 0


class SweepSink:
    """One progress bar per run of the queue (the run command's), with a line between runs."""

    def __init__(self, console: Any):
        self.console = console
        self.bar: Any = None

    def __call__(self, e: Event) -> None:
        if not isinstance(e, SweepProgress):
            if self.bar is not None:
                self.bar(e)
            return
        if e.status in ("running", "exporting"):
            self.close()
            if e.status == "exporting":
                self.console.print(f"[bold]{e.label}[/]: exporting as int8 ONNX")
            else:
                extra = f" ({e.message})" if e.message else ""
                self.console.rule(f"Run {e.index + 1} of {e.total}: {e.label}{extra}")
            self.bar = ProgressSink(self.console).__enter__()
            return
        self.close()
        if e.status == "exported":
            self.console.print(f"[green]{e.label} exported as int8 ONNX.[/]")
        elif e.status == "export failed":
            self.console.print(f"[yellow]{e.message}[/] (the run itself is fine; --resume "
                               "tries the export again)")
        elif e.status == "failed":
            self.console.print(f"[red]{e.label} failed:[/] {e.message}")
        elif e.status == "stopped":
            self.console.print(f"[yellow]{e.label} stopped:[/] {e.message}.")
        else:
            self.console.print(f"[green]{e.label} finished.[/]")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def cmd_sweep(args: argparse.Namespace, console: Any) -> int:
    from kdstudio.core.sweep.plan import estimate_time
    from kdstudio.core.sweep.queue import (
        SweepError,
        exports_todo,
        find_sweep,
        run_sweep,
    )

    if args.list:
        return _list(console)
    if args.resume:
        if (args.config or args.layers or args.students or args.temperatures or args.methods
                or getattr(args, "sizes", "") or getattr(args, "shapes", "")):
            raise SweepError("--resume continues a sweep as it was planned; it takes no config, "
                             "students or axis.", hint=f"Run: kdstudio sweep --resume {args.resume}")
        sweep = find_sweep(args.resume)
        sweep.reconcile()
        if args.int8 and not sweep.quantize_int8:
            sweep.quantize_int8 = True
            sweep.save()
        if not sweep.todo(retry_failed=True) and not exports_todo(sweep, retry_failed=True):
            console.print(f"The sweep '{sweep.id}' has nothing left to run ({sweep.describe()}).")
            return _report(sweep, console, chart_axis(args, sweep))
        console.print(f"[bold]Resuming the sweep {sweep.id}[/]: {sweep.describe()}.")
    else:
        sweep = _plan(args)
    t = sweep.base.teacher.name
    console.print(f"[bold]Tradeoff sweep[/] of [cyan]{t}[/] on {sweep.base.data.dataset} "
                  f"({sweep.base.task}): " + "; ".join(e.label for e in sweep.todo(True)))
    est = estimate_time(sweep)
    console.print(f"   {est.text[0].upper()}{est.text[1:]}")
    if (args.processes or 1) > 1:
        from kdstudio.core.dist_share import batch_share

        tc = sweep.base.training
        console.print(f"   Each student runs in {args.processes} processes through Accelerate "
                      f"({'FSDP2' if args.fsdp else 'DDP'}). "
                      + batch_share(tc.batch_size, tc.grad_accum_steps, args.processes).line())
    if sweep.quantize_int8:
        console.print("   Each finished student is then exported as int8 ONNX (a little extra "
                      "time per student, not in the estimate).")
    if not args.yes and sys.stdin.isatty():
        answer = console.input("Start? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            console.print("Nothing started.")
            return 0
    sweep.save()
    console.print(f"   Sweep folder: {sweep.folder}")

    sink = SweepSink(console)
    try:
        with ctrl_c_stops(console, "; the queue stays resumable") as stop:
            result = run_sweep(sweep, sink, stop, retry_failed=bool(args.resume),
                               processes=getattr(args, "processes", 1) or 1,
                               fsdp=getattr(args, "fsdp", False))
    except KeyboardInterrupt:
        console.print(f"[yellow]Aborted.[/] Continue with: kdstudio sweep --resume {sweep.id}")
        return 130
    finally:
        sink.close()
    code = _report(sweep, console, chart_axis(args, sweep))
    if result.status == "stopped":
        console.print(f"[yellow]The sweep stopped[/] ({sweep.describe()}). Continue with:\n"
                      f"  kdstudio sweep --resume {sweep.id}")
    elif result.failed:
        console.print(f"[red]{len(result.failed)} run(s) failed[/]; fix the cause and retry them "
                      f"with: kdstudio sweep --resume {sweep.id}")
        code = 1
    return code


def chart_axis(args: argparse.Namespace, sweep: Any) -> str:
    return args.axis or ("size" if sweep.quantize_int8 else "params")


def _report(sweep: Any, console: Any, axis: str) -> int:
    """Write table.csv and chart.png into the sweep folder; print the table and the summary."""
    from kdstudio.core.sweep.figures import summary_sentence, sweep_table, write_csv

    rows = sweep_table(sweep)
    if not rows:
        console.print("No run has finished yet, so there is no table or chart.")
        return 0
    csv_path = write_csv(rows, sweep.folder / "table.csv", sweep.axis)
    console.print(tradeoff_table(rows, axis))
    console.print(f"[bold]{summary_sentence(rows, sweep.axis)}[/]")
    console.print(f"   Table: {csv_path}")
    try:
        from pathlib import Path

        from kdstudio.ui.pages.tradeoff.chart import render_png

        what = {"params": "parameters", "latency": "latency", "size": "size on disk"}[axis]
        teacher = Path(sweep.base.teacher.name.rstrip("/\\")).name or sweep.base.teacher.name
        png = render_png(rows, sweep.folder / "chart.png", axis, axis=sweep.axis,
                         title=f"{teacher}: quality retained against {what}")
        console.print(f"   Chart: {png}")
    except ImportError as exc:  # a server without Qt still gets the table
        console.print(f"[yellow]   No chart: drawing it needs PySide6 and pyqtgraph ({exc}).[/]")
    except OSError as exc:
        console.print(f"[yellow]   No chart: {exc}[/]")
    return 0


def fmt_params(n: float | None) -> str:
    if n is None:
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}k"


def tradeoff_table(rows: list[Any], cost: str = "params") -> Any:
    from rich.table import Table

    from kdstudio.core.metrics import METRIC_LABELS, PERCENT_METRICS
    from kdstudio.core.sweep.figures import front_rows
    from kdstudio.core.sweep.timed import latency_cell, speedup_cell

    front = {id(r) for r in front_rows(rows, cost)}
    metric = rows[0].headline_metric
    table = Table(title="Quality against size (* = on the Pareto front)")
    for col in ("student", "parameters", "size MB", "latency ms (p10\u2013p90)", "speed-up",
                "quality retained",
                METRIC_LABELS.get(metric, metric).split(" (")[0], "front"):
        table.add_column(col, justify="left" if col == "student" else "right")

    def num(v: Any, f: str) -> str:
        return "-" if v is None else format(v, f)

    for r in rows:
        head = ("-" if r.headline_value is None else f"{r.headline_value:.1%}"
                if metric in PERCENT_METRICS else f"{r.headline_value:.4g}")
        share = f" ({r.params_share:.0%})" if r.params_share is not None and not r.is_teacher else ""
        table.add_row(r.label if not r.is_teacher else f"[bold]teacher[/] {r.model}",
                      fmt_params(r.params) + share, num(r.size_mb, ".3g"), latency_cell(r),
                      speedup_cell(r),
                      num(r.quality_retained, ".1%"), head, "*" if id(r) in front else "")
    return table
