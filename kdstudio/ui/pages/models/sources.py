"""Where a model comes from: the source kinds the Models page offers, and path helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MODES = ("derived", "builtin", "hub", "folder")
MODE_LABELS = {"derived": "Derived from the teacher", "builtin": "Built-in",
               "hub": "Hugging Face Hub", "folder": "Folder on this computer"}
MODE_TIPS = {
    "derived": "The teacher's own design made smaller (fewer layers, narrower layers or both), "
               "starting from the teacher's own weights (as DistilBERT was made). Usually the "
               "best start.",
    "builtin": "Models that ship with KD Studio and work offline.",
    "hub": "A model id from huggingface.co such as 'bert-base-uncased' or 'owner/name'. "
           "It is downloaded once into the usual Hugging Face cache.",
    "folder": "A folder written by save_pretrained (it holds config.json and the weights). "
              "You can also drop a folder onto this page.",
}


def derived_words(student: Any, teacher: dict[str, Any] | None) -> str:
    """What the derived student is, for the shape its fields give: fewer layers start from
    the teacher's own layers; narrower ones from its most important channels, or from random
    weights where this teacher's layers cannot be cut (core/pruning.py, core/models.py)."""
    t_hidden = (teacher or {}).get("hidden_size", 0)
    n_teacher = (teacher or {}).get("layers", 0)
    if student.target_size:
        narrow = student.shape in ("width", "both")
        fewer = student.shape in ("layers", "both")
    else:
        narrow = bool(student.attention_heads or student.intermediate_size
                      or student.hidden_size not in (0, t_hidden))
        kept = len(student.layer_indices) if student.layer_indices else (
            student.layers if student.layers >= 1 else student.layers * (n_teacher or 2))
        fewer = not n_teacher or kept < n_teacher
    if not narrow:
        return ("The teacher's design with fewer layers, starting from the teacher's own "
                "layers. Pick the layers below.")
    also = " and fewer of them" if fewer else " (every layer kept)"
    if teacher is not None and not teacher.get("prunable"):
        return (f"The teacher's design with narrower layers{also}. This teacher's layers cannot "
                "be cut narrower, so the student starts from random weights.")
    return (f"The teacher's design with narrower layers{also}, starting from the teacher's "
            "most important channels and heads (measured on the data).")


def looks_like_path(name: str) -> bool:
    return (name.startswith((".", "/", "~")) or os.path.isabs(name) or "\\" in name
            or Path(name).expanduser().exists())


def folder_from_drop(mime: Any) -> str | None:
    """The first local folder in a drag's data, or None."""
    for url in mime.urls() if mime.hasUrls() else []:
        path = url.toLocalFile()
        if path and Path(path).is_dir():
            return path
    return None


def short_name(name: str) -> str:
    """A folder's last part (paths do not wrap in a label); names and Hub ids as they are."""
    return f"'{Path(name).name}'" if looks_like_path(name) else f"'{name}'"
