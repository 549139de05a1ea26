"""Names and meanings of the metrics, without torch (the app and the CLI use them at once).

The measuring itself lives in evaluation.py.
"""

from __future__ import annotations

from typing import Any

METRIC_LABELS = {
    "perplexity": "Perplexity (lower is better)",
    "top1_agreement": "Top-1 agreement with teacher",
    "kl_to_teacher": "KL divergence to teacher",
    "entropy": "Entropy of the next-word predictions (nats)",
    "accuracy": "Accuracy",
    "macro_f1": "Macro-F1",
    "agreement": "Agreement with teacher",
    "cosine_to_teacher": "Mean cosine to teacher",
    "neighbour_agreement": "Top-1 neighbour agreement",
    "spearman": "Spearman of similarities",
    "knn_accuracy": "Nearest-neighbour topic accuracy",
    "embedding_spread": "Spread of the sentence vectors",
    "entity_f1": "Entity F1",
    "entity_precision": "Entity precision",
    "entity_recall": "Entity recall",
    "token_accuracy": "Word tag accuracy",
}

# Shown as percentages.
PERCENT_METRICS = frozenset({"top1_agreement", "accuracy", "macro_f1", "agreement",
                             "neighbour_agreement", "knn_accuracy", "entity_f1",
                             "entity_precision", "entity_recall", "token_accuracy"})

# Figures of agreement with the teacher: the teacher's own value is 1 by definition.
SELF_AGREEMENT = ("cosine_to_teacher", "neighbour_agreement", "spearman", "top1_agreement",
                  "agreement")


ABOVE_TEACHER = ("Above 100% means the student scored better than its teacher on the evaluation "
                 "texts. A good teacher is rarely beaten, so first check the teacher's own "
                 "figure: a weak teacher (one without a trained head for the task, or trained on "
                 "other data) makes any student look good.")
# Only where the task can train a plain-training baseline (objective.has_plain_loss).
ABOVE_TEACHER_BASELINE = (" The plain-training baseline (evaluation.baseline) shows what the "
                          "teacher adds.")


def format_quality(q: Any, digits: int = 1, interval: tuple[float, float] | None = None) -> str:
    """Quality retained as a percentage, with its 95% interval as ± where given; a figure
    above 100% says so after both ('111.7% ± 2.0% (above the teacher)'), never bare. '-'
    when there is none."""
    if isinstance(q, bool) or not isinstance(q, (int, float)):
        return "-"
    text = f"{q:.{digits}%}"
    above = q > 1.0 and text != f"{1:.{digits}%}"
    text += plus_minus(interval, True)
    return f"{text} (above the teacher)" if above else text


# Above 100% for a teacher that ships with KD Studio: it is trained for its demo, so a figure
# a little above 100% says the two are level, not that the teacher is weak.
BUILTIN_ABOVE = ("Above 100% means the student scored a little higher than its teacher on the "
                 "evaluation texts: on a few hundred texts, a point either way is chance, so the "
                 "student is as good as the teacher here.")


def quality_note(*values: Any, baseline: bool = True, teacher: str = "") -> str:
    """ABOVE_TEACHER when any quality-retained figure shown is above 100%, else ''. It
    recommends the plain-training baseline only with ``baseline`` (pass False for a task
    without a plain loss, where the baseline cannot run). For a built-in ``teacher`` (a
    demo's, trained for it) and figures under 103%, BUILTIN_ABOVE instead."""
    shown = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not any(v > 1.0 for v in shown):
        return ""
    if teacher and max(shown) < 1.03:
        from kdstudio.core.catalog import BUILTIN_ALIASES, BUILTIN_MODELS

        if BUILTIN_ALIASES.get(teacher, teacher) in BUILTIN_MODELS:
            return BUILTIN_ABOVE
    return ABOVE_TEACHER + (ABOVE_TEACHER_BASELINE if baseline else "")


def headline_for(task: Any, has_labels: bool) -> tuple[str, bool]:
    """The one figure of a task that the runs table and "quality retained" use:
    (name, higher is better)."""
    from kdstudio.core.tasks import get_task

    return get_task(task).headline(has_labels)


def quality_retained(metric: str, teacher: dict[str, float],
                     student: dict[str, float]) -> float | None:
    """Student quality over teacher quality (for perplexity: teacher's over student's)."""
    s = student.get(metric)
    if s is None:
        return None
    if metric == "cosine_to_teacher":
        return s  # the teacher's cosine to itself is 1
    t = teacher.get(metric)
    if t is None or s <= 0 or t <= 0:
        return None
    return t / s if metric == "perplexity" else s / t


def interval_of(intervals: Any, name: str) -> tuple[float, float] | None:
    """The 95% interval [low, high] recorded for a figure (a run's "intervals": student
    figures by name, the teacher's as "teacher.NAME"), or None: an older run has none, or a
    damaged entry."""
    iv = intervals.get(name) if isinstance(intervals, dict) else None
    if not isinstance(iv, (list, tuple)) or len(iv) != 2:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x == x for x in iv):
        return None
    return float(iv[0]), float(iv[1])


def plus_minus(interval: tuple[float, float] | None, pct: bool = False) -> str:
    """' ± half the interval's width' ('' without one): 2 significant digits, or percentage
    points to one decimal for a figure shown as a percentage."""
    if interval is None:
        return ""
    half = (interval[1] - interval[0]) / 2
    return f" ± {half:.1%}" if pct else f" ± {half:.2g}"
