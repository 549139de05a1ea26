"""The distillation objective: the built-in loss terms and the weighted sum of the active ones.

A term (term.LossTerm) has a name (its curve is logged under it), the task families it
applies to, the config key of its weight, what it needs (term.Needs) and a compute function
built on the pure functions in losses.py. The objective is the weighted sum of the terms
whose weight is above zero. The five built-in terms live here; every other method is one
module in core/terms plus its test. Module level stays free of torch (config validation and
the app read the terms before torch is imported).
"""

from __future__ import annotations

from typing import Any

from kdstudio.core.errors import ConfigError
from kdstudio.core.tasks import CAUSAL_LM, EMBEDDING, Task, get_task
from kdstudio.core.term import LossTerm, Needs, TermInputs  # noqa: F401  (re-exported)


# -- the terms ---------------------------------------------------------------------------------

def _logit(x: TermInputs):
    from kdstudio.core.losses import logit_distillation_loss

    m = x.method
    if x.cached is not None:
        from kdstudio.core.sparse import sparse_logit_loss

        s, _, mask = x.next_token()
        c = x.cached
        return sparse_logit_loss(s, c.top_ids[:, :-1], c.top_logprobs[:, :-1],
                                 c.tail_logmass[:, :-1], tail_log_half=c.tail_log_half[:, :-1],
                                 loss=m.logit_loss, temperature=m.temperature, beta=m.beta,
                                 alpha=m.alpha, mask=mask & c.mask[:, :-1])
    s, t, mask = x.distiller.task.paired_logits(x)
    return logit_distillation_loss(s, t, loss=m.logit_loss, temperature=m.temperature,
                                   beta=m.beta, alpha=m.alpha, mask=mask)


def _hard_label(x: TermInputs):
    from kdstudio.core.losses import hard_label_loss

    return hard_label_loss(*x.distiller.task.labelled_logits(x))


def _cross_tokenizer(x: TermInputs):
    from kdstudio.core.losses import cross_tokenizer_loss

    if x.batch.align is None:
        s, _, mask = x.next_token()
        s_pos, t_pos = s[mask], x.teacher_next_token()[mask]
    else:
        r, si, ti = x.batch.align.unbind(-1)
        s_pos, t_pos = x.s["logits"][r, si], x.t["logits"][r, ti]
    return cross_tokenizer_loss(s_pos, t_pos, temperature=x.method.temperature)


def _embedding(x: TermInputs):
    from kdstudio.core.losses import embedding_loss

    return embedding_loss(x.distiller.project_embedding(x.s["embedding"]),
                          x.t["embedding"].float(), kind=x.method.embedding_loss)


def _hidden(x: TermInputs):
    from kdstudio.core.losses import hidden_state_loss

    d = x.distiller
    mask = x.batch.student["attention_mask"].bool()
    total = 0.0
    for i, (si, ti) in enumerate(d.pairs):
        sh = x.s["hidden_states"][si]
        if len(d.hidden_proj):
            sh = d.hidden_proj[i](sh)
        total = total + hidden_state_loss(sh, x.t["hidden_states"][ti].float(),
                                          kind=x.method.hidden_loss, mask=mask)
    return total / len(d.pairs)


# The order is the order of the sum (and of the logged curves): the built-in five, then the
# terms of core/terms in module-name order.
def _gives_logits(task: Task) -> bool:
    return task.gives_logits


def _any_task(task: Task) -> bool:
    return True


_BUILTIN: tuple[LossTerm, ...] = (
    # With different tokenizers there are no shared ids to compare position by position.
    LossTerm("logit", "logit_weight", _gives_logits, "logit distillation", _logit,
             skip=lambda b: b.align is not None, head=True, order=10),
    # On the student's own samples the "labels" are its own guesses: only the teacher's
    # judgement of them teaches anything.
    LossTerm("hard_label", "hard_label_weight", _gives_logits, "the hard-label loss",
             _hard_label, needs=Needs(teacher=False, labels=True), skip=lambda b: b.on_policy,
             head=True, order=20),
    LossTerm("cross_tokenizer", "cross_tokenizer_weight", (CAUSAL_LM,),
             "cross-tokenizer logit distillation", _cross_tokenizer,
             needs=Needs(aligns_tokens=True), head=True, order=30),
    LossTerm("embedding", "embedding_weight", (EMBEDDING,), "embedding distillation", _embedding,
             order=40),
    LossTerm("hidden", "hidden_weight", _any_task,
             "hidden-state distillation", _hidden,
             needs=Needs(output=False, hidden_states=True, same_tokens=True, layer_pairs=True),
             order=50),
)


_ALL: list[tuple[LossTerm, ...]] = []


def all_terms() -> tuple[LossTerm, ...]:
    """The built-in terms and those of core/terms, in the order of the sum, found once."""
    if not _ALL:
        from kdstudio.core.terms import discover

        found = sorted(_BUILTIN + tuple(discover()[0]), key=lambda t: t.order)  # stable
        _ALL.append(tuple(found))
    return _ALL[0]


def working_terms(task: Task | str, same_tokens: bool, outputs_comparable: bool = True
                  ) -> list[LossTerm]:
    """The terms of a task that can compare this teacher and student, by what each needs:
    position-by-position terms need the same tokens; terms that read the teacher's output
    need outputs that can be compared (the same classes)."""
    task = get_task(task)
    return [t for t in terms_for(task)
            if (same_tokens or not t.needs.needs_same_tokens(task.per_position_output))
            and (outputs_comparable or not (t.needs.teacher and t.needs.output))]


