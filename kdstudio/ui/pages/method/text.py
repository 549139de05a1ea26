"""The Method page's words: method presets and plain-language explanations.

Presets set the loss weights (and the temperature and logit loss where they matter); a
config whose weights match no preset shows as "Custom". The explanations carry the product's
founding points: what each kind of distillation does, what the temperature and the weights
trade off, and the cautions (a strong teacher first; the student loses some quality).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdstudio.core.tasks import CAUSAL_LM, CLASSIFICATION, Task, get_task
from kdstudio.core.tasks import EMBEDDING as EMBEDDING_TASK

WEIGHTS = ("logit_weight", "hard_label_weight", "hidden_weight", "embedding_weight",
           "cross_tokenizer_weight")

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
SEQUENCE_LEVEL = ("<b>Sequence-level distillation</b>: the teacher first writes its own "
                  "continuations of the training texts, and the student then trains on the "
                  "teacher's own texts instead of the originals. It works even when the "
                  "two models use different tokenizers. It costs one generation pass with the "
                  "teacher before training starts (a later run can reuse the texts).")
ON_POLICY = ("<b>On-policy distillation</b>: the student writes its own continuations and the "
             "teacher scores every word of them, so the student learns from its own mistakes "
             "instead of only from texts it would never have written. The share (lambda) says "
             "how many batches do this: 0 learns only from the data, 1 only from the student's "
             "own texts. Generating costs time on each of those batches.")
GENERATION = ("How the continuations are written: the first tokens of each text are the "
              "prompt; the temperature and top-p set how freely words are sampled (0 always "
              "picks the likeliest word).")
BASELINE = ("<b>Compare with plain training</b>: also train the very same student for the same "
            "number of steps on the ordinary loss alone, without the teacher. The results then "
            "show what the teacher adds over plain training, not only how far the student got. "
            "It doubles the training time.")
WHY = ("Why distill at all: the student is smaller, so it needs less memory and compute. It "
       "answers faster and more cheaply, and runs on a local GPU, on-premises hardware, phones "
       "and embedded devices instead of large cloud machines.")
CAUTION = ("The student always loses some quality; how much, and whether it is worth the "
           "savings, is what the Compare page measures.")

TEMPERATURE = ("Softens the teacher's probabilities before the student copies them. At 1 they "
               "are used as they are; higher values (2 to 4) flatten them, so the student also "
               "sees how likely the teacher finds the wrong answers, which is much of what it "
               "has to teach. Too high and every answer looks alike.")
WEIGHTS_TRADE = ("Each weight says how much one lesson counts in the student's loss. More weight "
                 "on the teacher's probabilities copies the teacher more closely (its mistakes "
                 "too); more on the true labels keeps the student closer to the data; hidden "
                 "layers add guidance from inside the teacher. Only the ratios matter much; a "
                 "weight of 0 switches that lesson off.")
NO_LOGITS = ("Sentence encoders output vectors, not probabilities, so the temperature and the "
             "logit loss do not apply to this task.")

LOGIT_LOSS_TEXT = {
    "forward_kl": "Forward KL: cover everything the teacher finds likely (the standard)",
    "reverse_kl": "Reverse KL: focus on the teacher's most likely answers",
    "jsd": "Jensen-Shannon: a balance of the two (set by beta)",
    "skew_kl": "Skew KL: forward KL, steadier early in training (set by alpha)",
    "skew_reverse_kl": "Skew reverse KL: reverse KL, steadier (set by alpha)",
}
HIDDEN_LOSS_TEXT = {"mse": "Mean squared error (match the values)",
                    "cosine": "Cosine (match the direction only)"}
EMBEDDING_LOSS_TEXT = {"mse": "Mean squared error", "cosine": "Cosine",
                       "mse+cosine": "Both: mean squared error plus cosine"}
DTYPE_TEXT = {"auto": "Automatic (half precision on a GPU, full on the CPU)",
              "float32": "float32 (full precision)", "bfloat16": "bfloat16 (half the memory)",
              "float16": "float16 (half the memory)",
              "int8": "int8 (a quarter of the memory; CUDA GPU with bitsandbytes)"}
CACHE_TEXT = {"auto": "Read a cache if one exists (sweeps write one)",
              "always": "Always: write one teacher pass to disk, then read it",
              "never": "Never: run the teacher at every step"}
PREPARE_TEXT = {"auto": "When it has no trained head for the classes",
                "always": "Always fine-tune it first", "never": "Never (use it as it is)"}


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    summary: str
    explanation: str
    weights: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)  # temperature, logit_loss

    def values(self) -> dict[str, Any]:
        """Every weight (those not named are 0) plus the extra settings."""
        return {**{w: 0.0 for w in WEIGHTS}, **self.weights, **self.extra}

    def matches(self, method: Any) -> bool:
        return all(abs(getattr(method, w) - v) < 1e-9 for w, v in self.values().items()
                   if w in WEIGHTS)


# Each task family's presets; a family without any shows only custom weights.
PRESETS: dict[Task, list[Preset]] = {
    CAUSAL_LM: [
        Preset("logit", "Imitate the teacher's probabilities",
               "Logit distillation: the simplest, and usually the best start.",
               LOGIT, {"logit_weight": 1.0}, {"temperature": 1.0, "logit_loss": "forward_kl"}),
        Preset("logit_labels", "Probabilities and the true next words",
               "Logit distillation mixed with the ordinary next-word loss.",
               LOGIT + "<br><br>" + LABELS, {"logit_weight": 1.0, "hard_label_weight": 0.5},
               {"temperature": 1.0, "logit_loss": "forward_kl"}),
        Preset("logit_hidden", "Probabilities and hidden layers",
               "Adds intermediate-layer distillation: more guidance for small students.",
               LOGIT + "<br><br>" + HIDDEN, {"logit_weight": 1.0, "hidden_weight": 1.0},
               {"temperature": 1.0, "logit_loss": "forward_kl"}),
        Preset("cross_tokenizer", "A teacher with a different vocabulary",
               "Cross-tokenizer distillation with the true next words.",
               CROSS_TOKENIZER + "<br><br>" + LABELS,
               {"cross_tokenizer_weight": 1.0, "hard_label_weight": 1.0},
               {"temperature": 1.0}),
    ],
    CLASSIFICATION: [
        Preset("task", "Task-specific: class probabilities and true labels",
               "The teacher's class probabilities plus the real labels.",
               TASK_SPECIFIC + "<br><br>" + LOGIT + "<br><br>" + LABELS,
               {"logit_weight": 1.0, "hard_label_weight": 0.5},
               {"temperature": 2.0, "logit_loss": "forward_kl"}),
        Preset("logit", "Class probabilities only",
               "Learn only from the teacher, without the labels.",
               TASK_SPECIFIC + "<br><br>" + LOGIT, {"logit_weight": 1.0},
               {"temperature": 2.0, "logit_loss": "forward_kl"}),
        Preset("task_hidden", "Task-specific with hidden layers",
               "Class probabilities, true labels and the teacher's hidden layers.",
               TASK_SPECIFIC + "<br><br>" + HIDDEN,
               {"logit_weight": 1.0, "hard_label_weight": 0.5, "hidden_weight": 1.0},
               {"temperature": 2.0, "logit_loss": "forward_kl"}),
    ],
    EMBEDDING_TASK: [
        Preset("embedding", "Imitate the sentence embeddings",
               "The student's sentence vectors are pulled onto the teacher's.",
               EMBEDDING, {"embedding_weight": 1.0}),
        Preset("embedding_hidden", "Embeddings and hidden layers",
               "Adds intermediate-layer distillation for extra guidance.",
               EMBEDDING + "<br><br>" + HIDDEN, {"embedding_weight": 1.0, "hidden_weight": 1.0}),
        Preset("hidden", "Hidden layers only",
               "Intermediate-layer distillation alone.",
               HIDDEN, {"hidden_weight": 1.0}),
    ],
}

CUSTOM_TEXT = ("<b>Custom weights</b>, set under Advanced settings. " + WEIGHTS_TRADE)


def presets_of(task: str | Task) -> list[Preset]:
    return PRESETS.get(get_task(task), [])


def matching_preset(task: str | Task, method: Any) -> Preset | None:
    for preset in presets_of(task):
        if preset.matches(method):
            return preset
    return None


def format_pairs(pairs: list[list[int]]) -> str:
    return ", ".join(f"{s}:{t}" for s, t in pairs)


def parse_pairs(text: str) -> list[list[int]]:
    """'1:2, 2:4' -> [[1, 2], [2, 4]]; raises ValueError naming the bad entry."""
    pairs = []
    for item in text.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.replace("-", ":").split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(item)
        pairs.append([int(parts[0]), int(parts[1])])
    return pairs
