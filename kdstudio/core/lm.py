"""Causal-LM distillation beyond token-level logits on shared ids.

- Batches built from text, so a student whose tokenizer differs from the teacher's can still
  be taught: each model tokenizes the same text, and positions are aligned by where their
  tokens end in the text (both then predict what follows the same characters).
- Continuations: the teacher's, written once before training (sequence-level distillation),
  and the student's own, sampled during training (on-policy distillation, as in GKD).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kdstudio.core.errors import ConfigError, StoppedError
from kdstudio.core.batch import Batch, align_by_text, text_batch  # noqa: F401  (re-exported)


# -- continuations -------------------------------------------------------------------------------

def prompts_from_texts(tok: Any, texts: list[str], prompt_tokens: int) -> list[str]:
    """The start of each text, about prompt_tokens tokens long (at most half of a short text),
    cut where a token ends so it is a clean prefix of the text."""
    prompts = []
    if getattr(tok, "is_fast", False):
        enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        for text, offs in zip(texts, enc["offset_mapping"]):
            n = max(1, min(prompt_tokens, len(offs) // 2))
            prompts.append(text[:offs[n - 1][1]] if offs else text)
    else:
        for text, ids in zip(texts, tok(texts, add_special_tokens=False)["input_ids"]):
            n = max(1, min(prompt_tokens, len(ids) // 2))
            prompts.append(tok.decode(ids[:n]))
    return prompts


def _sampling(gen: Any, tok: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens,
                              "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None
                              else tok.eos_token_id}
    if tok.eos_token_id is not None:
        kwargs["eos_token_id"] = tok.eos_token_id
    if gen.temperature > 0:
        kwargs.update(do_sample=True, temperature=gen.temperature, top_p=gen.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False)
    return kwargs


@torch.no_grad()
def _generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              kwargs: dict[str, Any], seed: int, autocast: Callable[[], Any]) -> torch.Tensor:
    was_training = model.training
    model.eval()
    devices = [input_ids.device] if input_ids.device.type == "cuda" else []
    try:
        # A private random stream: sampling must not shift the training's dropout draws,
        # or a resumed run would differ from an uninterrupted one.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            with autocast():
                return model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    finally:
        model.train(was_training)


def generate_continuations(model: torch.nn.Module, tok: Any, prompts: list[str], gen: Any,
                           device: torch.device, *, seed: int,
                           autocast: Callable[[], Any], on_progress: Callable[[int, int], None] | None = None,
                           stop: Any = None) -> list[str]:
    """Continue each prompt (sampling as set in ``gen``); returns only the new text."""
    kwargs = _sampling(gen, tok)
    side = tok.padding_side
    tok.padding_side = "left"  # generation appends on the right, so pad on the left
    out: list[str] = []
    try:
        for i in range(0, len(prompts), gen.batch_size):
            if stop is not None and stop.is_set():
                raise StoppedError("Stopped while the teacher was writing continuations.")
            chunk = prompts[i:i + gen.batch_size]
            enc = tok(chunk, add_special_tokens=False, padding=True, return_tensors="pt").to(device)
            seqs = _generate(model, enc["input_ids"], enc["attention_mask"], kwargs, seed + i, autocast)
            new = seqs[:, enc["input_ids"].shape[1]:]
            out.extend(tok.batch_decode(new, skip_special_tokens=True))
            if on_progress:
                on_progress(len(out), len(prompts))
    finally:
        tok.padding_side = side
    return out


def on_policy_batch(student: torch.nn.Module, student_tok: Any, teacher_tok: Any | None,
                    batch: Batch, gen: Any, max_length: int, device: torch.device, *, seed: int,
                    autocast: Callable[[], Any]) -> Batch:
    """Replace a batch's texts after their first tokens by what the student samples itself.

    The loss then falls on the student's own tokens only, scored by the teacher: the student
    learns from its own mistakes instead of only from text it would never have written.
    """
    ids, mask = batch.student["input_ids"], batch.student["attention_mask"]
    shortest = int(mask.sum(1).min())
    n = max(1, min(gen.prompt_tokens, shortest - 1))
    prompt = ids[:, :n]
    seqs = _generate(student, prompt, torch.ones_like(prompt), _sampling(gen, student_tok), seed,
                     autocast)
    prompts = student_tok.batch_decode(prompt, skip_special_tokens=False)
    conts = student_tok.batch_decode(seqs[:, n:], skip_special_tokens=True)
    texts = [p + c for p, c in zip(prompts, conts)]
    return text_batch(texts, [len(p) for p in prompts], student_tok, teacher_tok, max_length,
                      device, on_policy=True)


# -- the teacher's continuations on disk -------------------------------------------------------

GENERATIONS_FILE = "generations.jsonl"


def save_generations(path: Path, prompts: list[str], continuations: list[str]) -> None:
    from kdstudio.core.runs import atomic_write_text

    lines = [json.dumps({"prompt": p, "continuation": c}, ensure_ascii=False)
             for p, c in zip(prompts, continuations)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def load_generations(source: str | Path) -> tuple[list[str], list[str]]:
    """Prompts and continuations from a generations.jsonl, or from the run folder holding one."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / GENERATIONS_FILE
    if not path.is_file():
        raise ConfigError(f"generation.reuse is '{source}', but there is no generations file there.",
                          hint=f"Give a run folder of a sequence-level run or its {GENERATIONS_FILE}.")
    prompts, conts = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompts.append(str(row["prompt"]))
            conts.append(str(row["continuation"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"Line {n} of '{path}' is not a JSON object with 'prompt' and "
                              "'continuation'.", hint=f"Use a {GENERATIONS_FILE} written by a "
                              "sequence-level run.") from None
    if not prompts:
        raise ConfigError(f"'{path}' holds no generations.")
    return prompts, conts
