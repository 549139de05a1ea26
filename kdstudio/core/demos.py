"""The built-in demos: resources/demos/<demo_file> of each task family that ships one."""

from __future__ import annotations

from pathlib import Path

from kdstudio.core.config import RunConfig, load_config
from kdstudio.core.errors import ConfigError
from kdstudio.core import runs
from kdstudio.core.tasks import DEFAULT_TASK, Task, all_tasks, get_task

# In the order the app's Run menu and the command line's help list them.
DEMOS: tuple[Task, ...] = tuple(sorted((t for t in all_tasks() if t.demo_file),
                                       key=lambda t: t.demo_rank))


def demo_path(task: str | Task = DEFAULT_TASK) -> Path:
    return runs.resources_dir() / "demos" / get_task(task).demo_file  # looked up at each call


def demo_config(task: str | Task = DEFAULT_TASK, *,
                instead: str = "choose another demo in the Run menu") -> RunConfig:
    """A built-in demo's config; ConfigError naming the file when it is missing or invalid
    (``instead``: what else the user can do, in the words of where they asked)."""
    path = demo_path(task)
    if not path.exists():
        raise ConfigError(f"The {get_task(task).name} demo's config ({path}) is missing from this "
                          "installation.", hint=f"Reinstall KD Studio, or {instead}.")
    return load_config(path)
