"""`kdstudio cache`: the teacher-logit caches on disk, which runs used each, and deleting them.

A cache holds a teacher's top-k next-token answers for one data set and length; runs and the
students of a sweep read it instead of running the teacher (see teacher.cache). Imports go
one way: commands -> cache -> progress.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_cache_parser(sub: Any) -> None:
    c = sub.add_parser(
        "cache", help="list or delete the teacher-logit caches",
        description="Teacher-logit caches: one teacher pass over a data set, saved as the "
                    "teacher's top-k next-token answers, which runs, resumes and sweeps on the "
                    "same teacher, data and length read instead of running the teacher. "
                    "Deleting one only costs a teacher pass the next time it is needed.")
    c.add_argument("action", nargs="?", choices=("list", "delete", "import"), default="list",
                   help="list (the default), delete, or import a top-k log-probability file")
    c.add_argument("keys", nargs="*", metavar="KEY",
                   help="delete: the caches' keys (a unique start of one is enough); import: "
                        "the JSON-lines file (axolotl's offline distillation format: input_ids, "
                        "target_token_ids, target_logprobs)")
    c.add_argument("--all", action="store_true", help="delete: every cache")
    c.add_argument("--config", metavar="RUN.toml",
                   help="import: the run config whose runs read the imported cache (its teacher, "
                        "data, length and dtype make the cache's key)")


def cmd_cache(args: argparse.Namespace, console: Any) -> int:
    from rich.markup import escape
    from rich.table import Table

    from kdstudio.core.errors import KDStudioError
    from kdstudio.core.teacher_cache import (
        cache_root,
        delete_cache,
        delete_stopped_passes,
        list_caches,
        stopped_passes,
    )
    from kdstudio.core.teacher_source import size_text

    if args.action == "import":
        return _import(args, console)
    caches = list_caches()
    if args.action == "list":
        if args.keys or args.all:
            raise KDStudioError("'kdstudio cache list' takes no keys.",
                                hint="Use 'kdstudio cache delete KEY' to delete one.")
        stopped = stopped_passes()
        if stopped:
            console.print(f"{len(stopped)} stopped teacher pass(es), "
                          f"{size_text(sum(p.size_bytes for p in stopped))} "
                          f"({', '.join(f'{p.rows:,} rows' for p in stopped)} written): the next "
                          "run that needs the same cache continues from them; 'kdstudio cache "
                          "delete --all' deletes them too.")
        if not caches:
            console.print(f"No teacher caches in {escape(str(cache_root()))}. A run with "
                          "teacher.cache = 'always', or a sweep of language models, writes one.")
            return 0
        table = Table(title=f"Teacher caches in {escape(str(cache_root()))}")
        for col in ("key", "teacher", "top-k", "positions", "size", "bytes / position",
                    "created", "used by"):
            table.add_column(col, justify="right" if col in ("top-k", "positions", "size",
                                                             "bytes / position") else "left")
        for c in caches:
            used = ", ".join(c.used_by) if c.used_by else "no run yet"
            table.add_row(c.key[:12], escape(c.teacher), str(c.k), f"{c.tokens:,}",
                          size_text(c.size_bytes), f"{c.bytes_per_token:.0f}", c.created[:16],
                          escape(used))
        console.print(table)
        console.print(f"{len(caches)} cache(s), {size_text(sum(c.size_bytes for c in caches))} in all.")
        return 0

    if args.all:
        chosen = caches
    elif not args.keys:
        raise KDStudioError("Say which cache to delete.",
                            hint="Give its key from 'kdstudio cache' (a unique start is enough), "
                                 "or --all.")
    else:
        chosen = []
        for key in args.keys:
            hits = [c for c in caches if c.key.startswith(key.strip().lower())]
            if len(hits) != 1:
                listed = ", ".join(c.key[:12] for c in caches) or "none"
                raise KDStudioError(
                    f"No single teacher cache has a key starting with '{key}' "
                    f"({'several do' if hits else 'none does'}).",
                    hint=f"The keys are: {listed}. 'kdstudio cache' lists them.")
            chosen.append(hits[0])
    freed = 0
    if args.all and stopped_passes():
        gone = delete_stopped_passes()
        freed += gone
        console.print(f"Deleted the stopped teacher pass(es) ({size_text(gone)}).")
    for c in chosen:
        delete_cache(c.path)
        freed += c.size_bytes
        console.print(f"Deleted teacher cache {c.key[:12]} ({escape(c.teacher)}, {size_text(c.size_bytes)}).")
    console.print(f"{len(chosen)} cache(s) deleted, {size_text(freed)} freed. Runs that used them "
                  "keep their results; a resumed or new run writes the cache again if it needs it.")
    return 0


def _import(args: argparse.Namespace, console: Any) -> int:
    """`kdstudio cache import FILE --config RUN.toml`."""
    from rich.markup import escape

    from kdstudio.cli.progress import ProgressSink, ctrl_c_stops
    from kdstudio.core.cache_import import import_for_config
    from kdstudio.core.config import load_config
    from kdstudio.core.errors import KDStudioError
    from kdstudio.core.teacher_source import cache_summary

    if len(args.keys) != 1 or not args.config:
        raise KDStudioError("'kdstudio cache import' takes one file and --config.",
                            hint="For example: kdstudio cache import topk.jsonl --config run.toml")
    cfg = load_config(args.config)
    try:
        with ctrl_c_stops(console) as stop, ProgressSink(console) as sink:
            done = import_for_config(cfg, args.keys[0], emit=sink, stop=stop)
    except (ValueError, FileNotFoundError) as exc:
        raise KDStudioError(f"Cannot import {args.keys[0]}: {exc}",
                            hint="Nothing was written; the file must hold the config's training "
                                 "rows tokenized by its teacher's tokenizer.") from None
    console.print(f"Imported {done.rows:,} rows into the teacher cache: "
                  f"{escape(cache_summary(done.cache))}.")
    if done.found_by_config:
        console.print(f"Runs of {escape(args.config)} read it instead of running the teacher.")
    else:
        console.print(f"[yellow]The file gives the top {done.k}: runs of {escape(args.config)} "
                      f"read this cache once teacher.cache_k = {done.k} (it is "
                      f"{cfg.teacher.cache_k}).[/]")
    return 0
