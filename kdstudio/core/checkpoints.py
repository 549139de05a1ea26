"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint folder (checkpoints/step-000120/) holds the student and projection weights as
safetensors, the optimizer/scheduler/RNG state (loaded with weights_only=True), and
trainer_state.json. It is written under a temporary name and renamed, so a crash never
leaves a half-written checkpoint that looks complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from kdstudio.core.errors import RunError


def save(folder: Path, step: int, distiller: torch.nn.Module, optimizer: Any, scheduler: Any,
         scaler: Any, *, keep: int = 2, optimizer_state: dict[str, Any] | None = None,
         model_state: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``step``. ``optimizer_state`` and ``model_state``: the whole state of
    the optimizer and of the module when their own state_dict() holds only a shard (FSDP),
    in the form state_dict() gives; the checkpoint is then the one a single process writes."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:06d}"
    tmp = folder / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # save_model copes with tied weights (e.g. GPT-2's shared embedding and head).
    if model_state is None:
        save_model(distiller, str(tmp / "model.safetensors"))
    else:
        _save_state(model_state, tmp / "model.safetensors")
    state = {
        "optimizer": optimizer_state if optimizer_state is not None else optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(state, tmp / "training_state.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step}) + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    complete = sorted((p for p in folder.iterdir() if p.name.startswith("step-")),
                      key=lambda p: int(p.name.split("-")[1]))
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _save_state(state: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_model for a state dict: tied weights (one tensor under two names)
    saved once, the other name in the metadata, so load_model reads it back the same way."""
    from safetensors.torch import _remove_duplicate_names, save_file

    state = dict(state)
    metadata: dict[str, str] = {}
    for kept, names in _remove_duplicate_names(state).items():
        for name in names:
            metadata.setdefault(name, kept)
            del state[name]
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata or None)


def load(path: Path, distiller: torch.nn.Module, optimizer: Any, scheduler: Any, scaler: Any) -> int:
    """Restore a checkpoint into freshly built objects; returns the step it was taken at."""
    try:
        step = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["step"]
        missing, unexpected = load_model(distiller, str(path / "model.safetensors"), strict=False)
        if unexpected or [m for m in missing if not m.startswith("teacher")]:
            raise RunError(f"The checkpoint '{path}' does not match this run's student "
                           f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}).")
        state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    except RunError:
        raise
    except Exception as exc:  # a truncated file: SafetensorError, pickle errors, bad JSON ...
        raise RunError(f"The checkpoint '{path.name}' is damaged and cannot be read "
                       f"({type(exc).__name__}: {str(exc)[:200]}).",
                       hint="Resume from an earlier checkpoint or start the run again.") from exc
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(step)


def step_of(name: str) -> int | None:
    """The step a checkpoint name means: 'step-000120', 'step-120' or '120'."""
    text = name.strip().rstrip("/").rsplit("/", 1)[-1].removeprefix("step-")
    return int(text) if text.isdigit() else None


def resume_candidates(run: Any, name: str = "") -> list[Path]:
    """The checkpoints a resume tries, newest first; only the one named when ``name`` is given."""
    found = run.checkpoints()
    if not name:
        return list(reversed(found))
    step = step_of(name)
    chosen = [p for p in found if step is not None and step_of(p.name) == step]
    if not chosen:
        have = ", ".join(f"step-{step_of(p.name)}" for p in found) or "none"
        raise RunError(f"The run '{run.path.name}' has no checkpoint '{name}'.",
                       hint=f"Its checkpoints: {have}.")
    return chosen


def load_first_intact(paths: list[Path], distiller: torch.nn.Module, opt: Any,
                      emit: Any) -> tuple[int, Path]:
    """Load the first checkpoint of ``paths`` that reads; each damaged one is reported and
    left in place (nothing saved is deleted). RunError when none can be read."""
    from kdstudio.core.events import Log

    problems: list[str] = []
    for i, path in enumerate(paths):
        try:
            step = load(path, distiller, opt.optimizer, opt.scheduler, opt.scaler)
        except RunError as exc:
            problems.append(exc.message)
            if i + 1 < len(paths):
                emit(Log(f"{exc.message} Falling back to the next newest checkpoint, "
                         f"{paths[i + 1].name}.", "warning"))
            continue
        return step, path
    if len(paths) == 1 and problems:
        raise RunError(problems[0], hint="Resume without --checkpoint to use the newest intact "
                                          "one, or start the run again.")
    raise RunError("None of the run's checkpoints can be read: " + " ".join(problems),
                   hint="Start the run again with 'kdstudio run'.")


# -- the best student (training.keep = "best") -----------------------------------------------

BEST_DIR = "best"


def save_best(run_dir: Path, distiller: torch.nn.Module, info: dict[str, Any],
              model_state: dict[str, Any] | None = None) -> Path:
    """Write the best student so far to run_dir/best: its weights (the student and any learned
    projection, no optimizer state: a copy of the weights is all it adds to the disk) and
    best.json (info: the step, the figure that chose it and its validation figures). Written
    under a temporary name and renamed; the one it replaces goes only after."""
    final, tmp = run_dir / BEST_DIR, run_dir / f".tmp-{BEST_DIR}"
    old = run_dir / f".old-{BEST_DIR}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if model_state is None:
        save_model(distiller, str(tmp / "model.safetensors"))
    else:
        _save_state(model_state, tmp / "model.safetensors")
    (tmp / "best.json").write_text(json.dumps(info) + "\n", encoding="utf-8")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def best_info(run_dir: Path) -> dict[str, Any] | None:
    """best.json of the run's best student, or None when it has none (or it cannot be read:
    the run then finds its best anew)."""
    try:
        info = json.loads((run_dir / BEST_DIR / "best.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(info, dict) and isinstance(info.get("step"), int) \
        and (run_dir / BEST_DIR / "model.safetensors").exists()
    return info if ok else None


def load_best(run_dir: Path, distiller: torch.nn.Module) -> None:
    """Load the best student's weights into the distiller (the teacher is not in them)."""
    path = run_dir / BEST_DIR / "model.safetensors"
    try:
        missing, unexpected = load_model(distiller, str(path), strict=False)
    except Exception as exc:  # a damaged file: SafetensorError, OSError ...
        raise RunError(f"The best student's weights '{path}' cannot be read "
                       f"({type(exc).__name__}: {str(exc)[:200]}).",
                       hint="Set training.keep = 'last', or resume the run so it finds its "
                            "best anew.") from exc
    if unexpected or [m for m in missing if not m.startswith("teacher")]:
        raise RunError(f"The best student's weights '{path}' do not match this run's student "
                       f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}).")
