"""Text classifiers: task-specific distillation, with the teacher prepared when needed."""

from __future__ import annotations

from typing import Any

from kdstudio.core.tasks.base import KeptOutputsCheck, OutputCheck, Task
from kdstudio.core.tasks.words import task_specific_presets


class Classification(Task):
    name = "sequence-classification"
    title = "Text classifier"
    answer_words = "class probabilities"
    truth_words = "true labels"
    description = ("Sorts texts into your categories (sequence-classification). Task-specific "
                   "distillation: a teacher tuned for this task teaches exactly this task.")
    auto_class = "AutoModelForSequenceClassification"
    output = "logits"
    needs_labels = True
    uses_labels = True
    has_task_head = True
    compare_title = "Classification"
    compare_hint = ("Type a sentence; the teacher and the student each say which class it "
                    "belongs to, and how sure they are.")
    compare_view = "probabilities"
    examples = ("The striker scored twice in the second half.",
                "Add a pinch of salt and let the sauce simmer.",
                "The bank raised its interest rates again.")
    demo_file = "sequence-classification.toml"
    demo_intro = "a topic classifier"
    demo_menu = "&Text classifier: topics of everyday sentences"
    demo_rank = 2
    headline_metric = ("accuracy", True)
    presets = task_specific_presets("class", "labels")
    method_defaults = {"logit_weight": 1.0, "hard_label_weight": 0.5, "temperature": 2.0}

    def selection_figure(self) -> tuple[str, bool]:
        """The KL divergence to the teacher's class probabilities: smooth, where accuracy on a
        few hundred rows moves in steps of one row."""
        return ("kl_to_teacher", False)

    # -- engine hooks ---------------------------------------------------------------------------
    def forward_features(self, model: Any, inputs: dict, *, want: frozenset[str] = frozenset(),
                         head_only: bool = False) -> dict[str, Any]:
        from kdstudio.core.tasks.base import logits_features

        return logits_features(model, inputs, want)

    def batch_maker(self, texts: list[str], labels: list[int] | None, **kw: Any):
        from kdstudio.core.tasks.base import text_batch_maker

        return text_batch_maker(texts, labels, **kw)

    def fit(self, teacher: Any, student: Any, teacher_tok: Any, same_vocab: bool):
        from kdstudio.core.tasks.base import same_answers_fit

        return same_answers_fit(teacher, student, "class", "classes")

    def eval_batches(self, eval_set: Any, tokenizer: Any) -> list[dict]:
        from kdstudio.core.tasks.base import text_eval_batches

        return text_eval_batches(eval_set, tokenizer)

    def teacher_metrics(self, ev: Any) -> dict[str, float]:
        import torch

        from kdstudio.core.measures import classification_metrics

        preds = torch.cat([o.argmax(-1) for o in ev.teacher_outputs()])
        _keep_rows(ev, preds, ev.labels())
        return classification_metrics(preds, ev.labels())

    def student_metrics(self, ev: Any, student: Any) -> dict[str, float]:
        import torch

        from kdstudio.core.measures import class_kl, classification_metrics

        s_out, t_out = torch.cat(ev.outputs(student, ev.student_batches)), torch.cat(ev.teacher_outputs())
        s_pred, t_pred = s_out.argmax(-1), t_out.argmax(-1)
        m = classification_metrics(s_pred, ev.labels())
        m["agreement"] = (s_pred == t_pred).float().mean().item()
        kl = class_kl(s_out, t_out)
        m["kl_to_teacher"] = kl.mean().item()
        _keep_rows(ev, s_pred, ev.labels(), agreement=(s_pred == t_pred).float(), kl_to_teacher=kl)
        return m

    def compare_answer(self, predictor: Any, text: str, gen: Any, top_k: int) -> Any:
        return predictor.classify(text)

    # -- behaviour questions --------------------------------------------------------------------
    def compare_verdict(self, teacher: Any, student: Any) -> str:
        tt = teacher.probabilities[0][0] if teacher.probabilities else "?"
        st = student.probabilities[0][0] if student.probabilities else "?"
        return (f", and both chose “{tt}”." if tt == st
                else f"; the teacher chose “{tt}”, the student “{st}”.")

    def output_check(self, labels: list[int] | None, vocab: int,
                     teacher_outputs: Any = None) -> OutputCheck:
        return _AccuracyCheck(labels)


def _keep_rows(ev: Any, pred: Any, labels: Any, **more: Any) -> None:
    """The figures' parts per eval row, for their intervals (intervals.py)."""
    from kdstudio.core.intervals import MacroF1, Mean

    rows = {"accuracy": Mean((pred == labels).float()), "macro_f1": MacroF1(pred, labels)}
    ev.keep_rows(rows | {k: Mean(v) for k, v in more.items()})


class _AccuracyCheck(KeptOutputsCheck):
    """Accuracy of both on the labels, and how often the export picks the student's class."""

    def __init__(self, labels: list[int] | None):
        super().__init__()
        self.labels = labels

    def measure(self, r: Any, c: Any) -> tuple[str, float, float, dict[str, float]]:
        import torch

        gold = torch.tensor(self.labels)
        extra = {"agreement_with_student": (r.argmax(-1) == c.argmax(-1)).float().mean().item()}
        return ("accuracy", (c.argmax(-1) == gold).float().mean().item(),
                (r.argmax(-1) == gold).float().mean().item(), extra)
