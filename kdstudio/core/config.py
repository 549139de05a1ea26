"""The run configuration: typed dataclasses with help text, and TOML load/save/overrides.

One RunConfig describes a run completely. Every field carries its help text (the
README's config reference, config_reference.py, is generated from it) and, where it
matters, its allowed values; unknown keys and bad values raise ConfigError naming the
key (config_checks.py).
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from kdstudio.core.config_checks import fill, validate_config
from kdstudio.core.errors import ConfigError
from kdstudio.core.loss_kinds import EMBEDDING_LOSSES, HIDDEN_LOSSES, LOGIT_LOSSES
from kdstudio.core.tasks import DEFAULT_TASK, TASK_NAMES, get_task

TASKS = TASK_NAMES
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
PREPARE = ("auto", "always", "never")
CACHE_MODES = ("auto", "always", "never")
BALANCE_MODES = ("none", "auto")
LAYER_CHOICES = ("even", "importance")
SHAPES = ("layers", "width", "both")
VOCABULARIES = ("teacher", "data")
KEEP_MODES = ("best", "last")


def _f(default: Any, help: str, *, choices: tuple | None = None, min: float | None = None,
       max: float | None = None, factory: Any = None) -> Any:
    meta = {"help": help, "choices": choices, "min": min, "max": max}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TeacherConfig:
    name: str = _f("all-MiniLM-L6-v2", "The teacher: a built-in name, a Hugging Face Hub id "
                   "(e.g. 'bert-base-uncased') or a local folder in save_pretrained form.")
    revision: str = _f("", "Hub revision (branch, tag or commit); empty for the default branch.")
    trust_remote_code: bool = _f(False, "Run Python code shipped with the model. Only for models "
                                 "whose code you trust.")
    dtype: str = _f("auto", "Precision the frozen teacher is held in: 'auto' uses bfloat16/float16 "
                    "on a GPU and float32 on the CPU; half precision halves its memory. 'int8' "
                    "(8-bit weights through bitsandbytes, a quarter of float32) needs a CUDA GPU "
                    "and the bitsandbytes package, and a teacher that is not fine-tuned first.",
                    choices=DTYPES)
    prepare: str = _f("auto", "sequence- and token-classification only: fine-tune the teacher on "
                      "the labelled data first. 'auto' does it when the teacher has no trained head for the "
                      "task; the result is saved and reused by later runs.", choices=PREPARE)
    cache: str = _f("auto", "causal-lm only: the teacher-logit cache. One teacher pass writes its "
                    "top-k next-token answers for the training data to disk; the run (and later "
                    "runs, resumes and every student of a sweep on the same teacher, data and "
                    "length) then reads them instead of running the teacher at each step. "
                    "'auto' uses the cache where it saves time or memory, weighing the "
                    "students that read it (teacher.cache_readers), the epochs, the teacher's "
                    "size against the student's and k against the vocabulary, and says why in "
                    "the run's log; 'always' writes one if it is missing; 'never' keeps the teacher "
                    "live. Methods that need the live teacher (hidden layers, different "
                    "tokenizers, the teacher's own texts) stay live.", choices=CACHE_MODES)
    cache_k: int = _f(0, "How many of the teacher's most likely next tokens the cache keeps per "
                      "position (the rest is kept as one remaining mass). 0 chooses from the "
                      "teacher's own answers on the first batch: the smallest of 64, 128, ..., "
                      "1024 whose top-k holds 90% of its probability at method.temperature, "
                      "but no larger than fits 250 bytes per position (k = 128 at a 2,048-token "
                      "vocabulary, 166 bytes; k = 64 at 152k tokens, 176 bytes).", min=0)
    cache_readers: int = _f(1, "How many runs will read this teacher's cache: teacher.cache "
                            "'auto' weighs one pass against this many runs' live teacher "
                            "steps. A sweep sets it to its number of students.", min=1)
    endpoint: str = _f("", "causal-lm only: a served teacher, 'http://HOST:PORT/v1' of a vLLM or "
                       "SGLang server serving the model teacher.name names there. Its top-k "
                       "next-token log-probabilities for the training data are written into the "
                       "teacher cache once (as a local teacher pass writes them), and the run reads "
                       "them. The API key, if the server wants one, is read from the "
                       "KDSTUDIO_TEACHER_API_KEY environment variable and never written anywhere. "
                       "k is teacher.cache_k (0: 64), lowered to what the server gives (vLLM's "
                       "default --max-logprobs is 20). Empty: the teacher runs here.")
    prepare_epochs: float = _f(2.0, "Epochs of the teacher's fine-tuning stage.", min=0.01)
    prepare_learning_rate: float = _f(1e-4, "Learning rate of the teacher's fine-tuning stage.",
                                      min=0.0)


@dataclass
class StudentConfig:
    name: str = _f("", "The student: empty to derive it from the teacher (same architecture, "
                   "fewer layers), or a built-in name, Hub id or local folder.")
    revision: str = _f("", "Hub revision of the student model, when it is given by name.")
    trust_remote_code: bool = _f(False, "Run Python code shipped with the student model.")
    layers: float = _f(0.5, "Derived students: layers to keep, as a count (e.g. 3) or a fraction "
                       "of the teacher's (e.g. 0.5). Kept layers are evenly spaced and "
                       "initialised from the teacher, as DistilBERT's student was.", min=0.0)
    layer_indices: list[int] = _f(None, "Derived students: the exact teacher layers to keep "
                                  "(0-based), overriding 'layers'.", factory=list)
    hidden_size: int = _f(0, "Derived students: a narrower width (embedding channels; 0 keeps "
                          "the teacher's). BERT, GPT-2 and Llama-family teachers keep their most "
                          "important channels (activation importance, as NVIDIA's Minitron); "
                          "other families start from fresh random weights.", min=0)
    layer_choice: str = _f("even", "Derived students: which teacher layers 'layers' keeps: "
                           "'even' (evenly spaced, first and last included) or 'importance' "
                           "(the layers that change the hidden states most on the training "
                           "data, ShortGPT's block influence).", choices=LAYER_CHOICES)
    attention_heads: int = _f(0, "Derived students: attention heads per layer (0 keeps the "
                              "teacher's), the most important ones on the training data. "
                              "Grouped-query attention keeps whole key/value groups. In BERT "
                              "and GPT-2 the width follows the heads (heads x head size).", min=0)
    intermediate_size: int = _f(0, "Derived students: MLP neurons per layer (0 keeps the "
                                "teacher's), the most active ones on the training data.", min=0)
    vocabulary: str = _f("teacher", "Derived students of encoder teachers (BERT family): "
                         "'teacher' keeps the whole vocabulary, 'data' only the tokens the "
                         "training data uses plus the special tokens (a much smaller embedding "
                         "table; held-out words outside it are split into other pieces or become "
                         "unknown, and the run says how many).", choices=VOCABULARIES)
    target_size: float = _f(0.0, "Derived students: the student's size as a share of the "
                            "teacher's parameters (e.g. 0.5), 0 for none. The planner picks "
                            "the layers, heads, neurons and width for student.shape, overriding "
                            "'layers', and logs what it picked.", min=0.0, max=0.95)
    shape: str = _f("layers", "Derived students with a target_size: 'layers' (fewer layers, the "
                    "teacher's width), 'width' (every layer, fewer heads, neurons and channels) "
                    "or 'both'.", choices=SHAPES)


@dataclass
class _BuiltinMethod:
    logit_loss: str = _f("forward_kl", "Divergence between teacher and student output "
                         "distributions.", choices=LOGIT_LOSSES)
    temperature: float = _f(2.0, "Softens both distributions (softmax(logits / T)) so the "
                            "student also learns how likely the teacher finds the wrong answers. "
                            "Losses are scaled by T^2.", min=1e-3)
    beta: float = _f(0.5, "jsd only: the mixture weight of the teacher (0 = forward KL, "
                     "1 = reverse KL).", min=0.0, max=1.0)
    alpha: float = _f(0.1, "skew_kl / skew_reverse_kl only: how much of the first distribution is "
                      "mixed into the second.", min=0.0, max=1.0)
    logit_weight: float = _f(1.0, "Weight of the logit-distillation term (imitate the teacher's "
                             "probabilities).", min=0.0)
    hard_label_weight: float = _f(0.0, "Weight of the ordinary loss on the true labels "
                                  "(next-token cross-entropy or the class label).", min=0.0)
    hidden_weight: float = _f(0.0, "Weight of intermediate-layer distillation (bring the "
                              "student's hidden states close to the teacher's).", min=0.0)
    hidden_loss: str = _f("mse", "How hidden states are compared.", choices=HIDDEN_LOSSES)
    layer_pairs: list[list[int]] = _f(None, "Hidden-state pairs [student, teacher] in "
                                      "hidden_states numbering (0 = embeddings, i = after layer "
                                      "i). Empty maps every student layer to an evenly spaced "
                                      "teacher layer.", factory=list)
    embedding_weight: float = _f(0.0, "sentence-embedding only: weight of the loss between the "
                                 "pooled sentence embeddings.", min=0.0)
    embedding_loss: str = _f("mse+cosine", "How pooled embeddings are compared.",
                             choices=EMBEDDING_LOSSES)
    cross_tokenizer_weight: float = _f(0.0, "causal-lm only: weight of the cross-tokenizer logit "
                                       "loss (Universal Logit Distillation). It compares the "
                                       "teacher's and the student's next-token probabilities, "
                                       "each sorted from most to least likely, at positions "
                                       "aligned by text, so it works when the two tokenizers "
                                       "differ.", min=0.0)
    sequence_level: bool = _f(False, "causal-lm only: sequence-level distillation. The teacher "
                              "first writes continuations of the data's prompts (see "
                              "[generation]); the student then trains on the teacher's texts. "
                              "Works when the tokenizers differ.")
    on_policy_share: float = _f(0.0, "causal-lm only: on-policy distillation (the lambda of "
                                "generalized knowledge distillation). This share of the batches "
                                "uses continuations the student samples itself, each token then "
                                "scored by the teacher with the logit (or cross-tokenizer) loss. "
                                "0 = supervised distillation, 1 = fully on-policy.",
                                min=0.0, max=1.0)
    balance: str = _f("none", "How the loss terms are weighed against each other. 'none': "
                      "each term's value times its weight, as computed. 'auto': each term is "
                      "first divided by its own running size, so a term whose values are "
                      "100-1,000x smaller than another's still counts as its weight says.",
                      choices=BALANCE_MODES)


def _method_config() -> type:
    """[method]: the built-in fields plus those each extra loss term declares (core/terms)."""
    from kdstudio.core.terms import discover

    extra = []
    for name, tp, default, help_text, rules in discover()[1]:
        extra.append((name, tp, _f(default, help_text, **rules)))
    cls = dataclasses.make_dataclass("MethodConfig", extra, bases=(_BuiltinMethod,))
    cls.__module__ = __name__
    cls.__doc__ = "The distillation method and its loss weights."
    return cls


MethodConfig = _method_config()


@dataclass
class GenerationConfig:
    prompt_tokens: int = _f(8, "Tokens taken from the start of each text as the prompt that the "
                            "teacher (sequence-level) or the student (on-policy) continues.",
                            min=1)
    max_new_tokens: int = _f(32, "Tokens generated per continuation.", min=1)
    temperature: float = _f(1.0, "Sampling temperature of the continuations (0 = greedy, always "
                            "the likeliest token).", min=0.0)
    top_p: float = _f(0.95, "Nucleus sampling: draw only from the likeliest tokens whose "
                      "probabilities add up to this.", min=0.01, max=1.0)
    max_prompts: int = _f(0, "Sequence-level: continue at most this many training texts "
                          "(0 = all).", min=0)
    batch_size: int = _f(32, "Prompts continued at once.", min=1)
    reuse: str = _f("", "Sequence-level: the generations.jsonl of an earlier run (or its run "
                    "folder), to train on instead of generating anew.")


@dataclass
class DataConfig:
    dataset: str = _f("builtin:everyday-topics", "The data: 'builtin:NAME', a local file (csv, "
                      "json, jsonl, txt, parquet) or folder, or a Hugging Face Hub data set id.")
    config_name: str = _f("", "Hub data sets: the configuration (subset) name.")
    split: str = _f("train", "The split to train on.")
    eval_split: str = _f("", "The split to evaluate on; empty carves eval_fraction out of the "
                         "training split.")
    eval_fraction: float = _f(0.1, "Share of the training split held out for evaluation when "
                              "there is no eval_split.", min=0.0, max=0.9)
    text_column: str = _f("", "Column holding the text (token-classification: the words); empty "
                          "detects it.")
    label_column: str = _f("", "Column holding the class label (sequence-classification) or the "
                           "tags, one per word (token-classification); empty detects it.")
    max_length: int = _f(128, "Maximum tokens per example; longer texts are cut.", min=4)
    pack: bool = _f(True, "causal-lm only: join short texts into full-length blocks so no "
                    "compute is spent on padding.")
    max_train_samples: int = _f(0, "Use at most this many training rows (0 = all).", min=0)
    max_eval_samples: int = _f(0, "Use at most this many evaluation rows (0 = all).", min=0)
    validation_fraction: float = _f(0.1, "training.keep = 'best' only: share of the training "
                                    "split set aside as the validation rows that choose the "
                                    "best student (at least 32 rows, at most "
                                    "data.max_eval_samples and evaluation.max_samples), when the data has no split named "
                                    "'validation' of its own. The held-out eval rows stay "
                                    "apart: the final figures are measured on them. 0: no "
                                    "validation rows, the run keeps the last student.",
                                    min=0.0, max=0.5)


@dataclass
class TrainingConfig:
    max_steps: int = _f(0, "Optimizer steps to train; 0 trains for 'epochs' instead.", min=0)
    epochs: float = _f(3.0, "Passes over the training data, used when max_steps is 0.", min=0.0)
    batch_size: int = _f(32, "Examples per micro-batch.", min=1)
    grad_accum_steps: int = _f(1, "Micro-batches summed before each optimizer step (a larger "
                               "effective batch without more memory).", min=1)
    learning_rate: float = _f(1e-4, "Peak learning rate of AdamW.", min=0.0)
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to biases and norms).",
                             min=0.0)
    warmup_ratio: float = _f(0.05, "Share of the steps spent warming the learning rate up.",
                             min=0.0, max=1.0)
    scheduler: str = _f("linear", "Learning-rate schedule after warm-up.", choices=SCHEDULERS)
    max_grad_norm: float = _f(1.0, "Clip the gradient norm to this (0 = no clipping).", min=0.0)
    precision: str = _f("auto", "Autocast precision: 'auto' is bf16 on GPUs that support it, "
                        "else fp16 on GPUs, fp32 on the CPU.", choices=PRECISIONS)
    device: str = _f("auto", "'auto' (cuda, then mps, then cpu), or 'cpu', 'cuda', 'cuda:1', "
                     "'mps'.")
    logit_chunk: int = _f(0, "Language models: positions per chunk of the output head and the "
                          "logit losses, so full-vocabulary logits never exist for a whole "
                          "batch (a 151,936-token vocabulary costs ~0.6 MB per position). 0 "
                          "picks it from free memory; -1 computes full logits at once.", min=-1)
    gradient_checkpointing: bool = _f(False, "Recompute the student's activations in the "
                                      "backward pass instead of keeping them: less memory for "
                                      "long rows, about a third more compute.")
    eval_every: int = _f(50, "Evaluate the student every N steps (0 = only at the end).", min=0)
    save_every: int = _f(0, "Write a checkpoint every N steps (0 = only at the end or on stop).",
                         min=0)
    keep_checkpoints: int = _f(2, "How many checkpoints to keep in the run folder.", min=1)
    keep: str = _f("best", "Which student the run keeps: 'best', the one with the best "
                   "selection figure on the validation rows (data.validation_fraction) at the "
                   "evaluations every eval_every steps and at the end; or 'last', the student "
                   "of the last step, trained on exactly the rows a run without validation "
                   "rows trains on. The selection figure is smooth, measured over every row: "
                   "the cosine to the teacher (sentence-embedding), perplexity (causal-lm), "
                   "the KL divergence to the teacher's class probabilities "
                   "(sequence-classification), the per-word agreement with the teacher "
                   "(token-classification); accuracies on a few hundred rows move by chance "
                   "from one evaluation to the next.", choices=KEEP_MODES)
    seed: int = _f(42, "Random seed for initialisation, data order and dropout.")


@dataclass
class EvaluationConfig:
    max_samples: int = _f(512, "Evaluate on at most this many eval rows (0 = all).", min=0)
    latency_repeats: int = _f(20, "Timed rounds for every latency figure, after 3 warm-up "
                              "rounds, the models taking turns (the median and the p10-p90 "
                              "spread are reported).", min=1)
    batch_size: int = _f(64, "Batch size for evaluation.", min=1)
    pinned_inputs: list[str] = _f(None, "Inputs the student answers at every evaluation during "
                                  "training, so you can watch its answers improve.", factory=list)
    baseline: bool = _f(False, "Also train an identical student for the same steps on the "
                        "plain task loss alone (no teacher) and report it beside the distilled "
                        "one: what distillation adds over ordinary training.")


@dataclass
class RunConfig:
    name: str = _f("", "A name for the run (shown in 'kdstudio runs'); empty makes one.")
    task: str = _f(DEFAULT_TASK.name, "The task family.", choices=TASKS)
    teacher: TeacherConfig = _f(None, "The teacher model.", factory=TeacherConfig)
    student: StudentConfig = _f(None, "The student model.", factory=StudentConfig)
    method: MethodConfig = _f(None, "The distillation method and its loss weights.",
                              factory=MethodConfig)
    data: DataConfig = _f(None, "The data.", factory=DataConfig)
    generation: GenerationConfig = _f(None, "Continuations for sequence-level and on-policy "
                                      "distillation (causal-lm).", factory=GenerationConfig)
    training: TrainingConfig = _f(None, "The training loop.", factory=TrainingConfig)
    evaluation: EvaluationConfig = _f(None, "Evaluation and measurement.",
                                      factory=EvaluationConfig)

    # -- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def save(self, path: str | Path) -> None:
        from kdstudio.core.runs import atomic_write_text

        atomic_write_text(Path(path), self.to_toml())

    def validate(self) -> "RunConfig":
        """Check every field and the combinations; raise ConfigError naming the key."""
        return validate_config(self)

    def with_overrides(self, assignments: list[str]) -> "RunConfig":
        """Apply 'section.key=value' strings (values parsed as TOML, else taken as text)."""
        data = self.to_dict()
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set '{item}' is not of the form section.key=value, "
                                  "e.g. training.max_steps=100.")
            parts = key.strip().split(".")
            target = data
            for p in parts[:-1]:
                if not isinstance(target.get(p), dict):
                    raise ConfigError(f"--set '{item}': '{p}' is not a section. "
                                      f"Sections are: {', '.join(_SECTIONS)}.")
                target = target[p]
            target[parts[-1]] = _parse_value(raw.strip())
        return config_from_dict(data)


_SECTIONS = ("teacher", "student", "method", "data", "generation", "training", "evaluation")


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def default_config(task: str = DEFAULT_TASK.name) -> RunConfig:
    """Sensible defaults for a task family (the method weights differ between tasks)."""
    t = get_task(task)
    cfg = RunConfig(task=t.name)
    # Each task's template names a teacher with a trained head for it (causal-lm: a GPT).
    cfg.teacher = dataclasses.replace(cfg.teacher, name=t.default_teacher)
    cfg.method = MethodConfig(**t.method_defaults)
    cfg.data = dataclasses.replace(cfg.data, **t.data_defaults)
    return cfg


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from nested dicts, starting from the task's defaults."""
    task = get_task(data.get("task", DEFAULT_TASK.name))
    return fill(RunConfig, data, "", default_config(task.name)).validate()


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML run config; errors name the file and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"The config file '{path}' does not exist.",
                          hint="Check the path, or write one with 'kdstudio config --template'.")
    except UnicodeDecodeError:
        raise ConfigError(f"The config file '{path}' is not a text file (it holds binary data), "
                          "so it cannot be a TOML run config.",
                          hint="Check the path; 'kdstudio config --template' writes a config "
                               "to start from.") from None
    except IsADirectoryError:
        raise ConfigError(f"'{path}' is a folder, not a config file.",
                          hint="Give the TOML file, e.g. config.toml.") from None
    except OSError as exc:
        raise ConfigError(f"The config file '{path}' cannot be read: {exc.strerror}.")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The config file '{path}' is not valid TOML: {exc}.")
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc.message}", hint=exc.hint) from None

