"""The Accelerate seam: the process group of a multi-process run.

A process started by ``accelerate launch`` (``kdstudio run --processes N`` calls it) finds
WORLD_SIZE and RANK in its environment and joins a group through Hugging Face Accelerate:
the student is wrapped in DDP (or FSDP2 when the user's Accelerate config chooses it), each
process reads its own shard of every batch, losses are averaged, and only the main process
writes the run store. Any other process sees one process, and every helper here is then a
no-op: a single-process run computes exactly what it always has.

What the processes share (the batches, the loss, the seeds) is in dist_share; how the
launching process stops, pauses and follows them is in dist_control.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch

# A teacher-cache pass or an evaluation on the main process keeps the others waiting at the
# next collective; the group's timeout must outlast it. A dead process is noticed sooner:
# the launcher sees it exit.
COLLECTIVE_TIMEOUT = timedelta(hours=6)


def env_world_size() -> int:
    """How many processes the launcher started (1 outside a launch)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def env_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """Known before the group forms (from the launcher's environment): only rank 0 writes."""
    return env_rank() == 0


class ProcessGroup:
    """The facts of the process group and the few collectives the run needs."""

    def __init__(self, accelerator: Any = None):
        self.accelerator = accelerator
        if accelerator is None:
            self.rank, self.world_size, self.local_rank = 0, 1, 0
        else:
            self.rank = accelerator.process_index
            self.world_size = accelerator.num_processes
            self.local_rank = accelerator.local_process_index
        # Decided once: Accelerate's state can forget an FSDP set on a CPU (_fsdp_on_cpu).
        self._fsdp = accelerator is not None and "FSDP" in str(accelerator.distributed_type)

    @property
    def multi(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self._fsdp

    def device(self, resolved: torch.device) -> torch.device:
        """This process's device: its own GPU (cuda:LOCAL_RANK) in a group, else ``resolved``."""
        if not self.multi or resolved.type == "cpu":
            return resolved
        return self.accelerator.device

    def barrier(self) -> None:
        if self.multi:
            self.accelerator.wait_for_everyone()

    def _reduce(self, values: list[float], op: Any) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t, op=op)
        return t.cpu().tolist()

    def _comm_device(self) -> torch.device:
        # NCCL reduces only CUDA tensors; gloo only CPU ones.
        return self.accelerator.device if self.accelerator.device.type == "cuda" else torch.device("cpu")

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the processes (every process must call it, same keys)."""
        if not self.multi:
            return values
        keys = sorted(values)
        summed = self._reduce([float(values[k]) for k in keys], torch.distributed.ReduceOp.SUM)
        return {k: s / self.world_size for k, s in zip(keys, summed)}

    def sum(self, *numbers: float) -> list[float]:
        if not self.multi:
            return list(numbers)
        return self._reduce(list(numbers), torch.distributed.ReduceOp.SUM)

    def any(self, *flags: bool) -> list[bool]:
        """Each flag, true when it is true on any process."""
        if not self.multi:
            return list(flags)
        return [v > 0 for v in self._reduce([float(f) for f in flags], torch.distributed.ReduceOp.MAX)]

    def broadcast(self, obj: Any) -> Any:
        """The main process's ``obj`` on every process (a small picklable value)."""
        if not self.multi:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def each(self, items: list, fn: Any) -> list:
        """``[fn(x) for x in items]``, shared out: each process computes every world-th item
        and every process gets all the results, in order (one all-gather of the results, which
        must be small and picklable). One process computes them all, as it always has."""
        if not self.multi:
            return [fn(x) for x in items]
        mine = {i: fn(items[i]) for i in range(self.rank, len(items), self.world_size)}
        parts: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(parts, mine)
        merged: dict[int, Any] = {}
        for part in parts:
            merged.update(part)
        return [merged[i] for i in range(len(items))]

    def wrap(self, module: torch.nn.Module, optimizer: Any = None, *,
             find_unused: bool = False) -> torch.nn.Module:
        """The module the steps run through: DDP (or FSDP2) around it in a group, else itself.

        ``find_unused``: some weights get no gradient (Task.leaves_weights_unused); DDP then
        looks for them after each backward pass (a walk of the graph) instead of waiting.
        FSDP2 shards the module in place and swaps the optimizer's parameters for their
        shards, so the optimizer comes along; state it already holds (a resume's) is taken out
        whole first and put back as shards."""
        if not self.multi:
            return module
        if not self.fsdp or optimizer is None:
            if find_unused:
                from accelerate.utils import DistributedDataParallelKwargs

                self.accelerator.ddp_handler = DistributedDataParallelKwargs(
                    find_unused_parameters=True)
            return self.accelerator.prepare(module)
        state = optimizer.state_dict() if optimizer.state else None
        optimizer.state.clear()
        # Every process has loaded the whole student (setup_run), so Accelerate's
        # "CPU-RAM-efficient loading" (on by default in its launcher: weights to the meta
        # device, then rank 0's broadcast) would only cost time, and it unties tied weights
        # (GPT-2's embedding and head) of a module that is not a transformers model.
        self.accelerator.state.fsdp_plugin.cpu_ram_efficient_loading = False
        wrapped, _ = self.accelerator.prepare(module, optimizer)  # the optimizer, switched in place
        if "FSDP" not in str(self.accelerator.distributed_type):  # a CPU's, reset by prepare
            _fsdp_on_cpu(self.accelerator)
        if state is not None:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_optimizer_state_dict,
            )

            set_optimizer_state_dict(wrapped, optimizer, _by_name(state, wrapped, optimizer),
                                     options=StateDictOptions(full_state_dict=True))
        return wrapped

    def fsdp_line(self, wrapped: torch.nn.Module) -> str:
        """What FSDP2 made of the module, in words ('' without FSDP)."""
        if not (self.multi and self.fsdp):
            return ""
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in wrapped.modules() if isinstance(m, FSDPModule)]
        if len(units) == 1:
            return (f"FSDP2: the student is one unit, sharded across {self.world_size} processes "
                    "at rest and gathered whole for each forward and backward pass (an "
                    "Accelerate config's layer-wise wrap policy gathers it layer by layer).")
        kinds = sorted({type(m).__name__.removeprefix("FSDP") for m in units[1:]})
        return (f"FSDP2: the student is sharded across {self.world_size} processes in "
                f"{len(units)} units ({', '.join(kinds)} and the rest), each gathered in turn.")

    def optimizer_state(self, wrapped: torch.nn.Module, optimizer: Any) -> dict[str, Any] | None:
        """Under FSDP the optimizer's whole state, gathered from the shards into the form one
        process saves (every process must call it; the main process gets it, the others {}).
        None otherwise: the optimizer's own state_dict() is whole."""
        if not (self.multi and self.fsdp):
            return None
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        full = get_optimizer_state_dict(wrapped, optimizer, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True))
        return _by_number(full) if self.is_main else {}

    def full_state(self, wrapped: Any) -> dict[str, Any] | None:
        """Under FSDP the module's whole weights, gathered from the shards onto the main
        process's CPU (every process must call it; the others get {}), with tied weights
        sharing one tensor again, as in the module's own state_dict(). None otherwise."""
        if not (self.multi and self.fsdp):
            return None
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        sd = get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True,
                                                                   cpu_offload=True))
        if not self.is_main:
            return {}
        tied: dict[int, list[str]] = {}
        for name, p in wrapped.named_parameters(remove_duplicate=False):
            tied.setdefault(id(p), []).append(name)
        for names in tied.values():
            have = [n for n in names if n in sd]
            for n in names if have else []:
                sd[n] = sd[have[0]]
        return sd

    @contextlib.contextmanager
    def whole(self, wrapped: Any) -> Iterator[None]:
        """While inside, every process holds the whole module (an FSDP2 module's shards are
        gathered once, and kept after each forward), so evaluation and samples use the module
        as one process would, without collectives of their own. Every process must enter it
        together. A no-op without FSDP. Not for saving: state_dict() puts FSDP's shards back
        (full_state is for saving)."""
        if not (self.multi and self.fsdp):
            yield
            return
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in wrapped.modules() if isinstance(m, FSDPModule)]
        # The root's lazy initialisation first (a forward does it), else an inner unit
        # unsharded before the first step takes itself for a root.
        units[0]._get_fsdp_state()._lazy_init()
        kept = [[g.post_forward_mesh_info for g in m._get_fsdp_state()._fsdp_param_groups]
                for m in units]
        for m in units:
            m.unshard()
            m.set_reshard_after_forward(False, recurse=False)
        try:
            yield
        finally:
            for m, infos in zip(units, kept):
                for g, info in zip(m._get_fsdp_state()._fsdp_param_groups, infos):
                    g.post_forward_mesh_info = info
                    # Forget these forwards: FSDP orders its backward prefetches by the
                    # forwards since the last backward, and the processes ran different
                    # numbers of them here (their shares of the batches).
                    g._post_forward_indices.clear()
                m.reshard()
            units[0]._get_fsdp_state()._comm_ctx.post_forward_order.clear()

    def clip_grad_norm(self, parameters: Any, max_norm: float) -> Any:
        """Gradient clipping through Accelerate, which knows sharded (DTensor) gradients: the
        norm is that of the whole model's gradient, on every process."""
        return self.accelerator.clip_grad_norm_(parameters, max_norm)


