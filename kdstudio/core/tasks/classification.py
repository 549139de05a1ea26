"""Text classifiers: task-specific distillation, with the teacher prepared when needed."""

from __future__ import annotations

from typing import Any

from kdstudio.core.tasks.base import Task


class Classification(Task):
    name = "sequence-classification"
    title = "Text classifier"
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
    examples = ("The striker scored twice in the second half.",
                "Add a pinch of salt and let the sauce simmer.",
                "The bank raised its interest rates again.")
    demo_file = "sequence-classification.toml"
    demo_intro = "a topic classifier"
    demo_menu = "&Text classifier: topics of everyday sentences"
    demo_rank = 2
    headline_metric = ("accuracy", True)
    method_defaults = {"logit_weight": 1.0, "hard_label_weight": 0.5, "temperature": 2.0}

    # -- engine hooks ---------------------------------------------------------------------------
    def forward_features(self, model: Any, inputs: dict, *, hidden: bool = False,
                         head_only: bool = False) -> dict[str, Any]:
        from kdstudio.core.tasks.base import logits_features

        return logits_features(model, inputs, hidden)

    def batch_maker(self, texts: list[str], labels: list[int] | None, **kw: Any):
        from kdstudio.core.tasks.base import text_batch_maker

        return text_batch_maker(texts, labels, **kw)

    def fit(self, teacher: Any, student: Any, teacher_tok: Any, same_vocab: bool):
        from kdstudio.core.tasks.base import Fit

        hidden = ["hidden"] if same_vocab else []
        nt, ns = teacher.config.num_labels, student.config.num_labels
        if nt != ns:
            return Fit(hidden, error=f"The teacher predicts {nt} classes and the student {ns}; "
                                     "class probabilities can only be compared over the same "
                                     "classes.")
        return Fit(["logit", "hard_label"] + hidden, nt)

    def eval_batches(self, eval_set: Any, tokenizer: Any) -> list[dict]:
        from kdstudio.core.tasks.base import text_eval_batches

        return text_eval_batches(eval_set, tokenizer)

    def teacher_metrics(self, ev: Any) -> dict[str, float]:
        import torch

        from kdstudio.core.evaluation import classification_metrics

        preds = torch.cat([o.argmax(-1) for o in ev.teacher_outputs()])
        return classification_metrics(preds, ev.labels())

    def student_metrics(self, ev: Any, student: Any) -> dict[str, float]:
        import torch

        from kdstudio.core.evaluation import classification_metrics

        s_pred = torch.cat([o.argmax(-1) for o in ev.outputs(student, ev.student_batches)])
        t_pred = torch.cat([o.argmax(-1) for o in ev.teacher_outputs()])
        m = classification_metrics(s_pred, ev.labels())
        m["agreement"] = (s_pred == t_pred).float().mean().item()
        return m

    def prepare_teacher(self, cfg: Any, teacher: Any, data: Any, ctx: Any) -> Any:
        """Fine-tune a teacher without a trained head for these classes (teacher.prepare)."""
        from kdstudio.core.events import Log, Stage
        from kdstudio.core.models import load_model
        from kdstudio.core.tasks.prepare import prepare_teacher

        mode = cfg.teacher.prepare
        if mode == "always" or (mode == "auto" and teacher.new_head):
            ctx.emit(Stage("prepare teacher", "fine-tuning the teacher on the labelled data"))
            folder = prepare_teacher(cfg, teacher, data, ctx)
            return load_model(str(folder), self, label_names=data.label_names, role="teacher")
        if teacher.new_head:
            ctx.emit(Log("The teacher has no trained head for these classes and teacher.prepare "
                         "is 'never': its predictions are random, so the student learns little.",
                         "warning"))
        return teacher

    def compare_answer(self, predictor: Any, text: str, gen: Any, top_k: int) -> Any:
        return predictor.classify(text)
