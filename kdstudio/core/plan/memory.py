"""Estimates made before a run: the memory it needs against what the device has free, and
how many tokens its data holds.

Both are deliberately rough (within tens of percent) and cheap: model shapes come from
config files (weights never load; parameters are counted on torch's "meta" device), and
tokens are counted on a sample of rows and extrapolated. torch, transformers and datasets
are imported inside the functions, so the app can import this module before torch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdstudio.core.device import is_gpu, resolve_device_name
from kdstudio.core.tasks import CAUSAL_LM, get_task

MB = 2 ** 20
# A process holding torch, transformers and tokenizers, before any model: Python and the
# libraries on the CPU; the CUDA context and the allocator's slack on a GPU.
OVERHEAD_MB = {"cpu": 600.0, "gpu": 800.0}
# Bytes per trainable parameter with AdamW in fp32: weights, gradients and two moments.
TRAIN_BYTES_PER_PARAM = 16
# Activation values kept for the backward pass per token, per layer, in units of the width
# (attention projections, the 4x MLP and norms; Korthikanti et al. count about 17).
ACTIVATIONS_PER_LAYER = 18
# Allocator fragmentation and temporaries not counted above.
SAFETY = 1.1


@dataclass
class ModelShape:
    """What the estimate needs to know about a model, read from its config."""

    params: int
    hidden_size: int
    num_layers: int
    vocab_size: int = 0
    layer_params: int = 0  # parameters inside the transformer blocks (0 = unknown)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> "ModelShape":
        """From the Models page's model_summary dict (block parameters approximated)."""
        params, hidden = int(info["parameters"]), int(info["hidden_size"])
        vocab = int(info.get("vocab_size") or 0)
        return cls(params, hidden, int(info["layers"]), vocab,
                   max(0, params - vocab * hidden) or params)


@dataclass
class MemoryEstimate:
    """Memory a run needs against what the device has free; a suggestion when it won't fit."""

    needed_mb: float
    available_mb: float | None
    device: str                       # in words: "the CPU", "GPU cuda:0"
    parts: dict[str, float] = field(default_factory=dict)
    suggestion: str = ""
    changes: dict[str, Any] = field(default_factory=dict)  # "section.key" -> value
    note: str = ""                    # why available_mb is unknown

    @property
    def fits(self) -> bool | None:
        return None if self.available_mb is None else self.needed_mb <= self.available_mb


def format_mb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


# -- the device ---------------------------------------------------------------------------------

def system_available_mb() -> float | None:
    """The machine's available RAM: /proc/meminfo's MemAvailable, else sysconf's free pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / MB
    except (ValueError, OSError, AttributeError):
        return None


def available_memory_mb(device: str) -> tuple[float | None, str, str]:
    """(free MB or None, the device in words, why it is unknown) for a resolved device name."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None, f"GPU {device}", "no CUDA GPU is available on this machine"
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            return None, f"GPU {device}", f"this machine has {torch.cuda.device_count()} GPU(s)"
        free, _total = torch.cuda.mem_get_info(index)
        return free / MB, f"GPU {torch.cuda.get_device_name(index)}", ""
    if device == "mps":  # Apple GPUs share the machine's memory
        free = system_available_mb()
        return free, "the Apple GPU (shared memory)", "" if free else "free memory is unknown"
    free = system_available_mb()
    return free, "the CPU", "" if free else "free memory is unknown"


# -- the estimate -------------------------------------------------------------------------------

def _student_layers(config: Any, num_layers: int, teacher_params: int, student_params: int) -> int:
    s = config.student
    if s.name:  # a separate model: assume its depth scales with its size
        return max(1, round(num_layers * student_params / max(1, teacher_params)))
    if s.layer_indices:
        return len(s.layer_indices)
    return int(s.layers) if s.layers >= 1 else max(1, round(s.layers * num_layers))


