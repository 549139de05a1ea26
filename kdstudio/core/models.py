"""Load teachers and students, derive a student from teacher layers, check compatibility."""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdstudio.core.catalog import BUILTIN_ALIASES, BUILTIN_MODELS, MINILM_HUB_ID  # noqa: F401  (re-exported)
from kdstudio.core.errors import CompatibilityError, ModelError, StoppedError
from kdstudio.core.events import EventSink, ignore
from kdstudio.core.tasks import get_task


def resolve_model_source(name: str, *, revision: str = "", on_event: EventSink = ignore,
                         stop: Any = None, role: str = "model") -> str:
    """A local folder for a built-in name, a folder path, or a Hub id (downloaded, with progress)."""
    if not name or not name.strip():
        raise ModelError(f"No {role} model was given.",
                         hint="Give a built-in name (e.g. all-MiniLM-L6-v2), a Hub id or a folder.")
    key = BUILTIN_ALIASES.get(name, name)
    if key in BUILTIN_MODELS:
        finder, hub_id, _ = BUILTIN_MODELS[key]
        folder = finder()
        if folder is not None:
            return str(folder)
        if not hub_id:  # shipped only in this installation: nothing to download instead
            raise ModelError(f"The built-in {role} model '{key}' is missing from this "
                             "installation.",
                             hint="Reinstall KD Studio, or rebuild it with "
                                  "'python packaging/train_demo_teacher.py'.")
        name = hub_id
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", os.sep, 1) and path.parent.exists() and not _looks_like_hub_id(name):
        if not path.is_dir():
            raise ModelError(f"The {role} folder '{path}' does not exist or is not a folder.",
                             hint="Give a folder written by save_pretrained (with config.json).")
        if not (path / "config.json").exists():
            raise ModelError(f"The {role} folder '{path}' has no config.json, so it is not a "
                             "saved transformers model.",
                             hint="Choose the folder that save_pretrained wrote.")
        return str(path)
    if not _looks_like_hub_id(name):
        raise ModelError(f"'{name}' is neither a built-in model, an existing folder, nor a valid "
                         "Hugging Face Hub id.",
                         hint=f"Built-in models: {', '.join(BUILTIN_MODELS)}. Hub ids look like "
                              "'owner/name'.")
    return _download(name, revision, on_event, stop, role)


def _looks_like_hub_id(name: str) -> bool:
    import re

    return re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", name) is not None


def _download(repo_id: str, revision: str, on_event: EventSink, stop: Any, role: str) -> str:
    from huggingface_hub import snapshot_download

    from kdstudio.core.hub import explain_failure, run_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py", "tokenizer*",
                "*.tiktoken", "1_Pooling/*"]
    try:
        local = run_download(
            lambda tqdm_class: snapshot_download(repo_id, revision=revision or None,
                                                 allow_patterns=patterns, tqdm_class=tqdm_class),
            stage=f"download {role}", what=f"'{repo_id}'", on_event=on_event, stop=stop)
    except StoppedError:
        raise
    except Exception as exc:  # the hub raises many types; the user needs one sentence
        message, hint = explain_failure(exc, repo_id, revision, "model")
        raise ModelError(message, hint=hint) from exc
    if not any(Path(local).glob("*.safetensors")):
        raise ModelError(f"The Hub repository '{repo_id}' has no safetensors weights.",
                         hint="KD Studio only loads safetensors files; choose another model or "
                              "convert it locally.")
    return local


