"""safetensors: the student saved again with transformers (fp32, or fp16 weights), plus the
sentence-transformers files of an encoder, checked by loading what was written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdstudio.core.events import EventSink, Stage
from kdstudio.core.export.graph import Graph, Runner, half_copy, runner

ST_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling", "2_Normalize")


def write_safetensors(model: nn.Module, task: Any, normalize: bool, quantize: str | None,
                      folder: Path, on_event: EventSink, notes: list[str]) -> Runner:
    on_event(Stage("write safetensors", "fp16 weights" if quantize == "fp16" else ""))
    copy = half_copy(model) if quantize == "fp16" else model
    copy.save_pretrained(folder, safe_serialization=True)
    del copy
    # Check what was written, not what is in memory: reload it the way a user would.
    from kdstudio.core.models import load_model

    dtype = torch.float16 if quantize == "fp16" else torch.float32
    reloaded = load_model(str(folder), task, dtype=dtype, role="export").model
    if quantize == "fp16":
        notes.append("fp16 safetensors: checked and timed in float16 on this machine's CPU; "
                     "on a GPU it is faster than fp32, on a CPU usually slower.")
    return runner(Graph(reloaded.eval(), task, normalize).eval())


def st_normalizes(student_dir: Path) -> bool:
    """Whether the student's sentence-transformers modules end with a Normalize."""
    try:
        mods = json.loads((student_dir / "modules.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return any(str(m.get("type", "")).endswith("Normalize") for m in mods)


def copy_st_files(student_dir: Path, folder: Path) -> None:
    """sentence-transformers then loads the export folder as it loads the student."""
    for name in ST_FILES:
        src = student_dir / name
        if src.is_dir():
            shutil.copytree(src, folder / name, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, folder / name)
