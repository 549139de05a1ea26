"""Sentence encoders: pooled sentence embeddings for search and similarity."""

from __future__ import annotations

from typing import Any

from kdstudio.core.tasks.base import KeptOutputsCheck, OutputCheck, Preset, Task
from kdstudio.core.tasks.words import EMBEDDING, HIDDEN


class Embedding(Task):
    name = "sentence-embedding"
    title = "Sentence embeddings"
    answer_words = "sentence vectors"
    description = ("Turns each sentence into a list of numbers for search and similarity "
                   "(sentence-embedding), as sentence-transformers does.")
    auto_class = "AutoModel"
    output = "embedding"
    uses_labels = True
    compare_title = "Sentence embeddings"
    compare_hint = ("Type a sentence; the teacher and the student each find the most similar "
                    "sentences in the run's evaluation data.")
    compare_index = True
    compare_view = "neighbours"
    saves_sentence_transformers = True
    onnx_output = "sentence_embedding"
    export_pools = True
    projects_output = True
    leaves_weights_unused = True  # the pooler: mean pooling reads the last hidden state
    examples = ("Snow is forecast for the hills tonight.",
                "My laptop's battery barely lasts an hour.",
                "We missed our connecting flight in Madrid.")
    demo_file = "sentence-embedding.toml"
    demo_intro = "a sentence encoder"
    demo_menu = "&Sentence embeddings: distil MiniLM"
    demo_rank = 1  # the quickest demo, and the default
    headline_metric = ("knn_accuracy", True)
    presets = (
        Preset("embedding", "Imitate the sentence embeddings",
               "The student's sentence vectors are pulled onto the teacher's.",
               EMBEDDING, {"embedding_weight": 1.0}),
        Preset("embedding_hidden", "Embeddings and hidden layers",
               "Adds intermediate-layer distillation for extra guidance.",
               EMBEDDING + "<br><br>" + HIDDEN, {"embedding_weight": 1.0, "hidden_weight": 1.0}),
        Preset("hidden", "Hidden layers only",
               "Intermediate-layer distillation alone.",
               HIDDEN, {"hidden_weight": 1.0}),
    )
    headline_unlabelled = ("cosine_to_teacher", True)
    method_defaults = {"logit_weight": 0.0, "embedding_weight": 1.0}

    def selection_figure(self) -> tuple[str, bool]:
        """The mean cosine to the teacher: what the student is trained to imitate, averaged
        over every row. Topic accuracy over a few hundred rows moves by a few points between
        evaluations by chance."""
        return ("cosine_to_teacher", True)

    # -- engine hooks ---------------------------------------------------------------------------
    def forward_features(self, model: Any, inputs: dict, *, want: frozenset[str] = frozenset(),
                         head_only: bool = False) -> dict[str, Any]:
        from kdstudio.core.losses import mean_pool
        from kdstudio.core.tasks.base import model_outputs

        out, extra = model_outputs(model, inputs, want)
        return {**extra, "embedding": mean_pool(out.last_hidden_state, inputs["attention_mask"])}

    def batch_maker(self, texts: list[str], labels: list[int] | None, **kw: Any):
        from kdstudio.core.tasks.base import text_batch_maker

        return text_batch_maker(texts, labels, **kw)

    def eval_batches(self, eval_set: Any, tokenizer: Any) -> list[dict]:
        from kdstudio.core.tasks.base import text_eval_batches

        return text_eval_batches(eval_set, tokenizer)

    def teacher_metrics(self, ev: Any) -> dict[str, float]:
        import torch

        from kdstudio.core.measures import embedding_spread, knn_accuracy

        labels, emb = ev.labels(), torch.cat(ev.teacher_outputs())
        out = {"embedding_spread": embedding_spread(emb)}
        if labels is not None:
            out["knn_accuracy"] = knn_accuracy(emb, labels)
            ev.keep_rows(_rows(emb, None, labels))
        return out

    def student_metrics(self, ev: Any, student: Any) -> dict[str, float]:
        import torch

        from kdstudio.core.measures import embedding_metrics

        s = torch.cat(ev.outputs(student, ev.student_batches, project=ev.project))
        t = torch.cat(ev.teacher_outputs())
        ev.keep_rows(_rows(s, t, ev.labels()))
        return embedding_metrics(s, t, ev.labels())

    def compare_answer(self, predictor: Any, text: str, gen: Any, top_k: int) -> Any:
        return predictor.nearest(text, top_k)

    # -- behaviour questions --------------------------------------------------------------------
    def compare_verdict(self, teacher: Any, student: Any) -> str:
        same = bool(teacher.neighbours and student.neighbours
                    and teacher.neighbours[0][0] == student.neighbours[0][0])
        return (", and both found the same closest sentence." if same
                else "; their closest sentences differ.")

    def export_check_reads_teacher(self, has_labels: bool) -> bool:
        """Without labels the run's headline is the cosine to the teacher."""
        return not has_labels

    def output_check(self, labels: list[int] | None, vocab: int,
                     teacher_outputs: Any = None) -> OutputCheck:
        return _EmbeddingCheck(labels, teacher_outputs)


