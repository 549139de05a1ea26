"""Starting a multi-process run through Accelerate's launcher, and reading how it ended.

The launch is ``python -m accelerate.commands.launch ... -m kdstudio.cli <command>`` as a
child process: the very entry point a user's own ``accelerate launch`` runs, so the two
paths cannot drift apart. A subprocess (rather than notebook_launcher's fork) keeps the
launching process (the CLI, the app) free of torch's threads and of the run's failures, and
leaves a parent that outlives any worker: it can say which process died, and mark the run
failed when no process is left to do it. The launch runs in its own session, so a terminal's
Ctrl-C reaches only the parent, which turns it into the stop file.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdstudio.core.dist_control import (
    ENV_PAUSE_FILE,
    ENV_PROCESSES,
    ENV_RUN_DIR_FILE,
    ENV_STOP_FILE,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Launch:
    """A started launch: its process, and the files it is steered and followed through."""

    proc: subprocess.Popen
    folder: Path
    processes: int

    @property
    def stop_file(self) -> Path:
        return self.folder / "stop"

    @property
    def pause_file(self) -> Path:
        return self.folder / "pause"

    @property
    def run_dir_file(self) -> Path:
        return self.folder / "run-dir"

    def run_dir(self) -> Path | None:
        try:
            text = self.run_dir_file.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return Path(text) if text else None

    def stop(self) -> None:
        self.stop_file.write_text("stop\n", encoding="utf-8")

    def pause(self, on: bool) -> None:
        if on:
            self.pause_file.write_text("pause\n", encoding="utf-8")
        else:
            self.pause_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """End every process of the launch at once (nothing more is saved)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class LaunchLog:
    """The launcher's own output (torch's and Accelerate's failure reports with each process's
    traceback, the processes' warnings), kept out of the terminal: written line by line to
    launch.log in the run folder once the main process has named it (until then, in the
    launch's own folder, whose lines then move across). A resumed run's log grows."""

    NAME = "launch.log"

    def __init__(self, launch: Launch):
        self.launch = launch
        self.path = launch.folder / self.NAME
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self._in_run = False
        self._fh.write(f"--- kdstudio launch of {launch.processes} processes, "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())

    def _follow_run(self) -> None:
        run_dir = None if self._in_run else self.launch.run_dir()
        if run_dir is None or not run_dir.is_dir():
            return
        self._fh.close()
        target = run_dir / self.NAME
        with open(target, "ab") as out:
            out.write(self.path.read_bytes())
        self.path.unlink(missing_ok=True)
        self.path, self._in_run = target, True
        self._fh = open(target, "ab")  # noqa: SIM115 - closed in close()

    def write(self, raw: bytes) -> None:
        self._follow_run()
        self._fh.write(raw)
        self._fh.flush()

    def close(self) -> Path:
        """Close the log (moving it into the run folder if that is now known); its path."""
        self._follow_run()
        self._fh.close()
        return self.path