def quiet_transformers() -> None:
    """Silence transformers' own progress bars and notices: the engine reports through events."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(source: str, *, trust_remote_code: bool = False, role: str = "model"):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"The tokenizer of the {role} '{source}' could not be loaded: {exc}",
                         hint="The folder needs the tokenizer files that save_pretrained writes.")
    if tok.pad_token is None:
        # Causal LMs often ship without a pad token; padding positions are masked anyway.
        tok.pad_token = tok.eos_token or tok.unk_token
        if tok.pad_token is None:
            tok.add_special_tokens({"pad_token": "[PAD]"})
    return tok


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    source: str
    new_head: bool = False  # a classification head that was initialised at random here


def load_model(source: str, task: str, *, trust_remote_code: bool = False,
               label_names: list[str] | None = None, role: str = "model",
               dtype: torch.dtype | None = None, int8_device: Any = None) -> LoadedModel:
    """Load a model for a task family from a local folder (see resolve_model_source).
    int8_device: load 8-bit weights (bitsandbytes) straight onto that CUDA device."""
    import transformers

    quiet_transformers()
    task = get_task(task)
    cls = getattr(transformers, task.auto_class)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if int8_device is not None:
        kwargs.update(quantization_config=transformers.BitsAndBytesConfig(load_in_8bit=True),
                      device_map={"": int8_device.index or 0})
    if task.has_task_head and label_names:
        kwargs.update(num_labels=len(label_names),
                      id2label=dict(enumerate(label_names)),
                      label2id={n: i for i, n in enumerate(label_names)})
    if Path(source).is_dir():
        from kdstudio.core.preflight import read_config_json

        read_config_json(Path(source), role)  # a damaged config.json is blamed, not the tokenizer
    tok = load_tokenizer(source, trust_remote_code=trust_remote_code, role=role)
    try:
        model, info = cls.from_pretrained(source, output_loading_info=True, **kwargs)
    except ValueError as exc:
        msg = str(exc)
        if "Unrecognized configuration class" in msg or "not recognized" in msg.lower():
            raise ModelError(f"The {role} '{source}' cannot be used for {task}: its architecture "
                             f"has no {task.auto_class} variant.",
                             hint="Choose a model made for this task family.") from exc
        raise ModelError(f"The {role} '{source}' could not be loaded: {msg}") from exc
    except Exception as exc:
        raise ModelError(f"The {role} '{source}' could not be loaded: {type(exc).__name__}: {exc}",
                         hint="Check that the folder holds a complete save_pretrained model, "
                              "and whether it needs trust_remote_code.") from exc
    missing = info.get("missing_keys", []) if isinstance(info, dict) else []
    if task.trained_head_classes and role == "teacher" and _head_missing(model, missing):
        from kdstudio.core.preflight import untrained_head_error

        raise untrained_head_error(task, source, f"a {type(model).__name__} whose checkpoint")
    new_head = task.has_task_head and any(
        k.split(".")[0] in ("classifier", "score", "classification_head", "out_proj") or
        ".classifier" in k or k.startswith("score") for k in missing)
    if task.has_task_head and model.config.num_labels != len(label_names or []) \
            and label_names:
        raise CompatibilityError(
            f"The {role} '{source}' has {model.config.num_labels} classes but the data has "
            f"{len(label_names)} ({', '.join(label_names[:8])}).",
            hint="Use a model with a head for these classes, or a base model (a new head is "
                 "added).")
    if getattr(model.config, "pad_token_id", None) is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok))
    return LoadedModel(model=model, tokenizer=tok, source=source, new_head=new_head)


def _head_missing(model: nn.Module, missing: list[str]) -> bool:
    """Whether weights outside the model's body (its output head) were not in the checkpoint,
    i.e. initialised at random here."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    return bool(prefix) and any(not k.startswith(prefix + ".") for k in missing)


# -- architecture introspection ------------------------------------------------------------

def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def num_layers(model: nn.Module) -> int:
    cfg = model.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        v = getattr(cfg, key, None)
        if isinstance(v, int):
            return v
    return len(find_layer_list(model)[2])


def hidden_size(model: nn.Module) -> int:
    cfg = model.config
    for key in ("hidden_size", "n_embd", "d_model", "dim"):
        v = getattr(cfg, key, None)
        if isinstance(v, int):
            return v
    return model.get_input_embeddings().weight.shape[1]


