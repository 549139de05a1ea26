"""How the launching process steers and follows a multi-process run: the stop and pause files,
the stop every process agrees on (SharedStop, and SetupStop during setup), and where the run
folder is (announce_run_dir).

Stopping and pausing reach every process through the per-step agreement of ``SharedStop``:
the main process reads the stop and pause files (in the run folder, or named by the
launching process), every process contributes its own stop flag, and all of them act on the
maximum. That costs one small all-reduce per step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdstudio.core.distributed import ProcessGroup

# Files that ask a multi-process run to stop or pause, in its run folder ...
STOP_FILE = "STOP"
PAUSE_FILE = "PAUSE"
# ... or wherever the launching process (the CLI parent, the app) says, before the folder exists.
ENV_STOP_FILE = "KDSTUDIO_STOP_FILE"
ENV_PAUSE_FILE = "KDSTUDIO_PAUSE_FILE"
# The main process writes its run folder's path here, so the launcher can follow the run.
ENV_RUN_DIR_FILE = "KDSTUDIO_RUN_DIR_FILE"
# The launcher sets this so the processes know how many there are before the group forms.
ENV_PROCESSES = "KDSTUDIO_PROCESSES"


def control_files(name: str, env: str, run_dir: Path | None) -> list[Path]:
    out = [Path(p) for p in [os.environ.get(env, "")] if p]
    if run_dir is not None:
        out.append(Path(run_dir) / name)
    return out


class SharedStop:
    """The stop every process agrees on, checked once a step (an all-reduce).

    ``is_set()`` is a collective: every process must call it the same number of times, which
    train_steps does (once before each step). A pause (the pause file) holds every process
    here, checking again every fifth of a second, until the file goes or a stop comes.
    """

    def __init__(self, group: ProcessGroup, local: Any, run_dir: Path | None = None):
        self.group, self.local, self.run_dir = group, local, run_dir
        self._stopped = False

    def _files(self, name: str, env: str) -> bool:
        return self.group.is_main and any(p.exists() for p in control_files(name, env, self.run_dir))

    def local_stop(self) -> bool:
        return self.local.is_set() or self._files(STOP_FILE, ENV_STOP_FILE)

    def is_set(self) -> bool:
        if self._stopped:
            return True
        while True:
            stop, pause = self.group.any(self.local_stop(), self._files(PAUSE_FILE, ENV_PAUSE_FILE))
            if stop:
                self._stopped = True
                return True
            if not pause:
                return False
            time.sleep(0.2)

    def set(self) -> None:
        self.local.set()


class SetupStop:
    """The stop a multi-process run's setup sees (RunContext.stop).

    ``is_set()`` is this process's own stop alone (its Ctrl-C; on the main process the stop
    file too), no collective: the main process alone polls it inside its own long passes (the
    teacher cache, a download), which the others do not share. ``agree()`` is SharedStop's check, every process together: setup.check_stop
    calls it at the points every process passes (after the data, after the teacher, before
    the first step), so a stop file written during setup stops them all there.
    """

    def __init__(self, shared: SharedStop):
        self.shared = shared

    def is_set(self) -> bool:
        return self.shared._stopped or self.shared.local_stop()

    def agree(self) -> bool:
        return self.shared.is_set()

    def set(self) -> None:
        self.shared.set()


def announce_run_dir(run_dir: Path) -> None:
    """Tell the launching process where the run is (the main process, once the folder exists)."""
    target = os.environ.get(ENV_RUN_DIR_FILE)
    if target:
        tmp = Path(target + ".tmp")
        tmp.write_text(str(run_dir), encoding="utf-8")
        os.replace(tmp, target)


def main_process_does(group: Any, work: Any, stopped: str) -> Any:
    """In a multi-process run, something made once for every process (a prepared teacher,
    the teacher's importance): the main process runs work() and then tells the others it is
    saved, or that it was stopped; the others wait for that word. Returns work()'s result on
    the main process, None on the others (they read what it saved)."""
    from kdstudio.core.errors import StoppedError

    if group.is_main:
        try:
            result = work()
        except StoppedError:
            group.broadcast("stopped")
            raise
        group.broadcast("saved")
        return result
    if group.broadcast(None) == "stopped":
        raise StoppedError(stopped)
    return None
