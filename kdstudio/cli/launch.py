"""`kdstudio run/resume/sweep --processes N`: the same command in N processes, through
Accelerate's own launcher.

The launcher is ``python -m accelerate.commands.launch ... -m kdstudio.cli <the command>`` as
a child process, the very entry point a user's ``accelerate launch`` runs, so the two paths
cannot drift apart. A subprocess (rather than notebook_launcher's fork) keeps this process
free of torch's threads and of the run's failures, lets the app launch the same way, and
leaves a parent that outlives any worker: it can say which process died and mark the run
failed when no process is left to do it.

The launcher runs in its own session, so Ctrl-C reaches only this parent, which writes the
stop file the main process checks every step (every process then stops after the same step
and the main one saves one checkpoint); a second Ctrl-C ends the processes at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdstudio.core.launch import LaunchLog, failure_reason, free_port, mark_failed, start

__all__ = ["failure_reason", "free_port", "recorded_errors", "run_launch", "start"]


@contextlib.contextmanager
def recorded_errors() -> Iterator[None]:
    """In a launched process: an error is written where torch's launcher reads it
    (TORCHELASTIC_ERROR_FILE), so its report, and ours, can say why this process ended; and
    however it ends, the process leaves its process group before it exits."""
    from kdstudio.core.errors import KDStudioError

    try:
        yield
    except BaseException as exc:
        if os.environ.get("TORCHELASTIC_ERROR_FILE") and not isinstance(exc, SystemExit):
            from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

            try:
                if isinstance(exc, KDStudioError):
                    exc = type(exc)(f"{exc.title}: {exc}")
                ErrorHandler().record_exception(exc)
            except Exception:  # noqa: BLE001 - the report is a courtesy; the error still stands
                pass
        raise
    finally:
        from kdstudio.core.distributed import end

        end()


def run_launch(command: list[str], processes: int, console: Any, *, fsdp: bool = False) -> int:
    """Launch, forward Ctrl-C as a stop, wait; on a failure say which process died and why.
    The launcher's stderr (its failure report, each process's traceback) goes to the run's
    launch.log, not the terminal: the terminal gets the one clear sentence and where the log is."""
    from rich.markup import escape

    console.print(f"[bold]Starting {processes} processes[/] through Accelerate "
                  f"({'FSDP2' if fsdp else 'DDP'}); each reads its own share of every batch.")
    launch = start(command, processes, fsdp=fsdp, stderr=subprocess.PIPE)
    log = LaunchLog(launch)
    kept: list[str] = []
    log_path: list[Path] = []

    def pump() -> None:
        assert launch.proc.stderr is not None
        try:
            for raw in iter(launch.proc.stderr.readline, b""):
                kept.append(raw.decode("utf-8", errors="replace"))
                del kept[:-400]
                log.write(raw)
        finally:
            log_path.append(log.close())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    presses = 0

    def on_sigint(signum: int, frame: Any) -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            launch.stop()
            console.print("\n[yellow]Stopping every process after this step and saving a "
                          "checkpoint (press Ctrl-C again to end them at once)...[/]")
        else:
            launch.kill()

    def on_sigterm(signum: int, frame: Any) -> None:
        launch.kill()  # ended from outside: the processes must not outlive this one

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, on_sigint) if main else None
    old_term = signal.signal(signal.SIGTERM, on_sigterm) if main else None
    try:
        rc = launch.proc.wait()
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    reader.join(timeout=5)
    if rc == 0:
        return 0
    reason = failure_reason("".join(kept), processes) or (
        f"The launch of {processes} processes ended with exit code {rc}.")
    run_dir = launch.run_dir()
    mark_failed(run_dir, reason)
    console.print(f"[bold red]The run failed:[/] {escape(reason)}")
    where = log_path[0] if log_path else log.path
    console.print(f"The launcher's own report, with each process's traceback, is in "
                  f"{escape(str(where))}.")
    if run_dir is not None:
        console.print(f"The run folder {run_dir} keeps what was saved; "
                      f"'kdstudio resume {run_dir.name}' continues from its last checkpoint.")
    return 2