def _parts(config: Any, teacher_params: int, student_params: int, hidden: int, layers: int,
           device: str, vocab: int, batch: int, max_length: int, teacher_bytes: int, free_mb: float | None = None) -> dict[str, float]:
    gpu = is_gpu(device)
    precision = config.training.precision
    act_bytes = 2 if precision in ("bf16", "fp16") or (precision == "auto" and gpu) else 4
    s_layers = _student_layers(config, layers, teacher_params, student_params)
    s_hidden = config.student.hidden_size or hidden
    tokens = batch * max_length
    heads = max(1, hidden // 64)
    cached = _reads_cache(config)
    alone = cache_only(config)
    parts = {
        "overhead": OVERHEAD_MB["gpu" if gpu else "cpu"],
        # A run its cache covers never holds the teacher during the steps (cached_teacher).
        "teacher weights": 0.0 if alone else teacher_params * teacher_bytes / MB,
        "student training state": student_params * TRAIN_BYTES_PER_PARAM / MB,
        # Kept for backward: per layer the activations and the attention scores (+ mask).
        # With gradient checkpointing only each layer's input is kept, and one layer's
        # working set is rebuilt at a time in the backward pass.
        "student activations": (tokens * s_hidden * ACTIVATIONS_PER_LAYER * act_bytes
                                + batch * max(1, s_hidden // 64) * max_length ** 2 * (2 * act_bytes + 1)
                                ) * (1 if config.training.gradient_checkpointing else s_layers) / MB
                               + (tokens * s_hidden * act_bytes * s_layers / MB
                                  if config.training.gradient_checkpointing else 0),
        # The teacher runs without gradients: only one layer's working set at a time,
        # plus every hidden state when intermediate layers are distilled. Reading the
        # teacher cache instead, it does not run during the steps at all.
        "teacher activations": 0.0 if cached else
                               (tokens * hidden * 8 * teacher_bytes
                                + batch * heads * max_length ** 2 * teacher_bytes
                                + (tokens * hidden * (layers + 1) * teacher_bytes
                                   if _reads_teacher_inside(config) else 0)) / MB,
    }
    if cached:  # the batch's cached answers: k ids (int64) and log-probs (fp32) per position
        from kdstudio.core.teacher_source import k_within_budget

        k = config.teacher.cache_k or (64 if getattr(config.teacher, "endpoint", "") else
                                       k_within_budget(vocab) if vocab else 128)
        parts["teacher cache batch"] = tokens * k * 12 / MB
    task = get_task(config.task)
    if task.scores_vocabulary and vocab:
        # A row over the vocabulary per position: teacher and student logits, both softmaxes
        # and the logits' gradient, in fp32; for every token of the batch at once, or, chunked
        # (training.logit_chunk), for one chunk at a time plus the head's gradient.
        chunk = config.training.logit_chunk
        if chunk < 0 or not task.chunks_head:
            parts["logits"] = tokens * vocab * 4 * 5 / MB
        else:
            rows = min(tokens, chunk or _auto_chunk(vocab, free_mb))
            parts["logits (chunked)"] = (rows * vocab * 4 * 6 + vocab * s_hidden * 4) / MB
    return parts


def _reads_cache(config: Any) -> bool:
    """Whether the run's loss reads the teacher cache rather than the live teacher
    ('auto' counts as live: a cache may not exist yet)."""
    from kdstudio.core.teacher_source import CACHE, plan_teacher

    # A served teacher (teacher.endpoint) is always read through the cache.
    return (config.teacher.cache == "always" or bool(getattr(config.teacher, "endpoint", ""))) \
        and plan_teacher(config, exists=True).mode == CACHE


def cache_only(config: Any) -> bool:
    """Whether the run's steps and measurements go without the teacher's weights: it reads
    the teacher cache and nothing of it needs the live teacher (teacher_source)."""
    from kdstudio.core.teacher_source import cache_only_blocker

    return _reads_cache(config) and not cache_only_blocker(config, get_task(config.task))


def teacher_pass_mb(config: Any, teacher_params: int, student_params: int, hidden: int,
                    device: str, teacher_bytes: int) -> float:
    """A local teacher's one pass that writes the cache, before the steps: its weights and one
    batch's forward, beside the student's weights (no training state yet)."""
    tokens = config.training.batch_size * config.data.max_length
    return (OVERHEAD_MB["gpu" if is_gpu(device) else "cpu"]
            + (teacher_params * teacher_bytes + student_params * 4
               + tokens * hidden * 8 * teacher_bytes) / MB)


def _auto_chunk(vocab: int, free_mb: float | None) -> int:
    """The chunk training.logit_chunk = 0 would pick with this much free memory
    (chunk_size.auto_chunk_size; this machine's RAM when unknown)."""
    from kdstudio.core.chunk_size import auto_chunk_size

    if free_mb is None:
        return auto_chunk_size(vocab, device="cpu")
    return auto_chunk_size(vocab, free_bytes=int(free_mb * MB))


def _teacher_bytes(config: Any, device: str) -> int:
    dtype = config.teacher.dtype
    if dtype == "int8":
        return 1
    if dtype == "auto":
        return 2 if device.startswith("cuda") else 4
    return 4 if dtype == "float32" else 2


def estimate_memory(config: Any, teacher_params: int, student_params: int, hidden_size: int,
                    num_layers: int, device: str, *, vocab_size: int = 0,
                    available_mb: float | None = None,
                    cache_exists: bool = False) -> MemoryEstimate:
    """Memory the run in ``config`` needs on ``device`` and what is free there.

    ``hidden_size`` and ``num_layers`` are the teacher's. ``available_mb`` overrides the
    measurement (torch.cuda.mem_get_info on a GPU, the available RAM otherwise).
    ``cache_exists``: the teacher's cache (with its figures) is on disk already, so a
    cache-only run makes no teacher pass and is the student alone.
    """
    device = resolve_device_name(device)
    note = ""
    if available_mb is None:
        available_mb, where, note = available_memory_mb(device)
    else:
        where = "the CPU" if not is_gpu(device) else f"GPU {device}"
    tc, dc = config.training, config.data
    t_bytes = _teacher_bytes(config, device)

    def needed(batch: int, max_length: int, teacher_bytes: int, *,
               config: Any = config) -> tuple[float, dict[str, float]]:
        parts = _parts(config, teacher_params, student_params, hidden_size, num_layers, device,
                       vocab_size, batch, max_length, teacher_bytes, free_mb=available_mb)
        total = sum(parts.values())
        if cache_only(config) and not getattr(config.teacher, "endpoint", "") \
                and not cache_exists:
            # The local teacher's pass comes first (when the cache is not there yet): the run
            # needs whichever of the two is larger, never both at once.
            total = max(total, teacher_pass_mb(config, teacher_params, student_params,
                                               hidden_size, device, teacher_bytes))
        return total * SAFETY, parts

    total, parts = needed(tc.batch_size, dc.max_length, t_bytes)
    est = MemoryEstimate(total, available_mb, where, parts, note=note)
    if available_mb is None and device.startswith("cuda") and note:
        est.suggestion = f"Training would fail: {note}. Choose the device 'auto' or 'cpu'."
        est.changes = {"training.device": "auto"}
    elif est.fits is False:
        est.suggestion, est.changes = _suggest(config, available_mb, t_bytes, device, needed)
    return est


def _with(config: Any, section: str, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section),
                                                                       **changes)})