def _param_names(wrapped: torch.nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in wrapped.named_parameters()}


def _by_name(state: dict[str, Any], wrapped: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """An optimizer state_dict keyed by parameter numbers (as one process saves it) keyed by
    parameter names instead, as torch's distributed state-dict functions read it."""
    names = _param_names(wrapped)
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    groups = []
    for g in state["param_groups"]:
        groups.append({**g, "params": [order[i] for i in g["params"]]})
    return {"state": {order[i]: v for i, v in state["state"].items()}, "param_groups": groups}


def _by_number(state: dict[str, Any]) -> dict[str, Any]:
    """The reverse of _by_name: numbers in the order of the parameter groups, as
    torch.optim.Optimizer.state_dict() gives them, so one checkpoint format serves all."""
    number: dict[str, int] = {}
    groups = []
    for g in state["param_groups"]:
        ids = []
        for name in g["params"]:
            number.setdefault(name, len(number))
            ids.append(number[name])
        groups.append({**g, "params": ids})
    return {"state": {number[n]: v for n, v in state["state"].items()}, "param_groups": groups}


SINGLE = ProcessGroup()


def start(device: torch.device) -> ProcessGroup:
    """Join the launcher's process group (Accelerate), or SINGLE outside a launch.

    Mixed precision stays with the run's own autocast and grad scaler (training.precision),
    so Accelerate is told 'no' whatever its config says.
    """
    if env_world_size() <= 1:
        return SINGLE
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, InitProcessGroupKwargs

    acc = Accelerator(cpu=device.type == "cpu", mixed_precision="no",
                      kwargs_handlers=[InitProcessGroupKwargs(timeout=COLLECTIVE_TIMEOUT)])
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and \
            acc.distributed_type == DistributedType.MULTI_CPU:
        _fsdp_on_cpu(acc)
    return ProcessGroup(acc)


def end() -> None:
    """Leave the process group, if this process joined one; call it before the process exits.

    Left to the interpreter's exit, gloo's worker threads can still hold finished work whose
    tensors point back into Python while the interpreter is torn down, and the process then
    dies with SIGABRT after its run has finished (rarely, and more often on a busy machine).
    Leaving is local (no collective), so a process that is done may leave while another
    still measures alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _fsdp_on_cpu(acc: Any) -> None:
    """Accelerate switches its FSDP plugin on only for GPU-like devices: asked for FSDP on a
    CPU, it quietly runs DDP. torch's FSDP2 (fully_shard) runs over gloo too, so here the
    plugin is switched on as Accelerate would on GPUs, from the same launcher settings: a
    CPU run takes the very FSDP2 path a GPU run takes (the tests run it so)."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()
    acc.state.distributed_type = DistributedType.FSDP
