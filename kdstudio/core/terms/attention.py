"""Self-attention relation distillation for encoders (MiniLMv2): one loss term.

Formulation: MiniLMv2 (Wang et al. 2021, "MiniLMv2: Multi-Head Self-Attention Relation
Distillation"), on the last layer of both models. The last layer's queries, keys and values
of each model are split into the same number R of *relation heads* (method.
attention_relation_heads), whatever each model's own head count; each head gives the
scaled dot-product relations softmax(Q_r Q_r^T / sqrt(d_r)) between the tokens of a text,
and likewise K-K and V-V. The loss is KL(teacher || student) of these relation
distributions, per relation head, averaged over heads and real query tokens, summed over the
three relations (Q-Q, K-K, V-V). An L x L relation has the same shape whatever the width, so
a student with fewer layers, a narrower width and fewer attention heads can learn it without
a projection; MiniLM v1's per-head attention maps would need the same head count.

Q, K and V are made from the last layer's input (hidden_states[-2]) with that layer's own
query/key/value maps, so the term needs only hidden states. That holds for post-LayerNorm
encoders (BERT, RoBERTa, ELECTRA, DistilBERT, MPNet, DeBERTa); an architecture without
separate query/key/value linear maps gets a clear error.

The whole method is this module: its loss, its settings (FIELDS) and its term (TERM).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdstudio.core.errors import CompatibilityError, ConfigError
from kdstudio.core.tasks import CLASSIFICATION, EMBEDDING
from kdstudio.core.term import LossTerm, Needs, TermInputs

if TYPE_CHECKING:  # pragma: no cover
    import torch

FIELDS = [
    ("attention_weight", float, 0.0,
     "sentence-embedding and sequence-classification only: weight of self-attention relation "
     "distillation (MiniLMv2). It teaches the student's last layer to relate the tokens of "
     "each text to each other (query-query, key-key and value-value) as the teacher's last "
     "layer does. Works when the student has fewer layers, a narrower width or fewer heads; "
     "both models must share the tokenizer.", {"min": 0.0}),
    ("attention_relation_heads", int, 12,
     "Number of relation heads the last layer's queries, keys and values are split into, in "
     "both models. It must divide the width of both models' queries (their hidden size, less "
     "in a student with pruned heads) and need not equal either model's own number of "
     "attention heads. More heads compare finer slices of the layer.", {"min": 1}),
]

# Names of the separate query/key/value linear maps in encoder self-attention modules: BERT
# family (RoBERTa, ELECTRA, XLM-R...), DistilBERT, MPNet, DeBERTa.
QKV_NAMES = (("query", "key", "value"), ("q_lin", "k_lin", "v_lin"), ("q", "k", "v"),
             ("query_proj", "key_proj", "value_proj"))


def relation_log_probs(x: "torch.Tensor", mask: "torch.Tensor", heads: int) -> "torch.Tensor":
    """Log of the self-relations of x (B, L, D) split into heads relation heads:
    log_softmax(x_r x_r^T / sqrt(D / heads)) over the keys, (B, heads, L, L).

    mask (B, L), true at real tokens: padded keys get probability 0. A row whose keys are all
    padded is uniform (never NaN); callers leave padded query rows out.
    """
    import torch

    b, n, d = x.shape
    if heads < 1 or d % heads:
        raise ValueError(f"heads ({heads}) must divide the width {d}")
    x = x.float().reshape(b, n, heads, d // heads).transpose(1, 2)   # (B, R, L, d_r)
    # In float32 even under autocast: bfloat16 dot products blur the relations (cheap: the
    # L x L products are small next to the model's).
    with torch.autocast(x.device.type, enabled=False):
        scores = x @ x.transpose(-1, -2) / (d // heads) ** 0.5         # (B, R, L, L)
    keys = mask.bool()[:, None, None, :]
    scores = scores.masked_fill(~keys, torch.finfo(scores.dtype).min)
    return torch.log_softmax(scores, dim=-1)


def relation_kl(student: "torch.Tensor", teacher: "torch.Tensor", mask: "torch.Tensor",
                heads: int) -> "torch.Tensor":
    """KL(teacher || student) of the self-relations of student (B, L, Ds) and teacher
    (B, L, Dt), both split into heads relation heads; Ds and Dt may differ (heads divides
    both). Summed over keys, averaged over the heads and the real query tokens of mask
    (B, L). Returns a float32 scalar; a mask with no real token gives a zero still connected
    to student."""
    if student.shape[:2] != teacher.shape[:2] or mask.shape != student.shape[:2]:
        raise ValueError("student, teacher and mask must share (batch, length), got shapes "
                         f"{tuple(student.shape)}, {tuple(teacher.shape)} and {tuple(mask.shape)}")
    keep = mask.bool()
    log_s = relation_log_probs(student, keep, heads)
    log_t = relation_log_probs(teacher, keep, heads)
    pair = keep[:, None, :, None] & keep[:, None, None, :]          # (B, 1, L, L)
    # Padded keys and queries add exactly 0 (and no gradient).
    kl = (log_t.exp() * (log_t - log_s)).masked_fill(~pair, 0.0)
    return kl.sum() / (heads * max(int(keep.sum()), 1))


def attention_relation_loss(student_qkv: "tuple[torch.Tensor, ...]",
                            teacher_qkv: "tuple[torch.Tensor, ...]", mask: "torch.Tensor", *,
                            heads: int) -> "torch.Tensor":
    """MiniLMv2's loss: relation_kl of the queries, keys and values (each (B, L, D) of its
    model's width), summed over the three relations. Returns a float32 scalar."""
    if len(student_qkv) != len(teacher_qkv):
        raise ValueError("student_qkv and teacher_qkv must hold the same relations")
    return sum(relation_kl(s, t, mask, heads) for s, t in zip(student_qkv, teacher_qkv))