def _suggest(config: Any, free: float, t_bytes: int, device: str, needed: Any) -> tuple[str, dict]:
    """The gentlest change that fits: a half-precision teacher, the teacher cache, a smaller
    micro-batch with more accumulation, gradient checkpointing, a shorter maximum length;
    else say the models themselves are too big."""
    tc, dc = config.training, config.data
    half_saving = ""
    if t_bytes == 4 and device.startswith("cuda"):
        if needed(tc.batch_size, dc.max_length, 2)[0] <= free:
            return ("Hold the teacher in half precision (teacher precision: bfloat16); that "
                    "alone brings it within the free memory.", {"teacher.dtype": "bfloat16"})
        half_saving = " Holding the teacher in half precision (bfloat16) would save more."
    if not _reads_cache(config):
        with_cache = _with(config, "teacher", cache="always")
        if _reads_cache(with_cache) and needed(tc.batch_size, dc.max_length, t_bytes,
                                               config=with_cache)[0] <= free:
            return ("Turn on the teacher cache (teacher.cache = 'always'): one teacher pass "
                    "writes its answers to disk first, and the steps then need no memory for "
                    "the teacher's activations.", {"teacher.cache": "always"})
    batch = tc.batch_size
    while batch > 1:
        batch //= 2
        if needed(batch, dc.max_length, t_bytes)[0] <= free:
            accum = tc.grad_accum_steps * math.ceil(tc.batch_size / batch)
            return (f"Lower the batch size to {batch} and raise gradient accumulation to {accum}: "
                    f"each step still learns from {batch * accum} examples, with less memory "
                    f"at once.{half_saving}",
                    {"training.batch_size": batch, "training.grad_accum_steps": accum})
    if not tc.gradient_checkpointing:
        with_ckpt = _with(config, "training", gradient_checkpointing=True)
        if needed(1, dc.max_length, t_bytes, config=with_ckpt)[0] <= free:
            accum = tc.grad_accum_steps * tc.batch_size
            return (f"Even a batch of 1 does not fit as it is: turn on gradient checkpointing "
                    f"(the student's activations are recomputed in the backward pass, about a "
                    f"third more compute), with batch size 1 and gradient accumulation {accum}.",
                    {"training.gradient_checkpointing": True, "training.batch_size": 1,
                     "training.grad_accum_steps": accum})
    length = dc.max_length
    while length > 16:
        length //= 2
        if needed(1, length, t_bytes)[0] <= free:
            accum = tc.grad_accum_steps * tc.batch_size
            return (f"Even a batch of 1 does not fit at {dc.max_length} tokens: lower the maximum "
                    f"length to {length}, with batch size 1 and gradient accumulation {accum}.",
                    {"data.max_length": length, "training.batch_size": 1,
                     "training.grad_accum_steps": accum})
    floor = needed(1, 16, 2 if is_gpu(device) else t_bytes)[0]
    return (f"The models alone need about {format_mb(floor)}, more than the {format_mb(free)} "
            "free: choose a smaller teacher or student, or a device with more memory.", {})


