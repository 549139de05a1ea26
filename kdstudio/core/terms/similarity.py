"""Similarity-structure (relational) distillation for sentence encoders: one loss term.

The embedding loss pulls each student vector toward its own teacher vector; this term
compares how the sentences of a batch relate to each other (their B x B cosine-similarity
matrices), which is what search and nearest-neighbour answers depend on. Comparing B x B
matrices works whatever the two embedding widths are.

The whole method is this module: its loss, its settings (FIELDS, which join [method]) and
its term (TERM), found by kdstudio.core.terms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdstudio.core.term import LossTerm, TermInputs
from kdstudio.core.tasks import EMBEDDING

if TYPE_CHECKING:  # pragma: no cover
    import torch

SIMILARITY_LOSSES = ("kl", "mse")

FIELDS = [
    ("similarity_weight", float, 0.0,
     "sentence-embedding only: weight of the similarity-structure (relational) loss. Within "
     "each batch it compares how similar every sentence is to every other one, in the student "
     "and in the teacher, so that search with the student finds the teacher's nearest "
     "neighbours.", {"min": 0.0}),
    ("similarity_loss", str, "kl",
     "How the in-batch cosine-similarity matrices are compared: 'kl' between each sentence's "
     "softmaxed similarities to the others (at similarity_temperature), or 'mse' of the "
     "cosines.", {"choices": SIMILARITY_LOSSES}),
    ("similarity_temperature", float, 0.05,
     "kl only: divides the cosines before the softmax. Lower values focus on each sentence's "
     "closest neighbours.", {"min": 1e-3}),
]


def off_diagonal_cosines(emb: "torch.Tensor") -> "torch.Tensor":
    """Cosine similarity of every row of emb (B, D) with every other row: (B, B - 1).

    Row i holds sim(i, j) for j != i, in order. A zero row has cosine 0 with everything
    (normalising divides by max(norm, eps), never by zero).
    """
    import torch
    import torch.nn.functional as F

    if emb.dim() != 2:
        raise ValueError(f"emb must be (batch, dim), got shape {tuple(emb.shape)}")
    e = F.normalize(emb.float() if emb.dtype in (torch.float16, torch.bfloat16) else emb,
                    dim=-1, eps=1e-8)
    b = e.shape[0]
    sim = e @ e.T
    # Dropping the diagonal (each sentence with itself, always 1) leaves B rows of B - 1.
    keep = ~torch.eye(b, dtype=torch.bool, device=e.device)
    return sim[keep].view(b, b - 1) if b > 0 else sim


def similarity_structure_loss(
    student_emb: "torch.Tensor",
    teacher_emb: "torch.Tensor",
    *,
    kind: str = "kl",
    temperature: float = 0.05,
) -> "torch.Tensor":
    """Distance between the in-batch cosine-similarity matrices of student_emb (B, Ds) and
    teacher_emb (B, Dt); the widths Ds and Dt may differ. The diagonal is left out.

    kind kl: each sentence's similarities to the other B - 1, divided by temperature and
    softmaxed, give a distribution over its neighbours; the loss is KL(teacher || student)
    averaged over the B rows (contrastive / "relational" distillation). A low temperature
    concentrates it on each sentence's nearest neighbours. It is not scaled by T^2.
    kind mse: mean squared difference of the B(B - 1) off-diagonal cosines (temperature
    is unused). Both are invariant to rescaling any embedding. Returns a scalar; B < 2
    gives a zero still connected to student_emb, so backward() works.
    """
    import torch.nn.functional as F

    if student_emb.dim() != 2 or teacher_emb.dim() != 2:
        raise ValueError("student_emb and teacher_emb must be (batch, dim), got shapes "
                         f"{tuple(student_emb.shape)} and {tuple(teacher_emb.shape)}")
    if student_emb.shape[0] != teacher_emb.shape[0]:
        raise ValueError("student_emb and teacher_emb must have the same batch size, got "
                         f"{student_emb.shape[0]} and {teacher_emb.shape[0]}")
    if kind not in SIMILARITY_LOSSES:
        raise ValueError(f"kind must be one of {', '.join(SIMILARITY_LOSSES)}; got {kind!r}")
    temperature = float(temperature)
    if not temperature > 0:  # written so that NaN fails too
        raise ValueError(f"temperature must be > 0, got {temperature}")

    s = off_diagonal_cosines(student_emb)
    t = off_diagonal_cosines(teacher_emb).to(s.dtype)
    rows = max(s.shape[0], 1)
    if kind == "mse":
        # Summing an empty selection (B < 2) gives a zero that keeps its grad_fn.
        return (s - t).pow(2).sum() / max(s.numel(), 1)
    log_s = F.log_softmax(s / temperature, dim=-1)
    log_t = F.log_softmax(t / temperature, dim=-1)
    # Rows with a single neighbour (B = 2) are certain in both models and add exactly 0.
    return (log_t.exp() * (log_t - log_s)).sum() / rows


def _compute(x: TermInputs) -> Any:
    m = x.method
    return similarity_structure_loss(x.s["embedding"], x.t["embedding"].float(),
                                     kind=m.similarity_loss,
                                     temperature=m.similarity_temperature)


TERM = LossTerm("similarity", "similarity_weight", (EMBEDDING,),
                "similarity-structure distillation", _compute)