def launcher_command(command: list[str], processes: int, *, fsdp: bool = False,
                     port: int | None = None) -> list[str]:
    """The `accelerate launch` line for `kdstudio <command>` in ``processes`` processes on this
    machine. DDP is the default; ``fsdp`` selects Accelerate's FSDP2 plugin."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--num_processes", str(processes), "--num_machines", "1", "--machine_rank", "0",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(port or free_port()),
           "--mixed_precision", "no", "--dynamo_backend", "no"]
    # --multi_gpu means torch's elastic launcher (one process each, gloo on a CPU, NCCL on
    # GPUs), not that GPUs must exist: the processes pick their devices from the config.
    cmd += ["--use_fsdp", "--fsdp_version", "2"] if fsdp else ["--multi_gpu"]
    return cmd + ["--module", "kdstudio.cli", *command]


def start(command: list[str], processes: int, *, fsdp: bool = False,
          env: dict[str, str] | None = None, stdout: Any = None, stderr: Any = None) -> Launch:
    """Start the launch of `kdstudio <command>` (without --processes) and return at once."""
    folder = Path(tempfile.mkdtemp(prefix="kdstudio-launch-"))
    full = dict(os.environ if env is None else env)
    full.update({ENV_RUN_DIR_FILE: str(folder / "run-dir"), ENV_STOP_FILE: str(folder / "stop"),
                 ENV_PAUSE_FILE: str(folder / "pause"), ENV_PROCESSES: str(processes)})
    full.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen(launcher_command(command, processes, fsdp=fsdp), env=full,
                            stdout=stdout, stderr=stderr, start_new_session=True)
    return Launch(proc, folder, processes)


def run_launched(command: list[str], processes: int, on_event: Any, stop: Any, *,
                 fsdp: bool = False, poll_s: float = 0.2) -> tuple[int, Path | None, str]:
    """`kdstudio <command>` in ``processes`` processes, followed from here: the run's events
    reach ``on_event`` as its main process writes them to metrics.jsonl, and ``stop`` (checked
    every ``poll_s``) becomes the stop file every process agrees on. Returns (exit code, run
    folder or None, why it failed or ''); a failed launch's run is marked failed. An exception
    here (a second Ctrl-C) ends the processes at once."""
    import time

    from kdstudio.core.events import EventFollower

    log_dir = Path(tempfile.mkdtemp(prefix="kdstudio-launch-log-"))
    log_path = log_dir / "launch.log"
    run_dir, asked = None, False
    follower: EventFollower | None = None

    with open(log_path, "wb") as log:
        launch = start(command, processes, fsdp=fsdp, stdout=log, stderr=log)
        try:
            while True:
                rc = launch.proc.poll()
                if not asked and stop is not None and stop.is_set():
                    launch.stop()
                    asked = True
                run_dir = run_dir or launch.run_dir()
                if run_dir is not None:
                    follower = follower or EventFollower(run_dir / "metrics.jsonl")
                    for event in follower.read_new():
                        on_event(event)
                if rc is not None:
                    break
                time.sleep(poll_s)
        except BaseException:
            launch.kill()
            raise
    reason = ""
    if rc != 0:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        reason = failure_reason(text, processes) or (
            f"The launch of {processes} processes ended with exit code {rc}; its output is "
            f"in {log_path}.")
        mark_failed(run_dir, reason)
    return rc, run_dir, reason


# -- what the launcher says when a process dies ------------------------------------------------

_ROOT = re.compile(r"Root Cause \(first observed failure\):(.*?)(?:\n=+|\Z)", re.DOTALL)
_RANK = re.compile(r"rank\s*:\s*(\d+)")
_EXIT = re.compile(r"exitcode\s*:\s*(-?\d+)")
_TRACE = re.compile(r"traceback\s*:\s*(.*)", re.DOTALL)


def failure_reason(text: str, processes: int) -> str | None:
    """One sentence from the launcher's failure report: which process died and why. A process
    killed by a signal is the cause even where the launcher observed a peer's failure first (the
    peer's collective broke when it died, or the launcher ended it with SIGTERM, and which
    failure the launcher sees first is a race)."""
    m = _ROOT.search(text)
    if not m:
        return None
    block = m.group(1)
    report = text[:m.start()]
    others = report[report.rfind("Failures:"):] if "Failures:" in report else ""
    entries = [block] + re.split(r"\n\s*\[\d+\]:", others)[1:]
    block = min(entries, key=_as_cause)  # the first observed where the likeliest causes tie
    rank = _RANK.search(block)
    code = _EXIT.search(block)
    who = f"Process {rank.group(1)} of {processes}" if rank else "A process"
    sig = re.search(r"Signal (\d+) \((SIG[A-Z]+)\)", block)
    if sig:
        why = f"was killed by signal {sig.group(1)} ({sig.group(2)})"
        if sig.group(2) == "SIGKILL":
            why += ", which the system's out-of-memory killer or a 'kill -9' sends"
    elif code and int(code.group(1)) < 0:
        why = f"was killed by signal {-int(code.group(1))}"
    else:
        trace = _TRACE.search(block)
        last = ""
        if trace:
            lines = [ln.strip() for ln in trace.group(1).splitlines() if ln.strip()]
            lines = [ln for ln in lines if not ln.startswith("To enable traceback")]
            last = lines[-1] if lines else ""
        why = f"exited with code {code.group(1) if code else '?'}" + (f": {last}" if last else "")
    return f"{who} died: it {why}. The other processes were ended with it."


def _as_cause(block: str) -> int:
    """How likely a failure entry is the cause (lower: likelier). Killed by a signal (a 'kill -9',
    the out-of-memory killer): 0; exited with an error: 1; ended by SIGTERM, which the launcher
    sends to the other processes once one has failed: 2."""
    code = _EXIT.search(block)
    value = int(code.group(1)) if code else 1
    return 2 if value == -15 else 0 if value < 0 else 1


def mark_failed(run_dir: Path | None, reason: str) -> None:
    """After a launch that failed: the run is marked failed with the reason, unless its main
    process already recorded how it ended (a failure of its own, a stop, a finish)."""
    if run_dir is None or not (run_dir / "summary.json").exists():
        return
    from kdstudio.core.events import Failed
    from kdstudio.core.runs import Run

    run = Run(run_dir)
    s = run.summary()
    if s.get("status") in ("stopped", "finished"):
        return
    if s.get("status") == "failed" and not s.get("error", "").startswith("The run stopped on an "
                                                                        "unexpected error"):
        return  # the main process's own, specific failure
    message = reason + (f" (The main process said: {s['error']})" if s.get("error") else "")
    run.update_summary(status="failed", error=message)
    run.append_event(Failed(error_type="ProcessDied", title="A training process died",
                            message=message, run_dir=str(run_dir)).to_dict())
