"""Checks of a run config's values, raising ConfigError that names the key.

Each value against its field's type and its declared rules (choices, min, max), as a
config is filled from nested dicts; then the rules that span fields and task families.
"""

import dataclasses
import typing
from typing import TYPE_CHECKING, Any

from kdstudio.core.errors import ConfigError
from kdstudio.core.objective import check_terms, has_plain_loss
from kdstudio.core.tasks import REGISTRY, get_task

if TYPE_CHECKING:
    from kdstudio.core.config import RunConfig


def type_name(tp: Any) -> str:
    return {str: "text", int: "integer", float: "number", bool: "true/false"}.get(
        tp, "list" if typing.get_origin(tp) is list else str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, list):
            return [coerce(v, inner, key) for v in value]
    raise ConfigError(f"{key} is {value!r}, which is not {_article(tp)} {type_name(tp)}.",
                      hint=f"Example: {key.rsplit('.', 1)[-1]} = {_example(tp)}")


def _article(tp: Any) -> str:
    return "an" if tp is int else "a"


def _example(tp: Any) -> str:
    return {str: '"text"', int: "10", float: "0.5", bool: "true"}.get(tp, "[1, 2]")


def validate_fields(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            validate_fields(value, key + ".")
            continue
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            allowed = ", ".join(repr(c) for c in meta["choices"])
            raise ConfigError(f"{key} is {value!r}; allowed values are {allowed}.")
        if meta.get("min") is not None and value < meta["min"]:
            raise ConfigError(f"{key} is {value}; it must be at least {meta['min']}.")
        if meta.get("max") is not None and value > meta["max"]:
            raise ConfigError(f"{key} is {value}; it must be at most {meta['max']}.")


def fill(cls: type, values: dict[str, Any], prefix: str, base: Any) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            allowed = ", ".join(sorted(names))
            where = f"section [{prefix[:-1]}]" if prefix else "the top level"
            raise ConfigError(f"Unknown key '{full}' in {where}. Known keys: {allowed}.")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"'{full}' must be a section ([{full}]) of keys, not {value!r}.")
            kwargs[key] = fill(tp, value, full + ".", getattr(base, key))
        else:
            kwargs[key] = coerce(value, tp, full)
    return dataclasses.replace(base, **kwargs)


def validate_config(cfg: "RunConfig") -> "RunConfig":
    """Check every field of a RunConfig and the combinations; raise ConfigError naming the key."""
    validate_fields(cfg, "")
    m, task = cfg.method, get_task(cfg.task)
    owned = {f: (off, t) for t in REGISTRY.values() for f, off in t.own_method_fields}
    for key, (off, owner) in owned.items():
        if owner is not task and getattr(m, key) != off:
            raise ConfigError(
                f"method.{key} is {getattr(m, key)!r}, but it applies only to the "
                f"{owner.name} task, not '{task.name}'.",
                hint=f"Set it to {str(off).lower()}, or set task = \"{owner.name}\".")
    check_terms(task, m)
    endpoint = cfg.teacher.endpoint.strip()
    if endpoint and not (endpoint.startswith(("http://", "https://")) and task.caches_teacher):
        raise ConfigError(
            f"teacher.endpoint is {endpoint!r}, but a served teacher is an http(s) address of "
            f"a language-model server, for the causal-lm task (this run's is '{task.name}').",
            hint="Give e.g. 'http://127.0.0.1:8000/v1', or leave it empty to run the teacher "
                 "here.")
    if m.on_policy_share > 0 and m.logit_weight == 0 and m.cross_tokenizer_weight == 0:
        raise ConfigError(
            f"method.on_policy_share is {m.on_policy_share}, but the teacher scores the "
            "student's own continuations only through the logit loss, and "
            "method.logit_weight and method.cross_tokenizer_weight are both 0.",
            hint="Give method.logit_weight (or method.cross_tokenizer_weight, when the "
                 "tokenizers differ) a positive weight.")
    for pair in m.layer_pairs:
        if len(pair) != 2 or any(not isinstance(i, int) or i < 0 for i in pair):
            raise ConfigError(
                f"method.layer_pairs has the entry {pair!r}; each entry must be two "
                "non-negative layer numbers [student, teacher], e.g. [[1, 2], [2, 4]].")
    if cfg.evaluation.baseline and not has_plain_loss(task):
        works = " and ".join(t.name for t in REGISTRY.values() if has_plain_loss(t))
        raise ConfigError(
            f"evaluation.baseline is true, but a {task.name} student has no plain "
            "task loss of its own to train on without a teacher (there are no labels).",
            hint=f"Set evaluation.baseline = false; it works for {works}.")
    s = cfg.student
    if not s.name and not s.layer_indices and s.layers <= 0:
        raise ConfigError("student.layers is 0; a derived student needs at least one layer.",
                          hint="Use a count such as 3 or a fraction such as 0.5.")
    if s.layers >= 1 and s.layers != int(s.layers):
        raise ConfigError(f"student.layers is {s.layers}: use a whole number of layers "
                          "(e.g. 3) or a fraction below 1 (e.g. 0.5).")
    if len(set(s.layer_indices)) != len(s.layer_indices) or any(i < 0 for i in s.layer_indices):
        raise ConfigError(f"student.layer_indices is {s.layer_indices}: list distinct, "
                          "non-negative teacher layer numbers, e.g. [0, 2, 5].")
    _check_pruned_student(s, task)
    if cfg.training.max_steps == 0 and cfg.training.epochs <= 0:
        raise ConfigError("training.max_steps and training.epochs are both 0, so there is "
                          "nothing to train.", hint="Set one of them above 0.")
    return cfg


def _check_pruned_student(s: Any, task: Any) -> None:
    """The derived student's pruning fields, as far as they can be judged without the teacher."""
    if s.name and (s.target_size or s.vocabulary != "teacher" or s.attention_heads
                   or s.intermediate_size or s.layer_choice != "even"):
        raise ConfigError(f"student.name is '{s.name}', but the pruning fields (target_size, "
                          "shape, attention_heads, intermediate_size, vocabulary, layer_choice) "
                          "shape a student derived from the teacher.",
                          hint="Empty student.name to derive the student, or reset those fields.")
    if s.target_size and (s.attention_heads or s.intermediate_size or s.hidden_size
                          or s.layer_indices):
        raise ConfigError(f"student.target_size is {s.target_size:g}, and the student's shape is "
                          "also given (attention_heads, intermediate_size, hidden_size or "
                          "layer_indices): the planner picks those for a target size.",
                          hint="Give either student.target_size (with student.shape) or the "
                               "shape itself, not both.")
    if s.vocabulary == "data" and task.scores_vocabulary:
        raise ConfigError(f"student.vocabulary is 'data', but a {task.name} student writes text "
                          "token by token and must keep the teacher's whole vocabulary to "
                          "compare their answers.",
                          hint="Set student.vocabulary = \"teacher\" (allowed: teacher, data; "
                               "'data' is for encoder tasks).")
