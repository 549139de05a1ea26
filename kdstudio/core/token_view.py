"""Token by token: how likely a teacher and a student find each token of one text.

The Compare page's per-token view of a language-model run: each token's probability under
both models, the KL divergence of their next-token distributions there, and where they
disagree most. Both models must share a tokenizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from kdstudio.core.errors import CompatibilityError, KDStudioError
from kdstudio.core.models import same_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from kdstudio.core.compare import Predictor


@dataclass
class TokenRecord:
    """One token of a text: how likely each model found it, and how far apart they are."""

    text: str                       # the token's piece of the text (the pieces join to the text)
    token_id: int
    in_prompt: bool                 # False for tokens of the continuation
    p_teacher: float | None         # P(this token | the text before it); None for a first token
    p_student: float | None         # with no context (a tokenizer without a start token)
    kl: float = 0.0                 # KL(teacher || student) of the two next-token distributions
    log_ratio: float = 0.0          # log p_teacher - log p_student of this token
    teacher_top: tuple[str, float] = ("", 0.0)  # each model's most likely token here
    student_top: tuple[str, float] = ("", 0.0)


@dataclass
class TokenView:
    """Per-token probabilities of one text; ``top`` indexes the largest disagreements."""

    tokens: list[TokenRecord]
    top: list[int]
    mean_kl: float
    truncated: bool = False         # the text was cut to the models' context length

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)


def _context_limit(*models: Any, cap: int) -> int:
    limit = cap
    for m in models:
        cfg = getattr(m, "config", None)
        for key in ("n_positions", "max_position_embeddings"):
            n = getattr(cfg, key, None)
            if isinstance(n, int) and n > 0:
                limit = min(limit, n)
                break
    return max(2, limit)


def _pieces(tok: Any, ids: list[int]) -> list[str]:
    """Each token's piece of the decoded text, so the pieces join exactly to the whole.

    A character split over several byte-level tokens goes to the token that completes it
    (the others get "").
    """
    pieces, prev = [], ""
    for i in range(len(ids)):
        cur = tok.decode(ids[: i + 1], clean_up_tokenization_spaces=False)
        if cur.startswith(prev) and not cur.endswith("\ufffd"):
            pieces.append(cur[len(prev):])
            prev = cur
        else:
            pieces.append("")
    whole = tok.decode(ids, clean_up_tokenization_spaces=False)
    if prev != whole and whole.startswith(prev):  # trailing partial bytes: keep what decodes
        pieces[-1] += whole[len(prev):]
    return pieces


@torch.no_grad()
def token_probabilities(teacher: Predictor, student: Predictor, prompt: str,
                        continuation: str = "", *, top_k: int = 5, max_tokens: int = 256) -> TokenView:
    """For each token of prompt + continuation, the probability the teacher and the student
    give it (given the tokens before it), the KL divergence between their full next-token
    distributions there (in nats: 0 = they agree exactly), and the ``top_k`` positions where
    that divergence is largest.

    Both must share a tokenizer: the same ids must mean the same text for the two
    distributions to be compared entry by entry.
    """
    for p in (teacher, student):
        if not p.family.shows_token_view:
            raise KDStudioError(f"The per-token view is for text generation (causal-lm), not "
                                f"'{p.task}'.", hint="Open a causal-lm run.")
    if not same_tokenizer(teacher.tok, student.tok):
        raise CompatibilityError(
            f"The teacher and the student use different tokenizers ({len(teacher.tok):,} and "
            f"{len(student.tok):,} tokens), so the same text is split into different tokens and "
            "their probabilities cannot be lined up token by token.",
            hint="The per-token view needs a student that shares the teacher's tokenizer (for "
                 "example one derived from the teacher). The side-by-side continuations, speed "
                 "and memory still compare.")
    text = prompt + continuation
    if not text.strip():
        raise KDStudioError("The input is empty.", hint="Type a prompt first.")
    tok = teacher.tok
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    lead = [start] if start is not None else []
    limit = _context_limit(teacher.model, student.model, cap=max_tokens) - len(lead)
    truncated = len(ids) > limit
    ids = ids[:limit]
    context = torch.tensor([lead + ids], device=teacher.device)

    def log_probs(p: Predictor) -> torch.Tensor:
        was_training = p.model.training
        p.model.eval()
        try:
            return p.model(input_ids=context.to(p.device)).logits[0].float().cpu()
        finally:
            p.model.train(was_training)

    lt, ls = log_probs(teacher), log_probs(student)
    # Rows beyond the tokenizer (a vocabulary padded for speed) are never real tokens.
    v = min(len(tok), lt.shape[-1], ls.shape[-1])
    lt, ls = lt[:, :v].log_softmax(-1), ls[:, :v].log_softmax(-1)
    pieces = _pieces(tok, ids)
    # Row j predicts the token after it: with a start token, row j predicts ids[j].
    shift = 0 if lead else -1
    kl_all = (lt.exp() * (lt - ls)).sum(-1).clamp_min(0.0)
    t_best, s_best = lt.max(-1), ls.max(-1)
    records, used = [], 0
    for i, (tid, piece) in enumerate(zip(ids, pieces)):
        in_prompt = used < len(prompt)
        used += len(piece)
        row = i + shift
        if row < 0 or tid >= v:  # no context to predict it from, or no logit for it
            records.append(TokenRecord(piece, tid, in_prompt, None, None))
            continue
        pt, ps = float(lt[row, tid]), float(ls[row, tid])
        records.append(TokenRecord(
            piece, tid, in_prompt, p_teacher=math.exp(pt), p_student=math.exp(ps),
            kl=float(kl_all[row]), log_ratio=pt - ps,
            teacher_top=(tok.decode([int(t_best.indices[row])]), float(t_best.values[row].exp())),
            student_top=(tok.decode([int(s_best.indices[row])]), float(s_best.values[row].exp()))))
    scored = [i for i, r in enumerate(records) if r.p_teacher is not None]
    # Identical models differ only by rounding: below 1e-6 nats there is no disagreement.
    top = sorted((i for i in scored if records[i].kl > 1e-6), key=lambda i: -records[i].kl)[:top_k]
    mean = sum(records[i].kl for i in scored) / len(scored) if scored else 0.0
    return TokenView(records, top, mean, truncated)
