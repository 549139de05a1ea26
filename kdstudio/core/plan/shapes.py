"""Inspect a teacher or student without loading its weights, and estimate a derived student.

The app's model cards need the architecture, parameter counts (per layer too), widths and
memory, and the compatibility check needs the model's shape and its tokenizer. None of that
needs the weights: the model is built on PyTorch's "meta" device from its config, which
takes no memory and milliseconds even for a 70B model. The weight files are only checked
to exist; the trainer loads them for real when a run starts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdstudio.core.errors import ModelError
from kdstudio.core.events import EventSink, ignore
from kdstudio.core.models import (
    Compatibility,
    DerivedStudent,
    check_compatibility,
    count_params,
    derive_student,
    find_layer_list,
    load_tokenizer,
    model_summary,
    quiet_transformers,
    resolve_model_source,
)
from kdstudio.core.plan.speedup import ESTIMATE_HOW, bounded_speedup
from kdstudio.core.tasks import get_task

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


@dataclass
class ModelInspection:
    """What inspect_model found: ``info`` (plain data for cards and signals), the meta model
    (shape only, no weights), its tokenizer and its config."""

    info: dict[str, Any]
    model: nn.Module
    tokenizer: Any
    config: Any


def weight_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    files: list[Path] = []
    for pattern in WEIGHT_PATTERNS:
        files.extend(p for p in folder.glob(pattern) if p not in files)
    return files


def load_model_config(source: str, trust_remote_code: bool, role: str, revision: str = "") -> Any:
    """The model's config.json as transformers reads it; ModelError says why it cannot be."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code,
                                          revision=revision or None)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(f"The {role} '{source}' ships its own Python code, which only runs "
                             "when trust_remote_code is on.",
                             hint="Turn it on only if you trust where the model comes from."
                             ) from exc
        raise ModelError(f"The config.json of the {role} '{source}' could not be read: {exc}"
                         ) from exc
    except Exception as exc:
        raise ModelError(f"The config.json of the {role} '{source}' could not be read: "
                         f"{type(exc).__name__}: {exc}") from exc


def build_meta(config: Any, task: str, *, trust_remote_code: bool = False,
               role: str = "model", source: str = "") -> nn.Module:
    """The model's architecture for a task family, on the meta device (no memory, no weights)."""
    import transformers

    cls = getattr(transformers, get_task(task).auto_class)
    try:
        with torch.device("meta"):
            return cls.from_config(config, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc) or "not recognized" in str(exc).lower():
            raise ModelError(f"The {role} '{source or config.model_type}' cannot be used for "
                             f"{task}: its architecture ({config.model_type}) has no "
                             f"{get_task(task).auto_class} variant.",
                             hint="Choose a model made for this task family, or change the "
                                  "task on the Method page.") from exc
        raise ModelError(f"The {role} '{source}' could not be built: {exc}") from exc


def block_params(model: nn.Module) -> list[int]:
    """Parameters of each transformer block, in order ([] when the blocks are not found)."""
    try:
        _, _, blocks = find_layer_list(model)
    except ModelError:
        return []
    return [count_params(b) for b in blocks]


