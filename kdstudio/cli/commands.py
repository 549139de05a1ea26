"""The command line: `kdstudio demo`, `run`, `resume`, `runs`, `show`, `config`, `preview`
(and `sweep`, `export` from their own modules).

The engine reports through events; kdstudio.cli.progress turns them into a progress bar, and
this module prints the tables. Heavy imports (torch, transformers) happen inside the
commands, so `--help` is instant. Imports go one way: commands -> sweep, export -> progress.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kdstudio.cli.progress import ProgressSink, ctrl_c_stops, make_console, status_style
from kdstudio.core.tasks import DEFAULT_TASK, REGISTRY, all_tasks, get_task

# The built-in demos: resources/demos/<file> of each task family that ships one.
DEMOS = {t.name: t.demo_file for t in all_tasks() if t.demo_file}


def _demo_help() -> str:
    shown = sorted((get_task(name) for name in DEMOS), key=lambda t: t.demo_rank)
    parts = [f"{t.demo_intro} ({t.name}{', the default' if t is DEFAULT_TASK else ''})"
             for t in shown]
    listed = ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else "".join(parts)
    return f"which demo: distil {listed}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kdstudio",
        description="KD Studio: distill a large teacher model into a small student and measure "
                    "what it keeps (quality) and what it saves (size, speed).")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--demo", action="store_true",
                   help="open the desktop app with the built-in demo selected")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run a built-in demo offline (a few minutes on a laptop CPU)")
    d.add_argument("--task", choices=sorted(DEMOS), default=DEFAULT_TASK.name,
                   help=_demo_help())
    d.add_argument("--steps", type=int, help="override the number of training steps")
    d.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    d.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. --set method.temperature=4")

    r = sub.add_parser("run", help="run the distillation a TOML config describes")
    r.add_argument("config", help="the run config (TOML); 'kdstudio config --template' writes one")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, e.g. --set training.max_steps=100 (repeatable)")
    _add_process_args(r)

    rs = sub.add_parser("resume", help="continue a stopped or interrupted run from its last checkpoint")
    rs.add_argument("run", help="run folder, folder name (or a unique prefix) or run name")
    rs.add_argument("--checkpoint", default="", metavar="step-N",
                    help="resume from this checkpoint (e.g. step-40) instead of the newest "
                         "intact one")
    _add_process_args(rs)

    ls = sub.add_parser("runs", help="list past runs")
    ls.add_argument("--limit", type=int, default=30, help="show at most this many (default 30)")

    sh = sub.add_parser("show", help="show the before/after table of a run")
    sh.add_argument("run", help="run folder, folder name (or a unique prefix) or run name")

    c = sub.add_parser("config", help="write a config template, check a config, or print the key reference")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--template", action="store_true", help="print a complete config to start from")
    g.add_argument("--check", metavar="FILE", help="validate a config file and what it names (models, "
                   "data, layer choices) without loading them, and report the first problem")
    g.add_argument("--reference", action="store_true", help="print every key with its help (Markdown)")
    c.add_argument("--task", default=DEFAULT_TASK.name, help="task family for --template")

    pv = sub.add_parser("preview", help="show the first rows of a data set and the detected columns")
    pv.add_argument("dataset", help="builtin:NAME, a local file, or a Hub data set id")
    pv.add_argument("--rows", type=int, default=10)
    pv.add_argument("--split", default="train")
    pv.add_argument("--config-name", default="")
    pv.add_argument("--task", default="")

    from kdstudio.cli.sweep import add_sweep_parser  # light: argparse only

    add_sweep_parser(sub)
    from kdstudio.cli.export import add_export_parser  # light: argparse only

    add_export_parser(sub)
    from kdstudio.cli.cache import add_cache_parser  # light: argparse only

    add_cache_parser(sub)
    return p


def _add_process_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="run in N processes on this machine through Accelerate (one per GPU; "
                        "gloo on a CPU); training.batch_size is then each process's share")
    p.add_argument("--fsdp", action="store_true",
                   help="with --processes: shard the student with FSDP2 instead of DDP")


def _launched(args: argparse.Namespace, command: list[str], console: Any) -> int | None:
    """With --processes N > 1: the command in N processes (kdstudio.cli.launch); else None."""
    n = getattr(args, "processes", 1) or 1
    if n <= 1:
        return None
    from kdstudio.cli.launch import run_launch

    return run_launch(command, n, console, fsdp=args.fsdp)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        from kdstudio import __version__

        print(f"kdstudio {__version__}")
        return 0
    if args.command is None:
        # No command: the desktop app. Qt is imported here, torch only later, off the GUI thread.
        from kdstudio.ui.app import main as app_main

        return app_main(demo=args.demo)
    from rich.markup import escape

    from kdstudio.core.errors import KDStudioError

    console = make_console()
    try:
        return COMMANDS[args.command](args, console)
    except KDStudioError as exc:
        # Messages quote config sections ("[training]") and paths: print them as they are.
        console.print(f"[bold red]{escape(exc.title)}:[/] {escape(str(exc))}")
        return 2


# -- commands --------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace, console: Any) -> int:
    from kdstudio.core.demos import demo_config

    cfg = demo_config(args.task, instead="pick another demo: " + ", ".join(sorted(DEMOS)))
    sets = list(args.set)
    if args.steps is not None:
        sets.append(f"training.max_steps={args.steps}")
    if args.device:
        sets.append(f"training.device={args.device}")
    if sets:
        cfg = cfg.with_overrides(sets)
    corpus = str(cfg.data.dataset).removeprefix("builtin:")
    console.print(f"[bold]KD Studio demo[/] - {args.task}: distilling {get_task(args.task).demo_intro}, "
                  f"[cyan]{cfg.teacher.name}[/], into a smaller student on the built-in "
                  f"{corpus} corpus.")
    if cfg.evaluation.baseline:
        console.print("The same student is also trained for the same steps without the teacher "
                      "(plain training), so the table shows what the teacher adds.")
    return _train_and_report(cfg, console)


def cmd_run(args: argparse.Namespace, console: Any) -> int:
    from kdstudio.core.config import load_config

    cfg = load_config(args.config)
    if args.set:
        cfg = cfg.with_overrides(args.set)
    if args.processes > 1:
        from kdstudio.core.dist_share import batch_share

        cfg.validate()
        console.print(batch_share(cfg.training.batch_size, cfg.training.grad_accum_steps,
                                  args.processes).line())
    launched = _launched(args, ["run", args.config, *(f"--set={s}" for s in args.set)], console)
    if launched is not None:
        return launched
    return _train_and_report(cfg, console)


def cmd_resume(args: argparse.Namespace, console: Any) -> int:
    from kdstudio.core.runs import find_run

    run = find_run(args.run)
    status = run.status()
    if status == "finished":
        console.print(f"The run '{run.path.name}' already finished; nothing to resume.")
        return 0
    if status == "running":
        console.print(f"[red]The run '{run.path.name}' is still running in another process.[/]")
        return 2
    launched = _launched(args, ["resume", str(run.path), "--checkpoint", args.checkpoint],
                         console)
    if launched is not None:
        return launched
    return _train_and_report(None, console, resume=run.path, checkpoint=args.checkpoint)


def cmd_runs(args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    from kdstudio.core.runs import list_runs, runs_dir

    infos = list_runs()
    if not infos:
        console.print(f"No runs yet in {runs_dir()}. Try 'kdstudio demo'.")
        return 0
    from kdstudio.core.metrics import (
        METRIC_LABELS,
        PERCENT_METRICS,
        format_quality,
        quality_note,
    )

    table = Table(title=f"Runs in {runs_dir()}")
    for col in ("run", "date", "task", "teacher -> student", "status", "headline", "kept", "speed-up"):
        # The run id is what 'resume' and 'show' take: wrap it, never cut it short.
        table.add_column(col, overflow="fold")
    for i in infos[:args.limit]:
        head = "-"
        if i.headline_value is not None:
            value = (f"{i.headline_value:.1%}" if i.headline in PERCENT_METRICS
                     else f"{i.headline_value:.4g}")
            head = f"{METRIC_LABELS.get(i.headline, i.headline).split(' (')[0]}: {value}"
        table.add_row(i.id, i.created.replace("T", " "), i.task, f"{i.teacher} -> {i.student}",
                      status_style(i.status), head,
                      format_quality(i.quality_retained),
                      f"{i.speedup:.2f}x" if i.speedup else "-")
    console.print(table)
    note = quality_note(*(i.quality_retained for i in infos[:args.limit]))
    if note:
        console.print(f"[yellow]{note}[/]")
    return 0


def cmd_show(args: argparse.Namespace, console: Any) -> int:
    from kdstudio.core.runs import find_run

    run = find_run(args.run)
    s = run.summary()
    console.print(f"[bold]{s.get('name', run.path.name)}[/]  ({status_style(run.status())})  {run.path}")
    if s.get("student_metrics") or s.get("student_metrics_before"):
        console.print(before_after_table(s))
        _quality_note(s, console)
        _kept_line(s, console)
    _show_generations(run.path, console)
    if s.get("error"):
        console.print(f"[red]{s['error']}[/]")
    return 0


def _show_generations(run_dir: Any, console: Any, n: int = 5) -> None:
    """A sequence-level run's first few teacher continuations, prompt in bold."""
    from rich.markup import escape

    from kdstudio.core.lm import GENERATIONS_FILE, load_generations

    if not (run_dir / GENERATIONS_FILE).exists():
        return
    prompts, conts = load_generations(run_dir)
    console.print(f"\n[bold]The teacher's continuations[/] ({len(prompts)} in "
                  f"{run_dir / GENERATIONS_FILE}; the first {min(n, len(prompts))}):")
    for p, c in list(zip(prompts, conts))[:n]:
        console.print(f"  [bold]{escape(p)}[/]{escape(c)}")


