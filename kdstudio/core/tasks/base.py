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
    """How a teacher and a student fit together for a task: the size of what is compared
    (vocabulary or classes), notes, or why their outputs cannot be compared (error). Which
    loss terms work then follows from what each term needs (objective.working_terms)."""

    vocab: int = 0
    notes: list[str] = field(default_factory=list)
    error: str = ""
    also_works: str = ""  # methods beyond the loss terms that still work, in words


@dataclass
class Examples:
    """A data set's rows as a task family reads them (Task.read_examples): the texts and
    labels of the training and eval splits, the label names and the columns read."""

    train_texts: list[str]
    train_labels: list[Any] | None
    eval_texts: list[str]
    eval_labels: list[Any] | None
    label_names: list[str] | None
    text_column: str
    label_column: str | None


class Task:
    """One task family. Subclasses fill the class attributes and override the hooks."""

    name: ClassVar[str]               # the config value, e.g. "causal-lm"
    title: ClassVar[str]              # short words for people, e.g. "Language model"
    description: ClassVar[str]        # one plain sentence on what such a model does
    # What the teacher gives the student to copy, and the data's own right answers, in
    # words ("class probabilities", "true labels"); "" where the data holds none.
    answer_words: ClassVar[str] = "answers"
    truth_words: ClassVar[str] = ""
    auto_class: ClassVar[str]         # the transformers Auto class that loads it
    output: ClassVar[str]             # "logits" or "embedding": what forward_features returns
    generative: ClassVar[bool] = False   # writes text: generation, perplexity, on-policy
    needs_labels: ClassVar[bool] = False  # the data must have a label column
    uses_labels: ClassVar[bool] = False   # a label column is read when present
    packs: ClassVar[bool] = False         # data.pack (join texts into full blocks) applies
    has_task_head: ClassVar[bool] = False  # a head per class that may need training first
    # The output holds one answer per token (a language model's next-token logits), so
    # comparing the two models' outputs needs the same tokens (term.Needs.needs_same_tokens).
    per_position_output: ClassVar[bool] = False
    # The output is a vector of the model's width (a pooled embedding): a narrower student's
    # is mapped to the teacher's width by a learned projection before they are compared.
    projects_output: ClassVar[bool] = False
    compare_title: ClassVar[str] = ""
    compare_hint: ClassVar[str] = ""
    # Compare answers with the nearest of the run's evaluation texts, so both models embed
    # them first (an index).
    compare_index: ClassVar[bool] = False
    # The model has weights its task never reads (a sentence encoder's pooler): DDP must
    # then look for them each step (find_unused_parameters), or it waits for their gradients.
    leaves_weights_unused: ClassVar[bool] = False
    # -- behaviour the rest of the engine and the app ask about (never the flags above) ------
    # The model writes text: the [generation] settings and learning from generated text
    # (sequence-level, on-policy) apply, on the Method page and in Compare.
    generation_applies: ClassVar[bool] = False
    # Compare can show the per-token view (each token's probability under both models).
    shows_token_view: ClassVar[bool] = False
    # The teacher cache can hold the teacher's answers (top-k next-token log-probabilities);
    # other families' teachers answer cheaply enough to run live.
    caches_teacher: ClassVar[bool] = False
    # The output head scores the whole vocabulary at every position: the planner counts its
    # compute per token and its (positions x vocabulary) logits in memory.
    scores_vocabulary: ClassVar[bool] = False
    # The head terms can run chunk by chunk over the output head (forward_features with
    # head_only gives the body's last hidden state): training.logit_chunk applies.
    chunks_head: ClassVar[bool] = False
    # The endings of the architectures (config.json "architectures") that hold this family's
    # trained head; a teacher without one is refused, as is one whose checkpoint lacks the
    # head's weights. Empty: not checked (a task head is prepared, or there is none).
    trained_head_classes: ClassVar[tuple[str, ...]] = ()
    untrained_head_hint: ClassVar[str] = "Choose a teacher trained for this task."
    # The student is saved with a sentence-transformers config beside its weights.
    saves_sentence_transformers: ClassVar[bool] = False
    # How Compare shows one model's answer: "text" (its one-line text), "continuation" (the
    # prompt and the text written after it), "probabilities" (class bars), "neighbours"
    # (the closest evaluation sentences) or "tags" (each word's tag, on the input's words).
    compare_view: ClassVar[str] = "text"
    # The exported ONNX graph's output name, and whether the graph mean-pools the last
    # hidden state (a sentence embedding) rather than giving the model's logits.
    onnx_output: ClassVar[str] = "logits"
    export_pools: ClassVar[bool] = False
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

    def selection_figure(self) -> tuple[str, bool]:
        """The figure that chooses the best student among a run's evaluations on the
        validation rows (training.keep = "best"): (metric name, higher is better). A family
        names a smooth figure measured over every row, which moves with what distillation
        does; here the headline, for a family that names none."""
        return self.headline_metric

    def validate(self, cfg: "RunConfig") -> None:
        """Rules of this task beyond the generic ones; raise ConfigError naming the key."""

    # -- engine hooks (torch imported when called) -----------------------------------------------
    def forward_features(self, model: Any, inputs: dict, *, want: frozenset[str] = frozenset(),
                         head_only: bool = False) -> dict[str, Any]:
        """One forward pass: the task's output under its key ("logits" or "embedding"), and
        the extra features the loss terms ask for (want: "hidden_states", "attentions";
        None when not asked)."""
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
        from kdstudio.core.batch import encode

        texts = sorted(eval_set.texts, key=len)
        return dict(encode(tokenizer, [texts[len(texts) // 2]], eval_set.max_length))

    def fit(self, teacher: Any, student: Any, teacher_tok: Any, same_vocab: bool) -> Fit:
        """How these two models' outputs compare: their size, notes, or why they cannot."""
        return Fit()

    def paired_logits(self, x: Any) -> tuple[Any, Any, Any]:
        """(student logits, teacher logits, keep-mask or None) that logit distillation
        compares, from a term.TermInputs."""
        return x.s["logits"], x.t["logits"], None

    def labelled_logits(self, x: Any) -> tuple[Any, Any]:
        """(student logits, labels) that the hard-label loss compares (-100: ignored)."""
        return x.s["logits"], x.batch.labels

    def read_examples(self, train: Any, evl: Any, cfg: Any, source: str) -> Examples | None:
        """The family's own reading of the rows (train and eval: `datasets` splits; cfg: a
        DataConfig), or None for the data loader's: one text and one label per row."""
        return None

    def compare_answer(self, predictor: Any, text: str, gen: Any, top_k: int) -> Any:
        """One model's answer to one input on the Compare page (a compare.ModelAnswer): the
        family picks one of the predictor's kinds of answer (generate, classify, nearest)."""
        raise NotImplementedError

    # -- behaviour questions (the rest of the engine and the app ask these) --------------------
    @property
    def gives_logits(self) -> bool:
        """The output is logits (over classes or tokens): the logit and hard-label terms,
        the temperature and the logit loss apply."""
        return self.output == "logits"

    @property
    def head_words(self) -> str:
        """The head a teacher must hold, in words: '... without a trained <head_words> head'."""
        return self.name

    def output_of(self, features: dict[str, Any]) -> Any:
        """The task's output (logits or embedding) from forward_features' result."""
        return features[self.output]

    def shows_setting(self, section: str, name: str) -> bool:
        """Whether a config setting ([section] name) means anything for this family, so the
        Method page shows its control: the logit terms' settings for logits, the embedding
        loss's for embeddings, preparing the teacher for a task head, the teacher cache for a
        family whose answers it holds. Other settings always apply."""
        key = (section, name)
        if key in LOGIT_SETTINGS:
            return self.gives_logits
        if key in EMBEDDING_SETTINGS:
            return self.output == "embedding"
        if key in PREPARE_SETTINGS:
            return self.has_task_head
        if key in CACHE_SETTINGS:
            return self.caches_teacher
        return True

    def compare_verdict(self, teacher: Any, student: Any) -> str:
        """How the two models' answers (compare.ModelAnswer) differ, as the end of the
        sentence that begins with their speed ('Both models answered' + this)."""
        same = teacher.text.strip() == student.text.strip()
        return ", and both gave the same answer." if same else "; their answers differ."

    def export_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of the exported model's forward call."""
        return {}

    def export_batch_size(self, batch_size: int, model: Any, max_length: int,
                          max_bytes: int) -> int:
        """The batch size an export is checked with, so one batch's outputs fit max_bytes."""
        return batch_size

    def export_check_reads_teacher(self, has_labels: bool) -> bool:
        """Whether checking an export compares its outputs with the teacher's (loaded then)."""
        return False

    def output_check(self, labels: list[int] | None, vocab: int,
                     teacher_outputs: Any = None) -> "OutputCheck":
        """How an export is checked against the PyTorch student: an OutputCheck fed batch by
        batch. labels: the eval rows' labels (or None); vocab: the tokenizer's size;
        teacher_outputs: the teacher's outputs on the rows (export_check_reads_teacher)."""
        raise NotImplementedError(f"An export of a {self.name} model cannot be checked yet.")


# Config settings (section, field) that belong to one kind of output or teacher handling.
LOGIT_SETTINGS = frozenset({("method", "temperature"), ("method", "logit_loss"),
                            ("method", "logit_weight"), ("method", "hard_label_weight"),
                            ("method", "beta"), ("method", "alpha")})
EMBEDDING_SETTINGS = frozenset({("method", "embedding_weight"), ("method", "embedding_loss")})
PREPARE_SETTINGS = frozenset({("teacher", "prepare"), ("teacher", "prepare_epochs"),
                              ("teacher", "prepare_learning_rate")})
CACHE_SETTINGS = frozenset({("teacher", "cache"), ("teacher", "cache_k"),
                            ("teacher", "cache_readers")})


class OutputCheck:
    """Checks an export's outputs against the PyTorch student's, batch by batch (the export's
    check): add() takes a batch and both outputs (reference: the student's, candidate: the
    export's) and returns their largest absolute difference there; result() gives (metric,
    the export's value, the student's value, extra figures)."""

    # The model's class names by id (config.id2label), set by the export before the first
    # batch: a check that reads tags by name (entity spans) needs them.
    label_names: list[str] = []

    def add(self, batch: dict, reference: Any, candidate: Any) -> float:
        raise NotImplementedError

    def result(self) -> tuple[str, float, float, dict[str, float]]:
        raise NotImplementedError


class KeptOutputsCheck(OutputCheck):
    """Keeps every batch's (small) outputs and measures them all at the end (measure)."""

    def __init__(self) -> None:
        self.reference: list[Any] = []
        self.candidate: list[Any] = []

    def add(self, batch: dict, reference: Any, candidate: Any) -> float:
        self.reference.append(reference)
        self.candidate.append(candidate)
        return (reference - candidate).abs().max().item()

    def result(self) -> tuple[str, float, float, dict[str, float]]:
        import torch

        return self.measure(torch.cat(self.reference), torch.cat(self.candidate))

    def measure(self, r: Any, c: Any) -> tuple[str, float, float, dict[str, float]]:
        raise NotImplementedError


def same_answers_fit(teacher: Any, student: Any, one: str, many: str) -> Fit:
    """The Fit of two models with a task head over their own answers (classes, tags): their
    probabilities compare only over the same answers. one / many: "class" / "classes"."""
    nt, ns = teacher.config.num_labels, student.config.num_labels
    if nt != ns:
        return Fit(error=f"The teacher predicts {nt} {many} and the student {ns}; {one} "
                         f"probabilities can only be compared over the same {many}.")
    return Fit(nt)


def model_outputs(model: Any, inputs: dict, want: frozenset[str]) -> tuple[Any, dict[str, Any]]:
    """The model's forward output, and the extra features asked for (want): every layer's
    hidden states and attention maps, each None when not asked."""
    hidden, attentions = "hidden_states" in want, "attentions" in want
    kw = {"output_hidden_states": hidden}
    if attentions:
        kw["output_attentions"] = True
    out = model(**{k: v for k, v in inputs.items() if k != "labels"}, **kw)
    return out, {"hidden_states": out.hidden_states if hidden else None,
                 "attentions": out.attentions if attentions else None}


def logits_features(model: Any, inputs: dict, want: frozenset[str]) -> dict[str, Any]:
    """One forward pass of a model with an output head: its logits (and what want asks)."""
    out, extra = model_outputs(model, inputs, want)
    return {**extra, "logits": out.logits}


def text_batch_maker(texts: list[str], labels: list[int] | None, *, student_tok: Any,
                     teacher_tok: Any, same_tok: bool, max_length: int, device: Any, **_: Any):
    """(number of items, item indices -> Batch) for tasks that read one text per example."""
    import torch

    from kdstudio.core.batch import encode
    from kdstudio.core.batch import Batch

    def make(idx: list[int]) -> Batch:
        chunk = [texts[i] for i in idx]
        s = {k: v.to(device) for k, v in encode(student_tok, chunk, max_length).items()}
        t = s if same_tok else {k: v.to(device) for k, v in encode(teacher_tok, chunk, max_length).items()}
        y = torch.tensor([labels[i] for i in idx], device=device) if labels is not None else None
        return Batch(s, t, y, int(s["attention_mask"].sum()), len(idx))
    return len(texts), make


def text_eval_batches(eval_set: Any, tokenizer: Any) -> list[dict]:
    import torch

    from kdstudio.core.batch import encode

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


def body_features(model: Any, inputs: dict, want: frozenset[str]) -> dict[str, Any]:
    """The body's last hidden state and the head, without making logits (chunked losses)."""
    out, extra = model_outputs(model.base_model, inputs, want)
    return {**extra, "logits": None, "last_hidden": out.last_hidden_state,
            "head": model.get_output_embeddings()}