def find_layer_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The ModuleList holding the transformer blocks (encoder.layer, model.layers, transformer.h...)."""
    n = None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        v = getattr(model.config, key, None)
        if isinstance(v, int):
            n = v
            break
    best: tuple[int, nn.Module, str, nn.ModuleList] | None = None
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.ModuleList) and len(child) > 0 and (n is None or len(child) == n):
                size = sum(p.numel() for p in child.parameters())
                if best is None or size > best[0]:
                    best = (size, parent, child_name, child)
    if best is None:
        raise ModelError(f"Could not find the list of transformer layers in "
                         f"{type(model).__name__}, so a student cannot be derived from it.",
                         hint="Give the student as a separate model instead (student.name).")
    return best[1], best[2], best[3]


def evenly_spaced(n_teacher: int, n_student: int) -> list[int]:
    """Teacher layers to keep: first and last included, the rest evenly between (DistilBERT's 0,2,4,7,9,11)."""
    if n_student >= n_teacher:
        return list(range(n_teacher))
    if n_student == 1:
        return [n_teacher - 1]
    return [int(math.floor(i * (n_teacher - 1) / (n_student - 1) + 0.5)) for i in range(n_student)]


def student_layer_indices(n_teacher: int, layers: float, layer_indices: list[int]) -> list[int]:
    """Resolve student.layers / student.layer_indices to the kept teacher layers."""
    # The same check, in the same words, as the preflight's.
    from kdstudio.core.preflight import check_layer_choice

    k = check_layer_choice(n_teacher, layers, layer_indices)
    if layer_indices:
        return sorted(layer_indices)
    return evenly_spaced(n_teacher, k)


@dataclass
class DerivedStudent:
    model: nn.Module
    kept_layers: list[int]
    fresh_init: bool
    notes: list[str] = field(default_factory=list)


def derive_student(teacher: nn.Module, *, layers: float = 0.5, layer_indices: list[int] | None = None,
                   hidden: int = 0, seed: int = 0) -> DerivedStudent:
    """The teacher's architecture with fewer layers, initialised from kept teacher layers.

    Embeddings and the output head are copied too. A different width cannot reuse the
    teacher's weights, so it means a fresh random initialisation of the smaller shape.
    """
    n_t = num_layers(teacher)
    kept = student_layer_indices(n_t, layers, layer_indices or [])
    if hidden and hidden != hidden_size(teacher):
        return _fresh_narrow_student(teacher, kept, hidden, seed)
    student = copy.deepcopy(teacher)
    student.float()
    student.requires_grad_(True)  # the teacher may already be frozen; the student must learn
    parent, attr, blocks = find_layer_list(student)
    new_blocks = nn.ModuleList([blocks[i] for i in kept])
    for new_idx, block in enumerate(new_blocks):
        for module in block.modules():  # caches index layers by position (Llama, GPT-2 ...)
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    setattr(parent, attr, new_blocks)
    _set_layer_count(student.config, kept)
    notes = [f"Student keeps teacher layers {kept} of {n_t}, with the teacher's embeddings and head."]
    return DerivedStudent(model=student, kept_layers=kept, fresh_init=False, notes=notes)


def _set_layer_count(cfg: Any, kept: list[int]) -> None:
    cfg.num_hidden_layers = len(kept)
    for key in ("layer_types",):  # per-layer lists must shrink with the layers
        v = getattr(cfg, key, None)
        if isinstance(v, list) and len(v) > max(kept):
            setattr(cfg, key, [v[i] for i in kept])


def _fresh_narrow_student(teacher: nn.Module, kept: list[int], hidden: int, seed: int) -> DerivedStudent:
    cfg = copy.deepcopy(teacher.config)
    t_hidden = hidden_size(teacher)
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    head_dim = getattr(cfg, "head_dim", None) or (t_hidden // heads if heads else None)
    if head_dim and hidden % head_dim:
        valid = [head_dim * i for i in range(1, (t_hidden // head_dim) + 1)]
        from kdstudio.core.errors import ConfigError

        raise ConfigError(f"student.hidden_size is {hidden}; it must be a multiple of the "
                          f"attention head size {head_dim}.",
                          hint=f"Valid widths: {', '.join(map(str, valid))}.")
    new_heads = hidden // head_dim if head_dim else heads
    cfg.hidden_size = hidden
    if getattr(cfg, "intermediate_size", None):
        cfg.intermediate_size = int(cfg.intermediate_size * hidden / t_hidden)
    if hasattr(cfg, "n_inner") and cfg.n_inner:
        cfg.n_inner = int(cfg.n_inner * hidden / t_hidden)
    if heads:
        cfg.num_attention_heads = new_heads
    kv = getattr(cfg, "num_key_value_heads", None)
    if kv:
        cfg.num_key_value_heads = math.gcd(kv, new_heads)
    _set_layer_count(cfg, kept)
    torch.manual_seed(seed)
    student = type(teacher)(cfg)
    notes = [f"Student width {hidden} differs from the teacher's {t_hidden}: it starts from fresh "
             f"random weights ({len(kept)} layers), not from teacher layers, so it needs more "
             "training to catch up."]
    return DerivedStudent(model=student, kept_layers=kept, fresh_init=True, notes=notes)


def model_summary(model: nn.Module, tokenizer: Any = None) -> dict[str, Any]:
    """What the app's model card shows: architecture, parameters, layers, width, vocabulary, memory."""
    params = count_params(model)
    bytes_per = next(model.parameters()).element_size()
    return {
        "architecture": type(model).__name__,
        "model_type": getattr(model.config, "model_type", ""),
        "parameters": params,
        "layers": num_layers(model),
        "hidden_size": hidden_size(model),
        "vocab_size": len(tokenizer) if tokenizer is not None else model.config.vocab_size,
        "weights_mb": params * bytes_per / 2**20,
        # Training with AdamW in fp32 needs weights + grads + two moments: ~16 bytes a parameter.
        "train_memory_mb": params * 16 / 2**20,
    }


# -- compatibility ---------------------------------------------------------------------------

@dataclass
class Compatibility:
    level: str  # "ok", "warn" or "error"
    message: str
    same_vocab: bool
    same_width: bool
    working_methods: list[str]
    notes: list[str] = field(default_factory=list)
    vocab_size: int = 0  # logits are compared over this many entries (the real tokenizer size)


def same_tokenizer(a: Any, b: Any) -> bool:
    if a is b:
        return True
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()


def check_compatibility(task: Any, method: Any, teacher: nn.Module, student: nn.Module,
                        teacher_tok: Any, student_tok: Any) -> Compatibility:
    """Compare vocabularies and widths; say which loss terms work and why."""
    from kdstudio.core.objective import active_terms, terms_for, working_terms

    task = get_task(task)
    same_vocab = same_tokenizer(teacher_tok, student_tok)
    tw, sw = hidden_size(teacher), hidden_size(student)
    fit = task.fit(teacher, student, teacher_tok, same_vocab)
    working = [t.name for t in working_terms(task, same_vocab, outputs_comparable=not fit.error)]
    notes: list[str] = list(fit.notes)
    if fit.error:
        return Compatibility("error", fit.error, same_vocab, tw == sw, working)
    active = active_terms(task, method)
    wanted = [t.name for t in active]
    blocked = [w for w in wanted if w not in working]
    if tw != sw and any(t.needs.layer_pairs for t in active):
        notes.append(f"Widths differ (teacher {tw}, student {sw}): a learned linear projection "
                     "maps student hidden states to the teacher's width.")
    if tw != sw and task.projects_output and any(t.needs.teacher and t.needs.output for t in active):
        notes.append(f"Embedding sizes differ (teacher {tw}, student {sw}): a learned linear "
                     "projection maps the student's embedding to the teacher's size.")
    if blocked:
        why = ("the teacher's and the student's tokenizers differ "
               f"({len(teacher_tok)} vs {len(student_tok)} tokens)") if not same_vocab else \
              "the models do not fit together for it"
        names = {t.name: f"{t.label} (method.{t.weight_key})" for t in terms_for(task)}
        still = ", ".join(names[w] for w in working) or "none of the methods for this task"
        if fit.also_works:
            still += ", and " + fit.also_works
        return Compatibility("error",
                             f"{'; '.join(names[b] for b in blocked).capitalize()} cannot be used "
                             f"because {why}: these compare the models token by token. "
                             f"Methods that still work: {still}. Or choose a student that "
                             "shares the teacher's tokenizer (for example one derived from it).",
                             same_vocab, tw == sw, working, notes, fit.vocab)
    level = "warn" if notes else "ok"
    msg = "Teacher and student fit together" + (": " + " ".join(notes) if notes else ".")
    return Compatibility(level, msg, same_vocab, tw == sw, working, notes, fit.vocab)


def require_compatible(comp: Compatibility) -> None:
    if comp.level == "error":
        raise CompatibilityError(comp.message)