def oom_advice(config: Any, device: str) -> list[str]:
    """What to change after running out of memory, gentlest first, for this config."""
    tc, dc, t = config.training, config.data, config.teacher
    out = []
    if not _reads_cache(config):
        with_cache = _with(config, "teacher", cache="always")
        if _reads_cache(with_cache):
            out.append("turn on the teacher cache (teacher.cache = \"always\"): the teacher "
                       "then runs once, before training, not beside the student at every step")
    if is_gpu(device) and t.dtype in ("auto", "float32") and _teacher_bytes(config, device) == 4:
        out.append("hold the teacher in half precision (teacher.dtype = \"bfloat16\")")
    if tc.batch_size > 1:
        out.append(f"halve the batch and double the accumulation (training.batch_size = "
                   f"{max(1, tc.batch_size // 2)}, training.grad_accum_steps = "
                   f"{tc.grad_accum_steps * 2}): each step still learns from as many examples")
    if not tc.gradient_checkpointing:
        out.append("turn on gradient checkpointing (training.gradient_checkpointing = true): "
                   "about a third more compute for much less activation memory")
    if get_task(config.task).chunks_head and tc.logit_chunk < 0:
        out.append("compute the logits in chunks (training.logit_chunk = 0)")
    if dc.max_length > 64:
        out.append(f"shorten the rows (data.max_length = {dc.max_length // 2})")
    return out


# -- model shapes from config files ---------------------------------------------------------------

def _local_source(name: str, revision: str = "") -> str:
    """A built-in name or an existing folder as a local folder; a Hub id is returned as given
    (transformers then fetches only the small config or tokenizer files, never weights)."""
    from kdstudio.core.models import (
        BUILTIN_ALIASES,
        BUILTIN_MODELS,
        resolve_model_source,
    )

    if BUILTIN_ALIASES.get(name, name) in BUILTIN_MODELS or Path(name).expanduser().exists():
        return resolve_model_source(name, revision=revision)
    return name


def model_shape(name: str, task: str, *, revision: str = "",
                trust_remote_code: bool = False) -> ModelShape:
    """Parameters, width, depth and vocabulary of a model, from its config alone."""
    from kdstudio.core.models import hidden_size, num_layers, quiet_transformers
    from kdstudio.core.plan.shapes import block_params, build_meta, load_model_config

    quiet_transformers()
    source = _local_source(name, revision)
    cfg = load_model_config(source, trust_remote_code, "model", revision)
    model = build_meta(cfg, task, trust_remote_code=trust_remote_code, source=source)
    params = sum(p.numel() for p in model.parameters())
    blocks = sum(block_params(model)) or params
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    return ModelShape(params, hidden_size(model), num_layers(model), vocab, blocks)


def derived_student_params(teacher: ModelShape, layers: int, hidden: int = 0) -> int:
    """Parameters of a student keeping ``layers`` of the teacher's blocks (and a width)."""
    per_layer = teacher.layer_params / max(1, teacher.num_layers)
    rest = teacher.params - teacher.layer_params
    scale = (hidden / teacher.hidden_size) if hidden else 1.0
    return int(rest * scale + per_layer * layers * scale * scale)


