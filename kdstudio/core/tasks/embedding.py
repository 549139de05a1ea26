"""Sentence encoders: pooled sentence embeddings for search and similarity."""

from __future__ import annotations

from typing import Any

from kdstudio.core.tasks.base import Task


class Embedding(Task):
    name = "sentence-embedding"
    title = "Sentence embeddings"
    description = ("Turns each sentence into a list of numbers for search and similarity "
                   "(sentence-embedding), as sentence-transformers does.")
    auto_class = "AutoModel"
    output = "embedding"
    uses_labels = True
    compare_title = "Sentence embeddings"
    compare_hint = ("Type a sentence; the teacher and the student each find the most similar "
                    "sentences in the run's evaluation data.")
    compare_index = True
    leaves_weights_unused = True  # the pooler: mean pooling reads the last hidden state
    examples = ("Snow is forecast for the hills tonight.",
                "My laptop's battery barely lasts an hour.",
                "We missed our connecting flight in Madrid.")
    demo_file = "sentence-embedding.toml"
    demo_intro = "a sentence encoder"
    demo_menu = "&Sentence embeddings: distil MiniLM"
    demo_rank = 1  # the quickest demo, and the default
    headline_metric = ("knn_accuracy", True)
    headline_unlabelled = ("cosine_to_teacher", True)
    method_defaults = {"logit_weight": 0.0, "embedding_weight": 1.0}

    # -- engine hooks ---------------------------------------------------------------------------
    def forward_features(self, model: Any, inputs: dict, *, hidden: bool = False,
                         head_only: bool = False) -> dict[str, Any]:
        from kdstudio.core.losses import mean_pool

        out = model(**{k: v for k, v in inputs.items() if k != "labels"},
                    output_hidden_states=hidden)
        return {"hidden_states": out.hidden_states if hidden else None,
                "embedding": mean_pool(out.last_hidden_state, inputs["attention_mask"])}

    def batch_maker(self, texts: list[str], labels: list[int] | None, **kw: Any):
        from kdstudio.core.tasks.base import text_batch_maker

        return text_batch_maker(texts, labels, **kw)

    def fit(self, teacher: Any, student: Any, teacher_tok: Any, same_vocab: bool):
        from kdstudio.core.tasks.base import Fit

        from kdstudio.core.objective import terms_for

        # Pooled embeddings compare whatever the tokenizers; hidden states position by
        # position need the same tokens.
        return Fit([t.name for t in terms_for(self) if same_vocab or not t.needs_hidden])

    def eval_batches(self, eval_set: Any, tokenizer: Any) -> list[dict]:
        from kdstudio.core.tasks.base import text_eval_batches

        return text_eval_batches(eval_set, tokenizer)

    def teacher_metrics(self, ev: Any) -> dict[str, float]:
        import torch

        from kdstudio.core.evaluation import knn_accuracy

        labels = ev.labels()
        if labels is None:
            return {}
        return {"knn_accuracy": knn_accuracy(torch.cat(ev.teacher_outputs()), labels)}

    def student_metrics(self, ev: Any, student: Any) -> dict[str, float]:
        import torch

        from kdstudio.core.evaluation import embedding_metrics

        s = torch.cat(ev.outputs(student, ev.student_batches, project=ev.project))
        return embedding_metrics(s, torch.cat(ev.teacher_outputs()), ev.labels())

    def compare_answer(self, predictor: Any, text: str, gen: Any, top_k: int) -> Any:
        return predictor.nearest(text, top_k)
