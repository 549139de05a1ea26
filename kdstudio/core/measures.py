"""The figures a task reports, from outputs already computed: pure torch, tensors in, numbers out.

Below the task families, which pick the figures they report from here; evaluation.py runs
the models and re-exports these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_metrics(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    acc = (pred == labels).float().mean().item()
    f1s = []
    for c in torch.unique(torch.cat([labels, pred])):
        tp = ((pred == c) & (labels == c)).sum().item()
        fp = ((pred == c) & (labels != c)).sum().item()
        fn = ((pred != c) & (labels == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": acc, "macro_f1": sum(f1s) / len(f1s)}


def class_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Each row's KL(teacher || student) of the class probabilities (at temperature 1):
    (rows, classes) twice in, (rows,) out."""
    logp_s = F.log_softmax(student_logits.float(), -1)
    logp_t = F.log_softmax(teacher_logits.float(), -1)
    return (logp_t.exp() * (logp_t - logp_s)).sum(-1)


def _cos_matrix(emb: torch.Tensor) -> torch.Tensor:
    e = F.normalize(emb.float(), dim=-1)
    return e @ e.T


def _nearest(sim: torch.Tensor) -> torch.Tensor:
    sim = sim.clone()
    sim.fill_diagonal_(-float("inf"))  # a sentence is not its own neighbour
    return sim.argmax(-1)


def nearest(emb: torch.Tensor) -> torch.Tensor:
    """Each row's most cosine-similar other row (the nearest-neighbour figures)."""
    return _nearest(_cos_matrix(emb))


def knn_accuracy(emb: torch.Tensor, labels: torch.Tensor) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy: does the closest other sentence share the label?"""
    return (labels[_nearest(_cos_matrix(emb))] == labels).float().mean().item()


def _ranks(x: torch.Tensor) -> torch.Tensor:
    r = torch.empty_like(x)
    r[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return r


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (ties broken by position)."""
    ra, rb = _ranks(a.double()), _ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / denom) if denom else 0.0


def embedding_spread(emb: torch.Tensor) -> float:
    """How far apart the sentence vectors lie: 1 minus the mean cosine between different
    sentences (about 1 for unrelated directions, 0 when every vector points the same way,
    a collapsed encoder). Fewer than two vectors give 0."""
    n = len(emb)
    if n < 2:
        return 0.0
    sim = _cos_matrix(emb)
    off = (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))
    return float(1.0 - off)


def embedding_metrics(s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
    cos = F.cosine_similarity(s, t, dim=-1).mean().item() if s.shape == t.shape else float("nan")
    s_sim, t_sim = _cos_matrix(s), _cos_matrix(t)
    iu = torch.triu_indices(len(s), len(s), offset=1)
    m = {"cosine_to_teacher": cos,
         "neighbour_agreement": (_nearest(s_sim) == _nearest(t_sim)).float().mean().item(),
         "spearman": spearman(s_sim[iu[0], iu[1]], t_sim[iu[0], iu[1]]),
         "embedding_spread": embedding_spread(s)}
    if labels is not None:
        m["knn_accuracy"] = knn_accuracy(s, labels)
    return m


def tagging_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 by seqeval's (conlleval's) definition: an entity
    counts only when its type and its exact word span both match. Plus the share of words
    whose tag is right (token_accuracy). gold, pred: the tag names of each sentence's words,
    in a BIO or IO scheme (B-PLACE, I-PLACE, O), the same lengths."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    words = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p))
    kw = {"zero_division": 0}
    return {"entity_f1": float(f1_score(gold, pred, **kw)),
            "entity_precision": float(precision_score(gold, pred, **kw)),
            "entity_recall": float(recall_score(gold, pred, **kw)),
            "token_accuracy": right / max(words, 1)}