def estimate_for_config(config: Any, teacher_info: dict[str, Any] | None = None, *,
                        available_mb: float | None = None) -> MemoryEstimate:
    """The whole estimate for a RunConfig (slow: run it off the GUI thread)."""
    t = config.teacher
    teacher = (ModelShape.from_info(teacher_info) if teacher_info else
               model_shape(t.name, config.task, revision=t.revision,
                           trust_remote_code=t.trust_remote_code))
    s = config.student
    if s.name:
        student_params = model_shape(s.name, config.task, revision=s.revision,
                                     trust_remote_code=s.trust_remote_code).params
    else:
        kept = _student_layers(config, teacher.num_layers, 1, 1)
        student_params = derived_student_params(teacher, kept, s.hidden_size)
        if s.target_size or s.attention_heads or s.intermediate_size or s.vocabulary != "teacher" \
                or s.hidden_size:  # pruned from the teacher: count the pruned shape exactly
            from kdstudio.core.plan.pruned import pruned_student_params
            from kdstudio.core.plan.shapes import load_model_config

            t_cfg = load_model_config(_local_source(t.name, t.revision), t.trust_remote_code,
                                      "teacher", t.revision)
            student_params = pruned_student_params(config, t_cfg) or student_params
    exists = False
    if cache_only(config) and not t.endpoint:
        from kdstudio.core.teacher_source import covering_on_disk

        exists = covering_on_disk(config)
    return estimate_memory(config, teacher.params, student_params, teacher.hidden_size,
                           teacher.num_layers, config.training.device,
                           vocab_size=teacher.vocab_size, available_mb=available_mb,
                           cache_exists=exists)


# -- tokens in the data -------------------------------------------------------------------------

@dataclass
class TokenEstimate:
    """Rows the run will use and the tokens they hold (extrapolated when sampled)."""

    train_rows: int
    eval_rows: int
    tokens: int | None   # in the training rows, before cutting (None without a tokenizer)
    used_tokens: int | None  # what training sees after cutting (all of them when packing)
    sampled_rows: int    # rows actually tokenized
    cut_share: float     # share of rows longer than max_length

    @property
    def exact(self) -> bool:
        return self.sampled_rows >= self.train_rows


def teacher_tokenizer(config: Any) -> Any:
    """The teacher's tokenizer; for a Hub id only the tokenizer files are fetched."""
    from kdstudio.core.models import load_tokenizer

    t = config.teacher
    return load_tokenizer(_local_source(t.name, t.revision),
                          trust_remote_code=t.trust_remote_code, role="teacher")


def estimate_tokens(config: Any, tokenizer: Any = None, sample: int = 4000) -> TokenEstimate:
    """Tokenize up to ``sample`` evenly spaced training rows and extrapolate to all of them
    (without a tokenizer, only the rows are counted)."""
    from kdstudio.core.data import load_text_data

    # The text alone decides the rows and tokens, so read it as a family that reads no
    # labels; labels are the preview's business.
    data = load_text_data(config.data, CAUSAL_LM, seed=config.training.seed)
    texts = data.train_texts
    n = len(texts)
    if tokenizer is None:
        return TokenEstimate(n, len(data.eval_texts), None, None, 0, 0.0)
    stride = max(1, math.ceil(n / sample)) if n else 1
    picked = texts[::stride]
    lengths = [len(ids) for ids in tokenizer(picked, truncation=False)["input_ids"]] if picked else []
    max_len = config.data.max_length
    pack = get_task(config.task).packs and config.data.pack
    total = sum(lengths)
    used = total if pack else sum(min(x, max_len) for x in lengths)
    factor = n / len(picked) if picked else 0.0
    cut = sum(1 for x in lengths if x > max_len) / len(lengths) if lengths else 0.0
    return TokenEstimate(n, len(data.eval_texts), round(total * factor), round(used * factor),
                         len(picked), 0.0 if pack else cut)


def _reads_teacher_inside(config: Any) -> bool:
    """A loss term reads the teacher's hidden states or attention maps: every layer's are kept."""
    from kdstudio.core.objective import active_terms

    return any(t.needs.teacher_inside for t in active_terms(config.task, config.method))
