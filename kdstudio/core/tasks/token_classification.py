"""Token classification (named-entity tagging): a tag for every word, distilled word by word.

The data are rows of words with one tag each (tasks/word_tags.py reads them); the first
sub-word token of each word carries its tag, the rest are not scored (-100). Logit
distillation compares the two models' tag probabilities at those first tokens, the hard-label
loss their tags; the headline figure is entity F1 by seqeval's definition.
"""

from __future__ import annotations

from typing import Any

from kdstudio.core.tasks.base import Examples, OutputCheck, Task
from kdstudio.core.tasks.words import task_specific_presets

# The model's own inputs: an eval batch also holds the word tags ("labels").
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TokenClassification(Task):
    name = "token-classification"
    title = "Entity tagger"
    answer_words = "tag probabilities for every word"
    truth_words = "true tags"
    description = ("Tags the words of a text: places, times, people, food... "
                   "(token-classification, named-entity recognition). Task-specific "
                   "distillation: the student learns the teacher's tag for every word.")
    auto_class = "AutoModelForTokenClassification"
    output = "logits"
    needs_labels = True
    uses_labels = True
    has_task_head = True
    # A tag per token: comparing the two models' tags position by position needs the same
    # tokens (the logit and hidden terms then need one tokenizer).
    per_position_output = True
    compare_title = "Entity tagging"
    compare_hint = ("Type a sentence; the teacher and the student each tag its words "
                    "(places, times, people, food), shown on your words.")
    compare_view = "tags"
    examples = ("We flew to Lisbon on Friday and had grilled sardines by the harbour.",
                "My sister Priya starts her new job at the hospital in September.",
                "The chef served pasta with fresh basil at the cafe on Elm Street.")
    demo_file = "token-classification.toml"
    demo_intro = "an entity tagger"
    demo_menu = "&Entity tagger: places, times, people and food"
    demo_rank = 4
    headline_metric = ("entity_f1", True)
    presets = task_specific_presets("tag", "tags", " for every word,")
    method_defaults = {"logit_weight": 1.0, "hard_label_weight": 0.5, "temperature": 2.0}
    data_defaults = {"dataset": "builtin:everyday-entities", "max_length": 64}

    # -- data -----------------------------------------------------------------------------------
    def read_examples(self, train: Any, evl: Any, cfg: Any, source: str) -> Examples:
        from kdstudio.core.tasks.word_tags import read_word_tags

        return Examples(**read_word_tags(train, evl, cfg, source))

    def selection_figure(self) -> tuple[str, bool]:
        """The share of words tagged as the teacher tags them: over every word, where entity
        F1 over a few hundred sentences moves by whole entities."""
        return ("agreement", True)

    # -- engine hooks ---------------------------------------------------------------------------
    def forward_features(self, model: Any, inputs: dict, *, want: frozenset[str] = frozenset(),
                         head_only: bool = False) -> dict[str, Any]:
        from kdstudio.core.tasks.base import logits_features

        return logits_features(model, {k: v for k, v in inputs.items() if k in _INPUTS}, want)

    def batch_maker(self, texts: list[str], labels: list[list[int]] | None, *, student_tok: Any,
                    teacher_tok: Any, same_tok: bool, max_length: int, device: Any, **_: Any):
        """(number of rows, row indices -> Batch): each model reads the words with its own
        tokenizer; labels are the student's per-token tags (-100 off the first sub-tokens)."""
        from kdstudio.core.batch import Batch
        from kdstudio.core.tasks.word_tags import encode_words, words_of

        def make(idx: list[int]) -> Batch:
            words = [words_of(texts[i]) for i in idx]
            tags = [labels[i] for i in idx] if labels is not None else None
            enc, _ = encode_words(student_tok, words, max_length, tags)
            y = enc.pop("labels", None)
            s = {k: v.to(device) for k, v in enc.items()}
            t = s if same_tok else {k: v.to(device) for k, v in
                                    encode_words(teacher_tok, words, max_length)[0].items()}
            return Batch(s, t, y.to(device) if y is not None else None,
                         int(s["attention_mask"].sum()), len(idx))
        return len(texts), make

    def eval_batches(self, eval_set: Any, tokenizer: Any) -> list[dict]:
        from kdstudio.core.tasks.word_tags import encode_words, words_of

        out, bs = [], eval_set.batch_size
        for i in range(0, len(eval_set.texts), bs):
            words = [words_of(t) for t in eval_set.texts[i:i + bs]]
            tags = eval_set.labels[i:i + bs] if eval_set.labels else None
            out.append(encode_words(tokenizer, words, eval_set.max_length, tags)[0])
        return out

    def fit(self, teacher: Any, student: Any, teacher_tok: Any, same_vocab: bool):
        from kdstudio.core.tasks.base import same_answers_fit

        return same_answers_fit(teacher, student, "tag", "tags")

    def paired_logits(self, x: Any) -> tuple[Any, Any, Any]:
        """Both models' tag logits at the tagged positions (each word's first token)."""
        return x.s["logits"], x.t["logits"], x.batch.labels != -100

    def teacher_metrics(self, ev: Any) -> dict[str, float]:
        from kdstudio.core.measures import tagging_metrics

        gold, pred = _word_tags(ev.teacher_outputs(), ev.teacher_batches)
        names = tag_names(ev.teacher)
        gold, pred = _named(gold, names), _named(pred, names)
        ev.keep_rows(_rows(gold, pred))
        return tagging_metrics(gold, pred)

    def student_metrics(self, ev: Any, student: Any) -> dict[str, float]:
        from kdstudio.core.measures import tagging_metrics

        names = tag_names(student)
        gold, pred = _word_tags(ev.outputs(student, ev.student_batches), ev.student_batches)
        _, t_pred = _word_tags(ev.teacher_outputs(), ev.teacher_batches)
        gold_n, pred_n = _named(gold, names), _named(pred, names)
        m = tagging_metrics(gold_n, pred_n)
        # Different tokenizers may cut a long row at different words: the common words count.
        same, common = [], []
        for s_row, t_row in zip(pred, t_pred):
            n = min(len(s_row), len(t_row))
            same.append(sum(a == b for a, b in zip(s_row[:n], t_row[:n])))
            common.append(n)
        m["agreement"] = sum(same) / max(sum(common), 1)
        ev.keep_rows(_rows(gold_n, pred_n, agreement=(same, common)))
        return m

    def compare_answer(self, predictor: Any, text: str, gen: Any, top_k: int) -> Any:
        from kdstudio.core.tasks.word_tags import split_words

        return predictor.tag(split_words(text))

    # -- behaviour questions --------------------------------------------------------------------
    def compare_verdict(self, teacher: Any, student: Any) -> str:
        t = [tag for _, tag, _ in teacher.tags]
        s = [tag for _, tag, _ in student.tags]
        differ = sum(a != b for a, b in zip(t, s)) + abs(len(t) - len(s))
        if not differ:
            return ", and both tagged every word alike."
        return f"; they tag {differ} of {max(len(t), len(s))} words differently."

    def output_check(self, labels: list[int] | None, vocab: int,
                     teacher_outputs: Any = None) -> OutputCheck:
        return _TagCheck()


