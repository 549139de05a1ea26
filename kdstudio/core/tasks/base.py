"""The Task protocol: what a task family knows, so nothing else compares task names.

A task family (causal language model, text classifier, sentence encoder) is one module in
this package holding one Task subclass. Everything else asks the task object: which model
class to load, how to batch and forward, which metrics to report, which loss terms apply,
what the plain (teacher-free) loss is, what the app says about it. Module level stays free of
torch, so the app and config validation can read a task's words before torch is imported;
the engine hooks import what they need when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from kdstudio.core.config import RunConfig


@dataclass(frozen=True)
class Preset:
    """A named method setting of one task: loss weights (and temperature / logit loss)."""

    key: str
    title: str
    summary: str
    explanation: str
    weights: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fit:
    """How a teacher and a student fit together for a task: the loss terms that can compare
    them, the size of what is compared (vocabulary or classes), or why they cannot."""

    working: list[str]
    vocab: int = 0
    notes: list[str] = field(default_factory=list)
    error: str = ""
    also_works: str = ""  # methods beyond the loss terms that still work, in words


class Task:
    """One task family. Subclasses fill the class attributes and override the hooks."""

    name: ClassVar[str]               # the config value, e.g. "causal-lm"
    title: ClassVar[str]              # short words for people, e.g. "Language model"
    description: ClassVar[str]        # one plain sentence on what such a model does
    auto_class: ClassVar[str]         # the transformers Auto class that loads it
    output: ClassVar[str]             # "logits" or "embedding": what forward_features returns
    generative: ClassVar[bool] = False   # writes text: generation, perplexity, on-policy
    needs_labels: ClassVar[bool] = False  # the data must have a label column
    uses_labels: ClassVar[bool] = False   # a label column is read when present
    packs: ClassVar[bool] = False         # data.pack (join texts into full blocks) applies
    has_task_head: ClassVar[bool] = False  # a head per class that may need training first
    compare_title: ClassVar[str] = ""
    compare_hint: ClassVar[str] = ""
    # Compare answers with the nearest of the run's evaluation texts, so both models embed
    # them first (an index).
    compare_index: ClassVar[bool] = False
    # The model has weights its task never reads (a sentence encoder's pooler): DDP must
    # then look for them each step (find_unused_parameters), or it waits for their gradients.
    leaves_weights_unused: ClassVar[bool] = False
    examples: ClassVar[tuple[str, ...]] = ()
    demo_file: ClassVar[str] = ""         # resources/demos/<demo_file>
    demo_intro: ClassVar[str] = ""        # "a sentence encoder"
    demo_menu: ClassVar[str] = ""         # the Run menu's entry
    demo_rank: ClassVar[int] = 100        # demos are listed by this, lowest first
    presets: ClassVar[tuple[Preset, ...]] = ()
    # The headline metric (name, higher is better) when the data has labels, and without.
    headline_metric: ClassVar[tuple[str, bool]]
    headline_unlabelled: ClassVar[tuple[str, bool] | None] = None
    # Method fields only this task family uses: (field, value meaning "off").
    own_method_fields: ClassVar[tuple[tuple[str, Any], ...]] = ()
    method_defaults: ClassVar[dict[str, Any]] = {}
    # The built-in teacher a template names: one with a trained head for the task.
    default_teacher: ClassVar[str] = "all-MiniLM-L6-v2"
    data_defaults: ClassVar[dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    def __str__(self) -> str:
        return self.name

    # -- words and rules (no torch) -------------------------------------------------------------
    def headline(self, has_labels: bool) -> tuple[str, bool]:
        if not has_labels and self.headline_unlabelled is not None:
            return self.headline_unlabelled
        return self.headline_metric

    @property
    def has_plain_loss(self) -> bool:
        """Whether a student can train on the data alone (the baseline's plain loss)."""
        from kdstudio.core.objective import plain_terms

        return bool(plain_terms(self))

    def validate(self, cfg: "RunConfig") -> None:
        """Rules of this task beyond the generic ones; raise ConfigError naming the key."""

    # -- engine hooks (torch imported when called) -----------------------------------------------
    def forward_features(self, model: Any, inputs: dict, *, hidden: bool = False,
                         head_only: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    def batch_maker(self, texts: list[str], labels: list[int] | None, **kw: Any):
        raise NotImplementedError

    def eval_batches(self, eval_set: Any, tokenizer: Any) -> list[dict]:
        raise NotImplementedError

    def teacher_metrics(self, evaluator: Any) -> dict[str, float]:
        raise NotImplementedError

    def student_metrics(self, evaluator: Any, student: Any) -> dict[str, float]:
        raise NotImplementedError

    def latency_sample(self, eval_set: Any, tokenizer: Any) -> dict:
        from kdstudio.core.data import encode

        texts = sorted(eval_set.texts, key=len)
        return dict(encode(tokenizer, [texts[len(texts) // 2]], eval_set.max_length))

    def fit(self, teacher: Any, student: Any, teacher_tok: Any, same_vocab: bool) -> Fit:
        """Which loss terms can compare these two models (hidden states need shared inputs)."""
        raise NotImplementedError

    def prepare_teacher(self, cfg: "RunConfig", teacher: Any, data: Any, ctx: Any) -> Any:
        """A teacher that is good at the task: the one given, unless it needs preparing."""
        return teacher

    def compare_answer(self, predictor: Any, text: str, gen: Any, top_k: int) -> Any:
        """One model's answer to one input on the Compare page (a compare.ModelAnswer): the
        family picks one of the predictor's kinds of answer (generate, classify, nearest)."""
        raise NotImplementedError


def logits_features(model: Any, inputs: dict, hidden: bool) -> dict[str, Any]:
    """One forward pass of a model with an output head: its logits (and hidden states)."""
    out = model(**{k: v for k, v in inputs.items() if k != "labels"}, output_hidden_states=hidden)
    return {"hidden_states": out.hidden_states if hidden else None, "logits": out.logits}


def text_batch_maker(texts: list[str], labels: list[int] | None, *, student_tok: Any,
                     teacher_tok: Any, same_tok: bool, max_length: int, device: Any, **_: Any):
    """(number of items, item indices -> Batch) for tasks that read one text per example."""
    import torch

    from kdstudio.core.data import encode
    from kdstudio.core.objective import Batch

    def make(idx: list[int]) -> Batch:
        chunk = [texts[i] for i in idx]
        s = {k: v.to(device) for k, v in encode(student_tok, chunk, max_length).items()}
        t = s if same_tok else {k: v.to(device) for k, v in encode(teacher_tok, chunk, max_length).items()}
        y = torch.tensor([labels[i] for i in idx], device=device) if labels is not None else None
        return Batch(s, t, y, int(s["attention_mask"].sum()), len(idx))
    return len(texts), make


def text_eval_batches(eval_set: Any, tokenizer: Any) -> list[dict]:
    import torch

    from kdstudio.core.data import encode

    out = []
    for i in range(0, len(eval_set.texts), eval_set.batch_size):
        enc = dict(encode(tokenizer, eval_set.texts[i:i + eval_set.batch_size], eval_set.max_length))
        if eval_set.labels is not None:
            enc["labels"] = torch.tensor(eval_set.labels[i:i + eval_set.batch_size])
        out.append(enc)
    return out


# Output heads that do more than a linear map (logit soft-capping, scaling): their logits
# cannot be rebuilt chunk by chunk from the last hidden state and the head's weight.
_HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def plain_head(model: Any) -> Any:
    """The model's output head when its logits are exactly head(last hidden state), else None."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or getattr(model, "base_model", model) is model:
        return None
    cfg = getattr(model, "config", None)
    for key in _HEAD_EXTRAS:
        value = getattr(cfg, key, None)
        if value not in (None, 1, 1.0):
            return None
    return head


def body_features(model: Any, inputs: dict, hidden: bool) -> dict[str, Any]:
    """The body's last hidden state and the head, without making logits (chunked losses)."""
    out = model.base_model(**{k: v for k, v in inputs.items() if k != "labels"},
                           output_hidden_states=hidden)
    return {"hidden_states": out.hidden_states if hidden else None, "logits": None,
            "last_hidden": out.last_hidden_state, "head": model.get_output_embeddings()}
