"""Where a model comes from: the source kinds the Models page offers, and path helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MODES = ("derived", "builtin", "hub", "folder")
MODE_LABELS = {"derived": "Derived from the teacher", "builtin": "Built-in",
               "hub": "Hugging Face Hub", "folder": "Folder on this computer"}
MODE_TIPS = {
    "derived": "The teacher's own design with fewer layers, starting from the teacher's "
               "weights (as DistilBERT was made). Usually the best start.",
    "builtin": "Models that ship with KD Studio and work offline.",
    "hub": "A model id from huggingface.co such as 'bert-base-uncased' or 'owner/name'. "
           "It is downloaded once into the usual Hugging Face cache.",
    "folder": "A folder written by save_pretrained (it holds config.json and the weights). "
              "You can also drop a folder onto this page.",
}


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
