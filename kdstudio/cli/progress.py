"""What every command shares: the console, the progress display of engine events, Ctrl-C.

The engine reports through typed events (kdstudio.core.events); ``ProgressSink`` draws each
kind with its own method, chosen by the event's class. This module imports only the light
events module, so ``kdstudio --help`` stays instant.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Callable, Iterator

from rich.markup import escape

from kdstudio.core.events import (
    Checkpoint,
    Eval,
    Event,
    Health,
    Log,
    Progress,
    Stage,
    Started,
    Step,
)


def make_console() -> Any:
    from rich.console import Console

    # Piped output (logs, CI) gets a wide fixed width so tables are not squeezed to 80 columns.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)


def status_style(status: str) -> str:
    color = {"finished": "green", "stopped": "yellow", "interrupted": "yellow",
             "failed": "red", "running": "cyan"}.get(status, "white")
    return f"[{color}]{status}[/]"


class ProgressSink:
    """Draws engine events as a rich progress bar with ETA plus log lines."""

    def __init__(self, console: Any):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        self.console = console
        self.progress = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                             TextColumn("{task.fields[info]}"), console=console, transient=False)
        self.train_task = None
        self.stage_tasks: dict[str, Any] = {}
        self._draw: dict[type[Event], Callable[[Any], None]] = {
            Stage: self._stage, Log: self._log, Progress: self._progress, Started: self._started,
            Step: self._step, Eval: self._eval, Checkpoint: self._checkpoint,
            Health: self._health}

    def __enter__(self) -> "ProgressSink":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, e: Event) -> None:
        draw = self._draw.get(type(e))
        if draw is not None:
            draw(e)

    def _stage(self, e: Stage) -> None:
        self.progress.console.print(f"[dim]-> {escape(e.name)}[/] {escape(e.detail)}")

    def _log(self, e: Log) -> None:
        style = "yellow" if e.level == "warning" else "dim"
        self.progress.console.print(f"[{style}]   {escape(e.message)}[/]")

    def _progress(self, e: Progress) -> None:
        t = self.stage_tasks.get(e.stage)
        if t is None:
            t = self.progress.add_task(e.stage, total=e.total, info="")
            self.stage_tasks[e.stage] = t
        info = f"loss {e.metrics['loss']:.3f}" if "loss" in e.metrics else ""
        self.progress.update(t, completed=e.current, total=e.total, info=info)

    def _started(self, e: Started) -> None:
        p = self.progress
        p.console.print(
            f"   Teacher {e.teacher_params / 1e6:.1f}M parameters, student "
            f"{e.student_params / 1e6:.1f}M ({e.student_params / e.teacher_params:.0%}) on "
            f"{e.device}, {e.precision}; {e.train_samples} training examples.")
        p.console.print(f"   Run folder: {e.run_dir}")
        self.train_task = p.add_task("distilling", total=e.total_steps, completed=e.start_step,
                                     info="")

    def _step(self, e: Step) -> None:
        if self.train_task is None:
            return
        losses = " ".join(f"{k} {v:.4f}" for k, v in e.losses.items() if k != "total"
                          or len(e.losses) > 2)
        self.progress.update(self.train_task, completed=e.step,
                             info=f"{losses}  {e.samples_per_s:.0f} samples/s")

    def _eval(self, e: Eval) -> None:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in e.metrics.items())
        label = "before distillation" if e.step == 0 else f"step {e.step}"
        self.progress.console.print(f"   [cyan]eval ({label})[/]: {shown}")

    def _health(self, e: Health) -> None:
        """A run-health alarm: what was seen, what to change, and the setting (config syntax:
        the command line's users edit the config file)."""
        style = "red" if e.level == "error" else "yellow"
        setting = f" ({e.setting})" if e.setting else ""
        self.progress.console.print(f"[{style}]   ! {escape(e.message)}[/]")
        self.progress.console.print(f"[{style}]     {escape(e.advice)}{escape(setting)}[/]")

    def _checkpoint(self, e: Checkpoint) -> None:
        self.progress.console.print(f"[dim]   checkpoint at step {e.step}[/]")


@contextlib.contextmanager
def ctrl_c_stops(console: Any, what: str = "", terminate: bool = False) -> Iterator[threading.Event]:
    """While inside, the first Ctrl-C sets the yielded stop event (the run stops after this step
    with a checkpoint); a second one aborts at once. With ``terminate`` (a process of a
    multi-process launch) SIGTERM, which the launcher sends every process when it shuts down,
    also asks for the stop, and never aborts."""
    stop = threading.Event()
    if terminate and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        console.print(f"\n[yellow]Stopping after this step and saving a checkpoint{what} "
                      "(press Ctrl-C again to abort at once)...[/]")

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        yield stop
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
