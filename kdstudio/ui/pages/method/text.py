"""The Method page's words: method presets and plain-language explanations.

Presets set the loss weights (and the temperature and logit loss where they matter); a
config whose weights match no preset shows as "Custom". The explanations carry the product's
founding points: what each kind of distillation does, what the temperature and the weights
trade off, and the cautions (a strong teacher first; the student loses some quality).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdstudio.core.objective import all_terms
from kdstudio.core.tasks import Task, all_tasks, get_task
from kdstudio.core.tasks.words import (  # noqa: F401  (re-exported)
    CROSS_TOKENIZER,
    EMBEDDING,
    HIDDEN,
    LABELS,
    LOGIT,
    TASK_SPECIFIC,
)

# Every loss term's weight key: the built-in terms' and the plug-ins' (core/terms).
WEIGHTS = tuple(t.weight_key for t in all_terms())

SEQUENCE_LEVEL = ("<b>Sequence-level distillation</b>: the teacher first writes its own "
                  "continuations of the training texts, and the student then trains on the "
                  "teacher's own texts instead of the originals. It works even when the "
                  "two models use different tokenizers. It costs one generation pass with the "
                  "teacher before training starts (a later run can reuse the texts).")
ON_POLICY = ("<b>On-policy distillation</b>: the student writes its own continuations and the "
             "teacher scores every word of them, so the student learns from its own mistakes "
             "instead of only from texts it would never have written. The share says how many "
             "batches do this: 0% learns only from the data, 100% only from the student's own "
             "texts. Generating costs time on each of those batches.")
GENERATION = ("How the continuations are written: the first tokens of each text are the "
              "prompt; the temperature and top-p set how freely words are sampled (0 always "
              "picks the likeliest word).")
BASELINE = ("<b>Compare with plain training</b>: also train the very same student for the same "
            "number of steps on the ordinary loss alone, without the teacher. The results then "
            "show what the teacher adds over plain training, not only how far the student got. "
            "It doubles the training time.")
NO_BASELINE = ("Not available for this task. Its student learns only by copying the teacher "
               "(sentence vectors have no right answers of their own to learn from), so there "
               "is no plain training without the teacher to compare with.")
WHY = ("Why distill at all: the student is smaller, so it needs less memory and compute. It "
       "answers faster and more cheaply, and runs on a local GPU, on-premises hardware, phones "
       "and embedded devices instead of large cloud machines.")
CAUTION = ("The student always loses some quality; how much, and whether it is worth the "
           "savings, is what the Compare page measures.")

TEMPERATURE = ("Softens the teacher's probabilities before the student copies them. At 1 they "
               "are used as they are; higher values (2 to 4) flatten them, so the student also "
               "sees how likely the teacher finds the wrong answers, which is much of what it "
               "has to teach. Too high and every answer looks alike.")
def weights_trade(task: str | Task) -> str:
    """What the loss weights trade off, in the words of the task's own answers (a sentence
    encoder has no probabilities and its data no right answers to learn)."""
    t = get_task(task)
    truth = (f"; more on the {t.truth_words} keeps the student closer to the data"
             if t.truth_words else "")
    return ("Each weight says how much one lesson counts in the student's loss. More weight "
            f"on the teacher's {t.answer_words} copies the teacher more closely (its mistakes "
            f"too){truth}; hidden layers add guidance from inside the teacher. Only the ratios "
            "matter much; a weight of 0 switches that lesson off.")


def weight_labels(task: str | Task) -> dict[str, str]:
    """The words for the two answer lessons' weights: what this task's teacher gives, and
    the data's right answers."""
    t = get_task(task)
    answers = t.answer_words.replace(" for every word", "")
    return {"logit_weight": f"Teacher's {answers}",
            "hard_label_weight": (t.truth_words or "true answers").capitalize()}
NO_LOGITS = ("Sentence encoders output vectors, not probabilities, so the temperature and the "
             "logit loss do not apply to this task.")

LOGIT_LOSS_TEXT = {
    "forward_kl": "Forward KL: cover everything the teacher finds likely (the standard)",
    "reverse_kl": "Reverse KL: focus on the teacher's most likely answers",
    "jsd": "Jensen-Shannon: a balance of the two (balance under Advanced settings)",
    "skew_kl": "Skew KL: forward KL, steadier early in training",
    "skew_reverse_kl": "Skew reverse KL: reverse KL, steadier early in training",
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
BALANCE_TEXT = {"none": "No: each loss counts as computed, times its weight",
                "auto": "Yes: scale each loss to its usual size first"}
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
        """Every loss term's weight (those not named are 0, plug-in terms too) plus the
        extra settings."""
        return {**{w: 0.0 for w in WEIGHTS}, **self.weights, **self.extra}

    def matches(self, method: Any) -> bool:
        return all(abs(getattr(method, w) - v) < 1e-9 for w, v in self.values().items()
                   if w in WEIGHTS)


# Each task family's presets (the family's own module names them); a family without any
# shows only custom weights.
PRESETS: dict[Task, list[Preset]] = {
    task: [Preset(p.key, p.title, p.summary, p.explanation, dict(p.weights), dict(p.extra))
           for p in task.presets]
    for task in all_tasks()}

def custom_text(task: str | Task) -> str:
    return "<b>Custom weights</b>, set under Advanced settings. " + weights_trade(task)


# The words for the plug-in methods' settings (core/terms), where the field's own name is
# not plain enough: field -> (label, the words for each choice).
PLUGIN_WORDS: dict[str, tuple[str, dict[str, str]]] = {
    "similarity_loss": ("Compare the similarities by", {
        "kl": "KL: how each sentence ranks the others (the standard)",
        "mse": "Mean squared error of the cosine similarities"}),
    "similarity_temperature": ("Focus on the closest sentences (temperature)", {}),
    "attention_relation_heads": ("Relation heads", {}),
}


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
