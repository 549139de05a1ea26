"""What a run keeps on disk besides its events: checkpoints (gathered from every process under
FSDP), the student's whole weights for its folder, and the checkpoint kept when the steps run
out of memory.
"""

from __future__ import annotations

from typing import Any

import torch

from kdstudio.core import checkpoints, distributed
from kdstudio.core.config import RunConfig
from kdstudio.core.distiller import Distiller
from kdstudio.core.errors import OutOfMemory
from kdstudio.core.events import Checkpoint, EventSink, Log
from kdstudio.core.loop import Optimizer
from kdstudio.core.runs import Run


def save_checkpoint(run: Run | None, distiller: Distiller, opt: Optimizer, step: int, tc: Any,
                    emit: EventSink, group: distributed.ProcessGroup = distributed.SINGLE,
                    wrapped: Any = None) -> None:
    """A checkpoint of the whole run, written by the main process. Under FSDP every process
    takes part: the optimizer's state and the weights are gathered from the shards, so the
    checkpoint is the one a single process writes, and resumes with any number of processes."""
    state = group.optimizer_state(wrapped, opt.optimizer)
    weights = group.full_state(wrapped)
    if run is None:  # another process than the main one
        return
    path = checkpoints.save(run.checkpoints_dir, step, distiller, opt.optimizer, opt.scheduler,
                            opt.scaler, keep=tc.keep_checkpoints, optimizer_state=state,
                            model_state=weights)
    emit(Checkpoint(step=step, path=str(path)))


def student_state(group: distributed.ProcessGroup, wrapped: Any) -> dict[str, Any] | None:
    """Under FSDP the student's whole weights for its folder (gathered by every process, held
    by the main one); None otherwise: the student's own are whole."""
    full = group.full_state(wrapped)
    if full is None:
        return None
    return {k.removeprefix("student."): v for k, v in full.items() if k.startswith("student.")}


def out_of_memory(cfg: RunConfig, run: Run, distiller: Distiller, opt: Optimizer, done: int,
                  last_saved: int, device: torch.device, emit: EventSink) -> OutOfMemory:
    """Out of memory during the steps: keep a checkpoint of the last whole step, and say what
    to change. The failed step never reached the optimizer, so the weights are those of
    step ``done``."""
    from kdstudio.core.plan.memory import oom_advice

    opt.optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    kept = ""
    if done > last_saved or (done and not run.checkpoints()):
        try:
            save_checkpoint(run, distiller, opt, done, cfg.training, emit)
        except Exception as exc:  # noqa: BLE001 - still report the memory problem
            emit(Log(f"The checkpoint after running out of memory could not be saved: {exc}",
                     "warning"))
    latest = run.latest_checkpoint()
    if latest is not None:
        kept = (f" The run kept a checkpoint of step {done} ({latest.name}): change the settings "
                f"in {run.config_path} and continue with 'kdstudio resume {run.path.name}' "
                "(or Resume on the Runs page).")
    advice = oom_advice(cfg, str(device))
    where = "the GPU" if device.type == "cuda" else str(device)
    tips = "; or ".join(advice[:3]) if advice else "choose a smaller teacher or student"
    return OutOfMemory(f"{where} ran out of memory at step {done + 1}. To fit, {tips}.{kept}")
