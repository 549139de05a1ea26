"""Importing a teacher's top-k log-probabilities written by another tool into the cache.

The format read is axolotl's offline knowledge-distillation data set (its
``axolotl.integrations.kd.chat_template`` "v2" strategy), as JSON lines, one row each:
``input_ids`` (n token ids), ``target_token_ids`` (per position a list of k ids) and
``target_logprobs`` (or ``logprobs``; per position the k log-probabilities at temperature 1,
as vLLM's ``prompt_logprobs`` gives them). Entry i describes token i given the tokens before
it (the first is empty or null); when the lists are shorter than input_ids they are aligned
to its end, as axolotl aligns them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kdstudio.core.teacher_cache.store import TeacherCacheWriter

LOGPROB_FIELDS = ("target_logprobs", "logprobs")


def _read_rows(path: Path) -> dict[tuple[int, ...], tuple[list, list]]:
    """input_ids -> (per-position ids, per-position log-probs), for every line of the file."""
    out: dict[tuple[int, ...], tuple[list, list]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}, line {n}: not JSON ({exc})") from None
            field = next((f for f in LOGPROB_FIELDS if f in row), None)
            missing = [f for f in ("input_ids", "target_token_ids") if f not in row]
            if missing or field is None:
                raise ValueError(
                    f"{path}, line {n}: missing {', '.join(missing + ([] if field else ['target_logprobs']))}; "
                    "an axolotl top-k log-probability row has input_ids, target_token_ids and "
                    "target_logprobs (or logprobs)")
            out[tuple(int(t) for t in row["input_ids"])] = (row["target_token_ids"], row[field])
    return out


def import_topk_jsonl(path: str | Path, rows: Sequence[Sequence[int]], parts: Mapping[str, Any],
                      vocab_size: int, *, progress: Callable[[int, int], None] | None = None,
                      extra: Mapping[str, Any] | None = None) -> Path:
    """Write the cache for these training rows (their token ids, in the run's order) from an
    axolotl top-k JSON-lines file; returns the published cache folder. Each training row must
    appear in the file with the same input_ids; k is the smallest count the file gives (at most
    parts["k"] when that is set), and the tail's mass is 1 - the top k's sum. progress(done,
    total) is called per row written; extra goes into the manifest."""
    path = Path(path)
    found = _read_rows(path)
    answers = []
    k_min = math.inf
    for r, row in enumerate(rows):
        key = tuple(int(t) for t in row)
        if key not in found:
            raise ValueError(f"training row {r} ({len(key)} tokens, starting {list(key[:5])}) is not "
                             f"in {path}; the file must hold the same tokenized rows as the run "
                             "(same tokenizer, data, data.max_length and data.pack)")
        ids, lps = found[key]
        pad = len(key) - len(ids)
        per_pos = []
        for j in range(len(key) - 1):  # position j predicts token j + 1
            e = j + 1 - pad
            if e < 0 or e >= len(ids) or not ids[e] or lps[e] is None or len(ids[e]) != len(lps[e]):
                raise ValueError(f"{path}: row {r} has no top-k answer for token {j + 1}")
            bad = [int(t) for t in ids[e] if not 0 <= int(t) < vocab_size]
            if bad:
                raise ValueError(f"{path}: row {r} gives token id {bad[0]} for token {j + 1}, "
                                 f"outside the teacher's vocabulary of {vocab_size:,}; the file "
                                 "must come from the same tokenizer as the run")
            per_pos.append((ids[e], lps[e]))
            k_min = min(k_min, len(ids[e]))
        answers.append(per_pos)
    k = int(min(k_min, parts.get("k") or k_min)) if answers else int(parts.get("k") or 1)
    parts = dict(parts, k=k)
    length = max((len(r) for r in rows), default=0)
    with TeacherCacheWriter(parts, vocab_size, expected_rows=len(rows)) as writer:
        writer.extra.update(extra or {})
        for r, per_pos in enumerate(answers):
            top_ids = torch.zeros((1, length, k), dtype=torch.long)
            top_lp = torch.zeros((1, length, k), dtype=torch.float32)
            mask = torch.zeros((1, length), dtype=torch.bool)
            for j, (ids, lps) in enumerate(per_pos):
                lp_t = torch.tensor([float(x) for x in lps], dtype=torch.float32)
                vals, order = lp_t.topk(k)
                top_ids[0, j] = torch.tensor([int(ids[i]) for i in order.tolist()])
                top_lp[0, j] = vals
                mask[0, j] = True
            writer.add([r], mask, top_ids=top_ids, top_logprobs=top_lp)
            if progress is not None:
                progress(r + 1, len(answers))
    return writer.final_dir


__all__ = ["LOGPROB_FIELDS", "import_topk_jsonl"]