def _valid_widths(config: Any, hidden: int) -> list[int]:
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if heads else None)
    if not head_dim:
        return [hidden]
    return [head_dim * i for i in range(1, hidden // head_dim + 1)]


def _has_task_head(config: Any, task: str) -> bool | None:
    """Whether the checkpoint holds a trained head of the task (None: the task has none)."""
    family = get_task(task)
    if not family.has_task_head:
        return None
    # The family's Auto class names the head: AutoModelForX loads a checkpoint saved as *ForX.
    head = family.auto_class.removeprefix("AutoModel")
    return any(a.endswith(head) for a in (config.architectures or []))


def inspect_model(name: str, task: str, *, revision: str = "", trust_remote_code: bool = False,
                  on_event: EventSink = ignore, stop: Any = None, role: str = "model"
                  ) -> ModelInspection:
    """Resolve a model (downloading a Hub id, with Progress events) and describe it.

    ``info`` holds model_summary's keys plus: name, source, task, layer_params (per block),
    other_params (embeddings, head, norms), valid_widths, weights_on_disk_mb,
    has_task_head (for families with a task head), num_labels and notes for the user.
    """
    family = get_task(task)
    source = resolve_model_source(name, revision=revision, on_event=on_event, stop=stop, role=role)
    files = weight_files(source)
    if not files:
        raise ModelError(f"The {role} folder '{source}' has no weight files (model.safetensors).",
                         hint="Choose the folder that save_pretrained wrote; it holds the "
                              "config.json and the weights side by side.")
    quiet_transformers()
    config = load_model_config(source, trust_remote_code, role)
    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code, role=role)
    model = build_meta(config, task, trust_remote_code=trust_remote_code, role=role, source=source)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:  # load_model grows the embeddings to the tokenizer the same way
        model.resize_token_embeddings(len(tokenizer))
    info = model_summary(model, tokenizer)
    layer_params = block_params(model)
    head = _has_task_head(config, task)
    notes = []
    if head is False:
        notes.append("It has no trained classification head, so a run first fine-tunes it on "
                     "your labelled data (the 'prepare teacher' stage)." if role == "teacher" else
                     "It has no trained classification head; one is added and trained.")
    info.update(
        name=name, source=source, task=family.name, role=role,
        layer_params=layer_params,
        other_params=info["parameters"] - sum(layer_params),
        weights_half_mb=info["weights_mb"] / 2,
        weights_on_disk_mb=sum(f.stat().st_size for f in files if f.suffix != ".json") / 2**20,
        valid_widths=_valid_widths(config, info["hidden_size"]),
        # A narrower student of a family KD Studio prunes keeps the teacher's best channels.
        prunable=_prunable(config),
        has_task_head=head,
        num_labels=getattr(config, "num_labels", 0) if family.has_task_head else 0,
        trust_remote_code=trust_remote_code,
        notes=notes,
    )
    return ModelInspection(info=info, model=model, tokenizer=tokenizer, config=config)


def _prunable(config: Any) -> bool:
    from kdstudio.core.pruning import family_of

    return family_of(config) is not None


def derived_estimate(info: dict[str, Any], kept_layers: list[int], *,
                     student_layer_params: list[int] | None = None,
                     student_params: int | None = None) -> dict[str, Any]:
    """Size and expected speed-up of a student keeping ``kept_layers`` of the teacher in ``info``.

    Same width: the teacher's parameters minus the removed blocks (exact). A narrower
    student passes its own per-layer and total counts (see derive_meta). The speed-up is an
    estimate: the teacher's layer compute over the student's, taking a block's compute as
    proportional to its parameters, capped at what the parameter and layer counts allow
    (plan/speedup.py).
    """
    per_layer = info["layer_params"]
    n = len(per_layer)
    bad = [i for i in kept_layers if not 0 <= i < n]
    if bad or not kept_layers:
        raise ValueError(f"kept layers {kept_layers} must be 1 to {n} of 0..{n - 1}")
    if student_layer_params is None:
        student_layer_params = [per_layer[i] for i in kept_layers]
    if student_params is None:
        kept = set(kept_layers)
        student_params = info["parameters"] - sum(p for i, p in enumerate(per_layer)
                                                  if i not in kept)
    student_compute = sum(student_layer_params)
    return {
        "kept_layers": sorted(kept_layers),
        "layers": len(kept_layers),
        "parameters": student_params,
        "removed_parameters": info["parameters"] - student_params,
        "share_of_teacher": student_params / info["parameters"],
        "speedup": bounded_speedup(sum(per_layer), student_compute,
                                   teacher_params=info["parameters"],
                                   student_params=student_params, teacher_layers=n,
                                   student_layers=len(kept_layers)),
        "speedup_how": ESTIMATE_HOW,
        "weights_mb": student_params * 4 / 2**20,
        "train_memory_mb": student_params * 16 / 2**20,
    }


def derive_meta(teacher: ModelInspection, *, layers: float = 0.5,
                layer_indices: list[int] | None = None, hidden: int = 0,
                seed: int = 0) -> DerivedStudent:
    """derive_student on the teacher's meta model: the student's exact shape, no memory."""
    with torch.device("meta"):
        return derive_student(teacher.model, layers=layers, layer_indices=layer_indices,
                              hidden=hidden, seed=seed)


def derived_student_estimate(teacher: ModelInspection, *, layers: float = 0.5,
                             layer_indices: list[int] | None = None, hidden: int = 0
                             ) -> dict[str, Any]:
    """derived_estimate for any derived student, narrower ones included (builds it on meta)."""
    from kdstudio.core.pruning import family_of

    if hidden and hidden != teacher.info["hidden_size"] and family_of(teacher.config) is not None:
        # A family KD Studio prunes: the narrower student keeps the teacher's best channels.
        from kdstudio.core.config import StudentConfig
        from kdstudio.core.plan.pruned import pruned_estimate

        sc = StudentConfig(layers=layers, layer_indices=list(layer_indices or []),
                           hidden_size=hidden)
        p = pruned_estimate(sc, teacher.config, teacher.info["task"])
        est = derived_estimate(teacher.info, p["layers"], student_params=p["parameters"])
        est.update(speedup=p["speedup"], fresh_init=False, hidden_size=hidden,
                   notes=[f"Width {hidden} of the teacher's {teacher.info['hidden_size']}: the "
                          "student keeps the teacher's most important channels and heads, "
                          "measured on the training data when the run starts."])
        return est
    d = derive_meta(teacher, layers=layers, layer_indices=layer_indices, hidden=hidden)
    est = derived_estimate(teacher.info, d.kept_layers,
                           student_layer_params=block_params(d.model) if d.fresh_init else None,
                           student_params=count_params(d.model))
    est.update(fresh_init=d.fresh_init, notes=d.notes,
               hidden_size=hidden or teacher.info["hidden_size"])
    return est


def _with_labels(insp: ModelInspection, task: str, num_labels: int) -> nn.Module:
    cfg = copy.deepcopy(insp.config)
    cfg.num_labels = num_labels
    return build_meta(cfg, task, trust_remote_code=insp.info.get("trust_remote_code", False))


def check_pair(task: str, method: Any, teacher: ModelInspection,
               student: ModelInspection | None, student_cfg: Any = None) -> Compatibility:
    """check_compatibility for an inspected teacher and an inspected (or derived) student.

    ``student`` None means derived from the teacher as ``student_cfg`` (a StudentConfig) says.
    """
    if student is None:
        sc = student_cfg
        d = derive_meta(teacher, layers=sc.layers if sc else 0.5,
                        layer_indices=list(sc.layer_indices) if sc else None,
                        hidden=sc.hidden_size if sc else 0)
        s_model, s_tok = d.model, teacher.tokenizer
    else:
        s_model, s_tok = student.model, student.tokenizer
    t_model = teacher.model
    if get_task(task).has_task_head:
        # A model without a trained head gets one sized for the data when the run starts, so
        # its class count follows the other model's instead of config.json's default of 2.
        nt, ns = t_model.config.num_labels, s_model.config.num_labels
        if nt != ns and student is not None:
            if not student.info.get("has_task_head"):
                s_model = _with_labels(student, task, nt)
            elif not teacher.info.get("has_task_head"):
                t_model = _with_labels(teacher, task, ns)
    return check_compatibility(task, method, t_model, s_model, teacher.tokenizer, s_tok)