def last_attention_maps(model: Any) -> tuple[Any, Any, Any]:
    """The query, key and value linear maps of the model's last self-attention module."""
    import torch

    found = None
    for module in model.modules():
        for names in QKV_NAMES:
            maps = [getattr(module, n, None) for n in names]
            if all(isinstance(m, torch.nn.Linear) for m in maps):
                found = tuple(maps)
                break
    if found is None:
        raise CompatibilityError(
            f"Attention relation distillation needs separate query, key and value linear maps "
            f"in the self-attention of the model, and {type(model).__name__} has none.",
            hint="Set method.attention_weight to 0, or use an encoder of the BERT family "
                 "(BERT, RoBERTa, ELECTRA, DistilBERT, MPNet, DeBERTa).")
    return found


def last_layer_qkv(model: Any, hidden_states: "tuple[torch.Tensor, ...]"
                   ) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """The last layer's queries, keys and values (each (B, L, D)): its own maps applied to
    its input, hidden_states[-2] (B, L, D)."""
    maps = last_attention_maps(model)
    x = hidden_states[-2]
    if maps[0].in_features != x.shape[-1]:
        raise CompatibilityError(
            f"The last query map of {type(model).__name__} reads width {maps[0].in_features}, "
            f"but its hidden states have width {x.shape[-1]}.",
            hint="Set method.attention_weight to 0.")
    return tuple(m(x.to(m.weight.dtype)) for m in maps)


def _common_divisors(a: int, b: int) -> list[int]:
    import math

    g = math.gcd(a, b)
    return [k for k in range(1, g + 1) if g % k == 0]


def _compute(x: TermInputs) -> Any:
    import torch

    heads = x.method.attention_relation_heads
    s_qkv = last_layer_qkv(x.distiller.student, x.s["hidden_states"])
    with torch.no_grad():  # the teacher stays frozen
        t_qkv = last_layer_qkv(x.distiller.teacher[0], x.t["hidden_states"])
    # The width of the queries: the hidden size, or less in a student with pruned heads.
    ds, dt = s_qkv[0].shape[-1], t_qkv[0].shape[-1]
    if any(v.shape[-1] % heads for v in s_qkv + t_qkv):
        raise ConfigError(
            f"method.attention_relation_heads is {heads}, but it must divide the width of the "
            f"last layer's queries, keys and values in the teacher ({dt}) and the student "
            f"({ds}).", hint=f"Choose one of {', '.join(map(str, _common_divisors(ds, dt)))}.")
    return attention_relation_loss(s_qkv, t_qkv, x.batch.student["attention_mask"], heads=heads)


TERM = LossTerm("attention", "attention_weight", (EMBEDDING, CLASSIFICATION),
                "self-attention relation distillation", _compute,
                needs=Needs(output=False, hidden_states=True, same_tokens=True))
