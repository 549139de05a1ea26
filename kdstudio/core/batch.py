"""Batches: what one micro-batch holds, and how texts become token ids and batches.

Pure tokenizer and torch work, below the task families (which batch their data with it)
and the data loading: encode texts, pack a language model's id blocks, pad them, and build
a language-model batch from texts that two different tokenizers read, aligned by where
their tokens end in the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdstudio.core.errors import ModelError


@dataclass
class Batch:
    """What one micro-batch holds: inputs for each model (the same dict when tokenizers match)."""

    student: dict[str, "torch.Tensor"]
    teacher: dict[str, "torch.Tensor"]
    labels: "torch.Tensor | None"
    tokens: int
    size: int
    # Language models with different tokenizers: (n, 3) rows of (row, student pos, teacher
    # pos) that predict the same next text; None when both read the same ids.
    align: "torch.Tensor | None" = None
    on_policy: bool = False  # the continuations are the student's own samples
    # Which training rows these are (language-model blocks): the teacher cache's keys.
    rows: "list[int] | None" = None


def encode(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                     return_tensors="pt")


def causal_blocks(tokenizer: Any, texts: list[str], max_length: int, pack: bool) -> list[list[int]]:
    """Token-id blocks for a language model: packed into full max_length blocks, or one per text."""
    ids = tokenizer(texts, add_special_tokens=False, truncation=not pack,
                    max_length=None if pack else max_length)["input_ids"]
    sep = tokenizer.eos_token_id
    if not pack:
        return [x for x in ids if len(x) >= 2]
    stream: list[int] = []
    for x in ids:
        stream.extend(x)
        if sep is not None:
            stream.append(sep)
    blocks = [stream[i:i + max_length] for i in range(0, len(stream), max_length)]
    return [b for b in blocks if len(b) >= 2]


def collate_blocks(blocks: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad id blocks to a batch; labels are the ids with padding set to -100."""
    width = max(len(b) for b in blocks)
    ids = torch.full((len(blocks), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(blocks), width), dtype=torch.long)
    for r, b in enumerate(blocks):
        ids[r, :len(b)] = torch.tensor(b, dtype=torch.long)
        mask[r, :len(b)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _offsets(tok: Any, texts: list[str], max_length: int) -> dict[str, Any]:
    if not getattr(tok, "is_fast", False):
        raise ModelError(
            f"The tokenizer '{type(tok).__name__}' is a slow (pure Python) tokenizer, which cannot "
            "say where its tokens lie in the text, so positions cannot be aligned across "
            "tokenizers.", hint="Use a model that ships a fast tokenizer (tokenizer.json).")
    return tok(texts, add_special_tokens=False, truncation=True, max_length=max_length,
               return_offsets_mapping=True)


def align_by_text(s_offsets: list[list[tuple[int, int]]], t_offsets: list[list[tuple[int, int]]],
                  s_keep: torch.Tensor) -> torch.Tensor:
    """Pairs (row, student position, teacher position) that predict the same next text.

    Position k of a causal LM predicts the token after its k-th token, i.e. what follows the
    text up to that token's end. A student and a teacher position whose tokens end at the same
    character (and both have a next token) predict the same continuation of the same text.
    ``s_keep`` (rows, positions) marks the student positions that are trained at all.
    Returns a long tensor (n, 3).
    """
    out: list[tuple[int, int, int]] = []
    for r, (so, to) in enumerate(zip(s_offsets, t_offsets)):
        t_at_end = {int(end): j for j, (_, end) in enumerate(to[:-1])}  # the last token ending there
        s_at_end = {int(end): k for k, (_, end) in enumerate(so[:-1])}
        for end, k in s_at_end.items():
            j = t_at_end.get(end)
            if j is not None and bool(s_keep[r, k]):
                out.append((r, k, j))
    return torch.tensor(out, dtype=torch.long).reshape(-1, 3)


def text_batch(texts: list[str], prompt_chars: list[int], student_tok: Any, teacher_tok: Any | None,
               max_length: int, device: torch.device, *, on_policy: bool = False) -> Batch:
    """A causal-LM batch from texts; the first prompt_chars[i] characters of text i are context
    only (no loss on predicting them). ``teacher_tok`` None means the teacher shares the
    student's tokenizer and reads the same ids."""
    if teacher_tok is None and not getattr(student_tok, "is_fast", False):
        enc = student_tok(texts, add_special_tokens=False, truncation=True, max_length=max_length)
        prompt_ids = student_tok([t[:c] for t, c in zip(texts, prompt_chars)],
                                 add_special_tokens=False)["input_ids"]
        starts = [[len(p)] * len(ids) for p, ids in zip(prompt_ids, enc["input_ids"])]
        s_offsets = None
    else:
        enc = _offsets(student_tok, texts, max_length)
        s_offsets = enc["offset_mapping"]
        starts = [[s for s, _ in row] for row in s_offsets]
    width = max(len(x) for x in enc["input_ids"])
    pad = student_tok.pad_token_id if student_tok.pad_token_id is not None else 0
    ids = torch.full((len(texts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for r, row in enumerate(enc["input_ids"]):
        n = len(row)
        ids[r, :n] = torch.tensor(row, dtype=torch.long)
        mask[r, :n] = 1
        for k in range(n):
            # In the fallback `starts` holds the prompt's token count, compared to positions.
            before_prompt_end = (k < starts[r][k]) if s_offsets is None else (starts[r][k] < prompt_chars[r])
            if not before_prompt_end:
                labels[r, k] = ids[r, k]
    student = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    align = None
    teacher = student
    if teacher_tok is not None:
        t_enc = _offsets(teacher_tok, texts, max_length)
        t_width = max(len(x) for x in t_enc["input_ids"])
        t_pad = teacher_tok.pad_token_id if teacher_tok.pad_token_id is not None else 0
        t_ids = torch.full((len(texts), t_width), t_pad, dtype=torch.long)
        t_mask = torch.zeros_like(t_ids)
        for r, row in enumerate(t_enc["input_ids"]):
            t_ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
            t_mask[r, :len(row)] = 1
        teacher = {"input_ids": t_ids.to(device), "attention_mask": t_mask.to(device)}
        # Student position k is trained when the token it predicts (k + 1) has a label.
        s_keep = torch.zeros_like(ids, dtype=torch.bool)
        s_keep[:, :-1] = labels[:, 1:] != -100
        align = align_by_text(s_offsets, t_enc["offset_mapping"], s_keep).to(device)
    student = {k: v.to(device) for k, v in student.items()}
    if teacher_tok is None:
        teacher = student
    return Batch(student, teacher, None, int(mask.sum()), len(texts), align=align,
                 on_policy=on_policy)