def head_terms_loss(x: TermInputs, terms: list[LossTerm], chunk: int,
                    weights: dict[str, float] | None = None) -> tuple[Any, dict]:
    """The head terms of a language model over chunks of positions: no (positions x
    vocabulary) tensor exists for the batch. x.s holds the student's last hidden state and
    head (features made with head_only); x.t the teacher's, or its logits.
    Returns (weighted sum, {term: value})."""
    import torch.nn.functional as F

    from kdstudio.core.chunked import chunked_distillation_loss

    m, v = x.method, x.vocab_size or None
    s_last = x.s["last_hidden"][:, :-1]
    s_rows = s_last.reshape(-1, s_last.shape[-1])
    labels = x.batch.student["labels"][:, 1:].reshape(-1)
    head = x.s["head"]
    bias = head.bias[:v] if head.bias is not None else None
    teacher_logits = sparse = None
    if x.cached is not None:
        c = x.cached
        flat = [v[:, :-1].reshape(-1, *v.shape[2:]) for v in
                (c.top_ids, c.top_logprobs, c.tail_logmass, c.tail_log_half)]
        sparse = lambda pos: tuple(v[pos] for v in flat)  # noqa: E731
        labels_keep = labels != -100
        cache_keep = c.mask[:, :-1].reshape(-1)
    elif any(t.needs.teacher for t in terms):
        if x.t.get("logits") is not None:
            t_rows = x.t["logits"][:, :-1, :v]
            t_rows = t_rows.reshape(-1, t_rows.shape[-1])
            teacher_logits = lambda pos: t_rows[pos].float()  # noqa: E731
        else:
            t_last = x.t["last_hidden"][:, :-1]
            t_hidden = t_last.reshape(-1, t_last.shape[-1])
            t_head = x.t["head"]
            t_w = t_head.weight[:v]
            t_b = t_head.bias[:v] if t_head.bias is not None else None
            teacher_logits = lambda pos: F.linear(t_hidden[pos], t_w, t_b).float()  # noqa: E731
    res = chunked_distillation_loss(
        s_rows, head.weight[:v], bias, teacher_logits,
        weights={t.name: (weights[t.name] if weights else t.weight(m)) for t in terms},
        labels=labels, loss=m.logit_loss,
        temperature=m.temperature, beta=m.beta, alpha=m.alpha, chunk_size=chunk or None,
        teacher_sparse=sparse, mask=(labels_keep & cache_keep) if sparse is not None else None)
    return res.total, res.terms


def terms_for(task: Task | str) -> list[LossTerm]:
    task = get_task(task)
    return [t for t in all_terms() if t.applies_to(task)]


def active_terms(task: Task | str, method: Any) -> list[LossTerm]:
    return [t for t in terms_for(task) if t.weight(method) > 0]


def plain_terms(task: Task | str) -> list[LossTerm]:
    """The terms that learn from the data alone: the baseline's loss."""
    return [t for t in terms_for(task) if not t.needs.teacher]


def has_plain_loss(task: Task | str) -> bool:
    """Whether a student can train on the data alone (the baseline's plain loss)."""
    return bool(plain_terms(task))


def baseline_possible(task: Any) -> bool:
    """Whether a run of this task (a task object or name, as a run's summary records it) can
    train the plain-training baseline; True for none given or a name this version does not
    know (an old run's), so the words about the baseline stay as they were."""
    try:
        return has_plain_loss(task) if task else True
    except ConfigError:
        return True


def plain_method(method: Any, task: Task | str) -> Any:
    """The same method with every teacher term switched off and the plain terms at weight 1."""
    import dataclasses

    plain = {t.weight_key for t in plain_terms(task)}
    changes: dict[str, Any] = {t.weight_key: (1.0 if t.weight_key in plain else 0.0) for t in all_terms()}
    changes.update({f: off for f, off in get_task(task).own_method_fields})
    return dataclasses.replace(method, **changes)


def check_terms(task: Task | str, method: Any) -> None:
    """Weights set for terms this task has no use for, or no weight at all: ConfigError."""
    task = get_task(task)
    for term in all_terms():
        w = term.weight(method)
        if w > 0 and not term.applies_to(task):
            users = ", ".join(t.name for t in term.users())
            raise ConfigError(
                f"method.{term.weight_key} is {w}, but {term.label} applies only to {users}, "
                f"not '{task.name}'.",
                hint=f"Set it to 0, or choose a task it applies to ({users}).")
    if not active_terms(task, method):
        keys = ", ".join("method." + t.weight_key for t in terms_for(task))
        raise ConfigError(f"Every loss weight for task '{task.name}' is 0 ({keys}), so the "
                          "student would learn nothing.",
                          hint="Give at least one of them a positive weight.")


def default_layer_pairs(n_student: int, n_teacher: int, kept: list[int] | None) -> list[tuple[int, int]]:
    """Student hidden state j (after layer j) against the teacher layer it came from, or an evenly
    spaced one. Index 0 is the embedding output in both, which a derived student shares."""
    if kept and len(kept) == n_student:
        return [(j + 1, kept[j] + 1) for j in range(n_student)]
    return [(j, round(j * n_teacher / n_student)) for j in range(1, n_student + 1)]
