"""The loss-term contract: what a term reads (Needs), what its compute sees (TermInputs), and
the term itself (LossTerm).

A term declares its needs; the distiller (what the forward pass returns), the teacher
source (whether cached answers can stand in for the teacher), the memory planner, the
compatibility check and the app ask those needs, never a term's name or weight key. A
new method is one module in core/terms defining a LossTerm, plus its test. Module level
stays free of torch (the config and the app read the terms before torch is imported).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from kdstudio.core.batch import Batch
    from kdstudio.core.tasks import Task


@dataclass(frozen=True)
class Needs:
    """What a loss term reads from the two models and the data."""

    teacher: bool = True          # the teacher's answers; False: a plain loss on the data alone
    labels: bool = False          # the data's labels (a language model's: the next tokens)
    output: bool = True           # the task's output (logits, or the pooled embedding)
    hidden_states: bool = False   # every layer's hidden states, of both models
    attentions: bool = False      # every layer's self-attention maps (and values), of both models
    # Compares the two models position by position, so both must read the same token ids.
    # A term that reads a per-position output (a language model's logits) needs them too,
    # unless it pairs positions across tokenizers itself (aligns_tokens).
    same_tokens: bool = False
    aligns_tokens: bool = False
    # Pairs each student layer with a teacher layer (method.layer_pairs) and compares their
    # hidden states through a learned projection when the widths differ: the distiller
    # builds the pairs and the projections for it.
    layer_pairs: bool = False

    @property
    def features(self) -> frozenset[str]:
        """The extra features the forward pass must return for this term."""
        return frozenset(k for k in ("hidden_states", "attentions") if getattr(self, k))

    @property
    def teacher_inside(self) -> bool:
        """It reads the teacher's inner workings, not only its answers: a cache of the
        teacher's answers (top-k log-probabilities) cannot stand in for it."""
        return self.teacher and bool(self.features)

    def needs_same_tokens(self, per_position_output: bool) -> bool:
        return self.same_tokens or (self.teacher and self.output and per_position_output
                                    and not self.aligns_tokens)


class TermInputs:
    """What a term's compute sees: the batch, both models' features, the method, the module
    holding learned projections. Shifted next-token views are made once and shared."""

    def __init__(self, batch: Batch, student: dict, teacher: dict, method: Any,
                 distiller: Any, vocab_size: int, cached: Any = None):
        self.batch, self.s, self.t, self.method = batch, student, teacher, method
        self.distiller, self.vocab_size = distiller, vocab_size
        # The teacher's top-k answers read from the teacher cache (CachedTargets over the
        # batch's positions), when they stand in for the live teacher.
        self.cached = cached
        self._shift: dict[str, Any] = {}

    def next_token(self) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """(student logits, labels, keep-mask) at the positions that predict a next token."""
        if "s" not in self._shift:
            labels = self.batch.student["labels"][:, 1:]
            v = self.vocab_size or None
            self._shift.update(s=self.s["logits"][:, :-1, :v], labels=labels, mask=labels != -100)
        return self._shift["s"], self._shift["labels"], self._shift["mask"]

    def teacher_next_token(self) -> "torch.Tensor":
        v = self.vocab_size or None
        return self.t["logits"][:, :-1, :v]


@dataclass(frozen=True)
class LossTerm:
    name: str                      # logged under this name
    weight_key: str                # the MethodConfig field holding its weight
    # The task families it applies to: a tuple of them, or a test of a family's behaviour
    # (so a new family whose output is logits gets the logit terms without touching them).
    tasks: "tuple[Task, ...] | Callable[[Task], bool]"
    label: str                     # words for people
    compute: Callable[[TermInputs], Any]
    needs: Needs = field(default_factory=Needs)
    skip: Callable[["Batch"], bool] | None = None  # batches the term sits out
    # It reads only the next-token logits position by position, so it can run chunk by chunk
    # over the output head (chunked.py) together with the other head terms.
    head: bool = False
    # Its place in the sum (and in the logged curves): lower first, then by name. The built-in
    # terms keep the order they always had, so a run's numbers do not move.
    order: int = 100

    def applies_to(self, task: "Task") -> bool:
        return self.tasks(task) if callable(self.tasks) else task in self.tasks

    def users(self) -> list["Task"]:
        """The registered task families it applies to."""
        from kdstudio.core.tasks import all_tasks

        return [t for t in all_tasks() if self.applies_to(t)]

    def weight(self, method: Any) -> float:
        return float(getattr(method, self.weight_key, 0.0))