def tag_names(model: Any) -> list[str]:
    """The model's tag names, by id (config.id2label)."""
    cfg = model.config
    id2label = {int(k): str(v) for k, v in (getattr(cfg, "id2label", None) or {}).items()}
    return [id2label.get(i, str(i)) for i in range(cfg.num_labels)]


def _word_tags(outputs: list[Any], batches: list[dict]) -> tuple[list[list[int]], list[list[int]]]:
    """(true tags, predicted tags) of every row's scored words, in order."""
    gold, pred = [], []
    for logits, b in zip(outputs, batches):
        labels = b["labels"]
        guess = logits.argmax(-1)
        for r in range(labels.shape[0]):
            keep = labels[r] != -100
            gold.append(labels[r][keep].tolist())
            pred.append(guess[r][keep].tolist())
    return gold, pred


def _rows(gold: list[list[str]], pred: list[list[str]], **more: Any) -> dict[str, Any]:
    """The figures' parts per sentence, for their intervals (intervals.py): its entities right,
    predicted and true, whose sums give seqeval's figures (entity F1 is 2 right over predicted
    plus true), and its words right over its words; ``more``: (parts, words) per sentence."""
    import torch
    from seqeval.metrics.sequence_labeling import get_entities

    from kdstudio.core.intervals import Ratio

    counts = []
    for g, p in zip(gold, pred):
        # seqeval reads all sentences as one with an "O" between: the same entities as each
        # sentence read alone.
        true, found = set(get_entities(g)), set(get_entities(p))
        counts.append((len(true & found), len(found), len(true),
                       sum(a == b for a, b in zip(g, p)), len(g)))
    c = torch.tensor(counts, dtype=torch.float64).reshape(-1, 5)
    right, found, true, words_right, words = c.unbind(1)
    rows = {"entity_f1": Ratio(2 * right, found + true), "entity_precision": Ratio(right, found),
            "entity_recall": Ratio(right, true), "token_accuracy": Ratio(words_right, words)}
    for name, (num, den) in more.items():
        rows[name] = Ratio(torch.tensor(num, dtype=torch.float64),
                           torch.tensor(den, dtype=torch.float64))
    return rows


def _named(rows: list[list[int]], names: list[str]) -> list[list[str]]:
    from kdstudio.core.tasks.word_tags import scheme_tags

    scheme = scheme_tags(names)
    return [[scheme[i] if 0 <= i < len(scheme) else "O" for i in row] for row in rows]


class _TagCheck(OutputCheck):
    """Entity F1 of the export and of the PyTorch student on the eval rows' tags, and how
    often the export tags a word as the student does."""

    def __init__(self) -> None:
        self.gold: list[list[int]] = []
        self.ref: list[list[int]] = []
        self.cand: list[list[int]] = []

    def add(self, batch: dict, reference: Any, candidate: Any) -> float:
        keep = batch["attention_mask"].bool()
        gold, ref = _word_tags([reference], [batch])
        _, cand = _word_tags([candidate], [batch])
        self.gold += gold
        self.ref += ref
        self.cand += cand
        return (reference - candidate).abs()[keep].max().item()

    def result(self) -> tuple[str, float, float, dict[str, float]]:
        from kdstudio.core.measures import tagging_metrics

        # The tag names (OutputCheck.label_names, from the student's config); without them
        # the ids stand as IO tags, 0 outside.
        names = self.label_names or [str(i) for i in range(1 + max(
            (t for row in self.gold + self.ref + self.cand for t in row), default=0))]
        gold = _named(self.gold, names)
        c = tagging_metrics(gold, _named(self.cand, names))
        r = tagging_metrics(gold, _named(self.ref, names))
        words = sum(len(row) for row in self.ref)
        same = sum(a == b for x, y in zip(self.ref, self.cand) for a, b in zip(x, y))
        return "entity_f1", c["entity_f1"], r["entity_f1"], {
            "token_accuracy": c["token_accuracy"], "agreement_with_student": same / max(words, 1)}
