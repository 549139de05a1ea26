"""Plain words on the methods, shared by the task families' presets and the app's Method page.

They carry the product's founding points: what each kind of distillation does, and why.
"""

LOGIT = ("<b>Logit distillation</b>: the student learns to give the same probabilities as the "
         "teacher, not only which answer is right but how likely the teacher finds every "
         "alternative. That extra information is why distilling is cheaper than training the "
         "small model from scratch. It is the simplest method, and it needs teacher and student "
         "to share a vocabulary.")
LABELS = ("<b>True labels</b> are the ordinary lesson from the data (the real next word, or the "
          "real class). Mixing them in keeps the student anchored where the teacher is wrong.")
HIDDEN = ("<b>Intermediate-layer distillation</b>: the student's hidden layers are also pulled "
          "toward the teacher's, so it imitates how the teacher works an answer out, not only "
          "the answer. Extra guidance that helps small students; it costs a little more compute.")
TASK_SPECIFIC = ("<b>Task-specific distillation</b>: a teacher tuned for one task teaches that "
                 "task. You need a strong teacher first: if the teacher has no trained head for "
                 "your classes, KD Studio first fine-tunes it on your labelled data (the "
                 "'prepare teacher' stage, saved and reused by later runs).")
EMBEDDING = ("<b>Embedding distillation</b>: the student learns to produce the same sentence "
             "vectors as the teacher, so search and similarity give the same answers with a "
             "smaller, faster model.")
CROSS_TOKENIZER = ("<b>Cross-tokenizer distillation</b>: when the teacher and the student split "
                   "text into different tokens, their probabilities cannot be compared word for "
                   "word. This loss sorts each model's probabilities from most to least likely "
                   "and compares the sorted lists, so the two vocabularies need not match. It "
                   "teaches the student how sure the teacher is rather than which word it "
                   "prefers, so it is used beside the true next words.")


def task_specific_presets(noun: str, truth: str, per: str = "") -> tuple:
    """The three presets of a task-specific family whose teacher gives probabilities over
    the task's own answers (classes, tags): those with the true answers, those alone, and
    with the hidden layers. noun names the answers ("class"), truth the true ones
    ("labels"), per where the answers are given (" for every word,")."""
    from kdstudio.core.tasks.base import Preset

    kind = {"temperature": 2.0, "logit_loss": "forward_kl"}
    return (
        Preset("task", f"Task-specific: {noun} probabilities and true {truth}",
               f"The teacher's {noun} probabilities{per} plus the real {truth}.",
               TASK_SPECIFIC + "<br><br>" + LOGIT + "<br><br>" + LABELS,
               {"logit_weight": 1.0, "hard_label_weight": 0.5}, dict(kind)),
        Preset("logit", f"{noun.capitalize()} probabilities only",
               f"Learn only from the teacher, without the {truth}.",
               TASK_SPECIFIC + "<br><br>" + LOGIT, {"logit_weight": 1.0}, dict(kind)),
        Preset("task_hidden", "Task-specific with hidden layers",
               f"{noun.capitalize()} probabilities, true {truth} and the teacher's hidden layers.",
               TASK_SPECIFIC + "<br><br>" + HIDDEN,
               {"logit_weight": 1.0, "hard_label_weight": 0.5, "hidden_weight": 1.0}, dict(kind)),
    )