# The Spearman correlation's interval weighs every pair of rows in every resample: about
# 10 * rows^2 operations per resample (0.1 s at 340 rows, 1 s at 1,000), so it stops there.
SPEARMAN_ROWS = 1000


def _rows(s: Any, t: Any, labels: Any) -> dict[str, Any]:
    """The figures' parts per eval row (intervals.py): each row's cosine to the teacher,
    whether its nearest neighbour is the teacher's, whether that neighbour shares its topic
    (the neighbours themselves are found among all the rows, as for the figure)."""
    import torch.nn.functional as F

    from kdstudio.core.intervals import Mean, PairRankCorrelation
    from kdstudio.core.measures import nearest

    near = nearest(s)
    rows = {}
    if t is not None and s.shape == t.shape:
        rows["cosine_to_teacher"] = Mean(F.cosine_similarity(s, t, dim=-1))
    if t is not None:
        rows["neighbour_agreement"] = Mean((near == nearest(t)).float())
        if len(s) <= SPEARMAN_ROWS:
            def cos(e: Any) -> Any:
                e = F.normalize(e.float(), dim=-1)
                return e @ e.T
            rows["spearman"] = PairRankCorrelation.of(cos(s), cos(t))
    if labels is not None:
        rows["knn_accuracy"] = Mean((labels[near] == labels).float())
    return rows


class _EmbeddingCheck(KeptOutputsCheck):
    """The run's headline for both (kNN accuracy with labels, else the cosine to the teacher,
    else to the student), and how close the export stays to the student."""

    def __init__(self, labels: list[int] | None, teacher_outputs: Any):
        super().__init__()
        self.labels, self.teacher = labels, teacher_outputs

    def measure(self, r: Any, c: Any) -> tuple[str, float, float, dict[str, float]]:
        import torch
        import torch.nn.functional as F

        from kdstudio.core.measures import nearest

        extra = {"cosine_to_student": F.cosine_similarity(c, r, dim=-1).mean().item(),
                 "neighbour_agreement_with_student":
                     (nearest(c) == nearest(r)).float().mean().item()}
        if self.labels:
            gold = torch.tensor(self.labels)
            return ("knn_accuracy", (gold[nearest(c)] == gold).float().mean().item(),
                    (gold[nearest(r)] == gold).float().mean().item(), extra)
        if self.teacher is not None:
            return ("cosine_to_teacher",
                    F.cosine_similarity(c, self.teacher, dim=-1).mean().item(),
                    F.cosine_similarity(r, self.teacher, dim=-1).mean().item(), extra)
        return "cosine_to_student", extra["cosine_to_student"], 1.0, extra
