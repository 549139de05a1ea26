"""Task families behind one Task protocol, and their registry.

``get_task(name)`` turns a config's ``task`` value into the task object; code outside this
package asks that object and never compares task names.
"""

from __future__ import annotations

from kdstudio.core.errors import ConfigError
from kdstudio.core.tasks.base import Preset, Task
from kdstudio.core.tasks.causal_lm import CausalLM
from kdstudio.core.tasks.classification import Classification
from kdstudio.core.tasks.embedding import Embedding
from kdstudio.core.tasks.token_classification import TokenClassification

CAUSAL_LM: Task = CausalLM()
CLASSIFICATION: Task = Classification()
EMBEDDING: Task = Embedding()

# In the order the app lists them; a new family is one module plus one line here.
REGISTRY: dict[str, Task] = {t.name: t for t in (CAUSAL_LM, CLASSIFICATION, EMBEDDING,
                                                  TokenClassification())}
TASK_NAMES: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_TASK: Task = EMBEDDING


def get_task(task: "str | Task") -> Task:
    """The task object for a config's task value (a task object is returned as it is)."""
    if isinstance(task, Task):
        return task
    try:
        return REGISTRY[task]
    except (KeyError, TypeError):
        raise ConfigError(f"task is {task!r}; allowed values are "
                          f"{', '.join(map(repr, TASK_NAMES))}.") from None


def all_tasks() -> list[Task]:
    return list(REGISTRY.values())


__all__ = ["CAUSAL_LM", "CLASSIFICATION", "DEFAULT_TASK", "EMBEDDING", "REGISTRY", "TASK_NAMES",
           "Preset", "Task", "all_tasks", "get_task"]
