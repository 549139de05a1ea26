"""A top-k log-probability file another tool wrote (axolotl's offline distillation JSON lines),
imported into the teacher cache that a run of a given config will find.

The cache's key is made as the run's setup makes it: the same data loading and tokenizing, the
teacher's source and tokenizer fingerprints, and the teacher's dtype on the run's device
(teacher_source.key_parts); only the answers come from the file instead of a teacher pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Imported:
    """What an import wrote: the cache, its k, and whether the config's runs will find it."""

    cache: Any          # teacher_cache.TeacherCache
    k: int
    rows: int
    found_by_config: bool  # teacher.cache_k already names this k


def import_for_config(cfg: Any, path: str | Path, *, emit: Any, stop: Any = None) -> Imported:
    """Write the teacher cache a run of cfg reads from an axolotl top-k JSONL file (see
    teacher_cache.imports). ValueError (and ConfigError) say what does not match."""
    from kdstudio.core.data import load_text_data, validation_wanted
    from kdstudio.core.device import resolve_device, resolve_precision, teacher_dtype
    from kdstudio.core.errors import ConfigError
    from kdstudio.core.events import Progress, Stage
    from kdstudio.core.models import load_tokenizer, resolve_model_source
    from kdstudio.core.tasks import get_task
    from kdstudio.core.teacher_cache.imports import import_topk_jsonl
    from kdstudio.core.teacher_cache.store import TeacherCache
    from kdstudio.core.teacher_source import key_parts, plan_teacher

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give the JSON-lines file of the "
                                "teacher's top-k log-probabilities")
    task = get_task(cfg.task)
    if not task.caches_teacher:
        raise ConfigError(f"The teacher cache holds language models' next-token answers; this "
                          f"config's task is {cfg.task}.", hint="Import into a causal-lm config.")
    plan = plan_teacher(cfg, exists=True)
    if plan.mode != "cache":
        raise ConfigError(f"A run of this config would not read a teacher cache: {plan.why}.",
                          hint="Use a config whose run reads the teacher's next-token answers.")
    tc = cfg.training
    emit(Stage("load data", cfg.data.dataset))
    data = load_text_data(cfg.data, task, seed=tc.seed, validation=validation_wanted(tc, False),
                          validation_cap=cfg.evaluation.max_samples)
    source = resolve_model_source(cfg.teacher.name, revision=cfg.teacher.revision, on_event=emit,
                                  stop=stop, role="teacher")
    tok = load_tokenizer(source, trust_remote_code=cfg.teacher.trust_remote_code, role="teacher")
    device = resolve_device(tc.device)
    dtype = teacher_dtype(cfg.teacher.dtype, device, resolve_precision(tc.precision, device))
    emit(Stage("tokenize", f"{len(data.train_texts)} texts"))
    _, make = task.batch_maker(data.train_texts, data.train_labels, student_tok=tok,
                               teacher_tok=tok, same_tok=True, max_length=cfg.data.max_length,
                               pack=cfg.data.pack, device="cpu")
    rows = make.cache_rows
    parts = key_parts(cfg, source, tok, rows, dtype, int(cfg.teacher.cache_k) or 1)
    if not cfg.teacher.cache_k:
        parts["k"] = 0  # the file's k (import_topk_jsonl takes the smallest it gives)
    emit(Stage("teacher cache", f"importing {path.name} for {len(rows)} training rows"))
    folder = import_topk_jsonl(path, rows, parts, len(tok),
                               progress=lambda d, n: emit(Progress("teacher cache", d, n, "rows")),
                               extra={"imported_from": path.name})
    cache = TeacherCache(folder)
    return Imported(cache, cache.k, len(rows), int(cfg.teacher.cache_k) == cache.k)


__all__ = ["Imported", "import_for_config"]