def cmd_config(args: argparse.Namespace, console: Any) -> int:
    from rich.markup import escape

    from kdstudio.core.config import default_config, load_config
    from kdstudio.core.config_reference import config_reference_markdown

    if args.reference:
        print(config_reference_markdown(), end="")
    elif args.template:
        print(default_config(args.task).to_toml(), end="")
    else:
        from kdstudio.core.preflight import preflight

        cfg = load_config(args.check)
        preflight(cfg)
        console.print(f"[green]{escape(args.check)} is a valid {cfg.task} config[/] (its models, "
                      "data and layer choices were checked from their files, without loading "
                      "them).")
        from kdstudio.core.teacher_source import plan_teacher

        console.print(escape(plan_teacher(cfg).line + "."))
    return 0


def cmd_preview(args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    from kdstudio.core.config import DataConfig
    from kdstudio.core.data import preview

    pv = preview(DataConfig(dataset=args.dataset, split=args.split, config_name=args.config_name),
                 n=args.rows, task=args.task)
    table = Table(title=f"{pv.source}: {pv.num_rows} rows in split '{args.split}' "
                        f"(splits: {', '.join(pv.splits)})")
    for c in pv.columns:
        mark = " (text)" if c == pv.text_column else " (label)" if c == pv.label_column else ""
        table.add_column(c + mark, overflow="fold")
    for row in pv.rows:
        table.add_row(*[str(row.get(c, ""))[:200] for c in pv.columns])
    console.print(table)
    return 0


def cmd_sweep(args: argparse.Namespace, console: Any) -> int:
    from kdstudio.cli.sweep import cmd_sweep as run_sweep_command

    return run_sweep_command(args, console)


def cmd_cache(args: argparse.Namespace, console: Any) -> int:
    from kdstudio.cli.cache import cmd_cache as run_cache_command

    return run_cache_command(args, console)


def cmd_export(args: argparse.Namespace, console: Any) -> int:
    from kdstudio.cli.export import cmd_export as run_export_command

    return run_export_command(args, console)


COMMANDS = {"demo": cmd_demo, "run": cmd_run, "resume": cmd_resume, "runs": cmd_runs,
            "show": cmd_show, "config": cmd_config, "preview": cmd_preview, "sweep": cmd_sweep,
            "export": cmd_export, "cache": cmd_cache}


# -- reports -------------------------------------------------------------------------------

def _train_and_report(cfg: Any, console: Any, resume: Path | None = None,
                      checkpoint: str = "") -> int:
    from kdstudio.core.distributed import env_world_size

    code = _train_and_report_here(cfg, console, resume, checkpoint)
    if env_world_size() > 1:
        # One process of a launch whose work is done and written (summary and checkpoints
        # by atomic renames, metrics line by line) and which has left its process group:
        # it exits at once. Torn down by the interpreter instead, gloo's and FSDP's threads
        # can still abort it ("terminate called without an active exception", SIGABRT),
        # and the launcher then fails a run that finished.
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _train_and_report_here(cfg: Any, console: Any, resume: Path | None = None,
                           checkpoint: str = "") -> int:
    from kdstudio.core.distributed import env_world_size, is_main_process
    from kdstudio.core.trainer import run_training

    if env_world_size() > 1:  # one process of a launch: its error goes to the launcher's report
        from kdstudio.cli.launch import recorded_errors

        with recorded_errors():
            if not is_main_process():  # the main process alone draws and reports
                with ctrl_c_stops(console, terminate=True) as stop:
                    run_training(cfg, None, stop, resume=resume, checkpoint=checkpoint)
                return 0
            with ctrl_c_stops(console, terminate=True) as stop, ProgressSink(console) as sink:
                result = run_training(cfg, sink, stop, resume=resume, checkpoint=checkpoint)
    else:
        with ctrl_c_stops(console) as stop, ProgressSink(console) as sink:
            result = run_training(cfg, sink, stop, resume=resume, checkpoint=checkpoint)
    if result.status == "stopped":
        if not result.summary:
            console.print("[yellow]Stopped before training began;[/] nothing was saved.")
        else:
            console.print(f"[yellow]Stopped.[/] A checkpoint is in {result.run_dir}. Continue with:\n"
                          f"  kdstudio resume {result.run_dir.name}")
        return 0
    console.print(before_after_table(result.summary))
    _quality_note(result.summary, console)
    _kept_line(result.summary, console)
    task = REGISTRY.get(str(result.summary.get("task", "")))
    # An encoder's student is saved with a sentence-transformers config beside its weights.
    also = (" and sentence-transformers" if task is not None and task.saves_sentence_transformers
            else "")
    console.print(f"The student is in {result.run_dir / 'student'} (loadable with transformers"
                  f"{also}).")
    return 0


def _kept_line(s: dict[str, Any], console: Any) -> None:
    """Which step's student the run kept, and why (training.keep); the ± under the table."""
    from rich.markup import escape

    keep = s.get("keep") if isinstance(s.get("keep"), dict) else {}
    if isinstance(keep.get("why"), str):
        console.print(escape(keep["why"]))
    if isinstance(s.get("intervals"), dict) and s["intervals"]:
        console.print("± is half the width of a 95% interval, bootstrapped over the held-out rows.")


def _quality_note(s: dict[str, Any], console: Any) -> None:
    """Under a table whose quality retained is above 100%: what that means."""
    from kdstudio.core.metrics import quality_note
    from kdstudio.core.objective import baseline_possible

    base = s.get("baseline") if isinstance(s.get("baseline"), dict) else {}
    # The plain-training baseline is recommended only where the task can train one.
    note = quality_note(s.get("quality_retained"), base.get("quality_retained"),
                        baseline=baseline_possible(s.get("task")), teacher=s.get("teacher") or "")
    if note:
        console.print(f"[yellow]{note}[/]")


def before_after_table(s: dict[str, Any]) -> Any:
    """Teacher, student before and student after distillation: quality, size and speed."""
    from rich.table import Table

    from kdstudio.core.run_compare import summary_columns, summary_rows

    table = Table(title=f"{s.get('name', '')}: before and after distillation")
    table.add_column("")
    for col in summary_columns(s):
        table.add_column(col, justify="right")
    for row in summary_rows(s):
        table.add_row(*row)
    return table


if __name__ == "__main__":
    sys.exit(main())
