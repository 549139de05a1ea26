"""Which device and precision a run uses, and what it reports about them.

The one device resolver: ``resolve_device_name`` says which device 'auto' means here (a
name, unchecked, for estimates made before a run) and ``resolve_device`` turns a config's
device into a checked ``torch.device`` for the run itself. torch is imported inside the
functions, so the app and the pre-run estimates can import this module before torch.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import TYPE_CHECKING

from kdstudio.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device_name(name: str) -> str:
    """'auto' becomes 'cuda', 'mps' or 'cpu' as a run would choose; any other name is kept
    unchecked (the memory estimate says in words when that device is missing)."""
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if _mps_available():
        return "mps"
    return "cpu"


def device_type(name: str) -> str:
    """The kind of a device name: 'cuda:1' -> 'cuda' ('' -> 'cpu')."""
    return name.split(":", 1)[0] or "cpu"


def is_gpu(name: str) -> bool:
    """Whether a device name (resolved, as resolve_device_name gives it) is a GPU."""
    return name.startswith(("cuda", "mps"))


def resolve_device(name: str) -> torch.device:
    """The run's device for training.device, checked: ConfigError names what is missing."""
    import torch

    if name == "auto":
        return torch.device(resolve_device_name(name))
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"training.device is '{name}'; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device is '{name}', but no CUDA GPU is available here.",
                          hint="Use 'auto' or 'cpu'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"training.device is '{name}', but there are only "
                          f"{torch.cuda.device_count()} GPU(s).")
    if dev.type == "mps" and not _mps_available():
        raise ConfigError("training.device is 'mps', but Apple's Metal backend is not available.",
                          hint="Use 'auto' or 'cpu'.")
    return dev


def resolve_precision(name: str, device: torch.device, *, sharded: bool = False) -> str:
    """The run's precision on ``device``. ``sharded``: the student is sharded with FSDP, whose
    gradients each process holds only a shard of; fp16's grad scaler would then decide on its
    own shard whether to skip a step, and the processes would drift apart, so fp16 is not
    used there ('auto' on a GPU without bf16 gives fp32)."""
    import torch

    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else ("fp32" if sharded else "fp16")
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("training.precision is 'fp16', which the CPU does not run.",
                          hint="Use 'fp32' or 'bf16' on the CPU.")
    if name == "fp16" and sharded:
        raise ConfigError("training.precision is 'fp16', which a student sharded with FSDP does "
                          "not run here (each process would decide alone whether to skip a step "
                          "on an overflow).",
                          hint="Use 'bf16' (GPUs since NVIDIA Ampere) or 'fp32', or run without "
                               "--fsdp (DDP keeps fp16).")
    return name


def teacher_dtype(name: str, device: torch.device, precision: str) -> torch.dtype:
    import torch

    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.float32
    if name == "int8":  # the weights are 8-bit; what is not quantized computes in float16
        return torch.float16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def int8_problem(device: torch.device) -> str:
    """Why 8-bit weights (bitsandbytes) cannot be used on this device, or ''."""
    if device.type != "cuda":
        return f"8-bit weights run on a CUDA GPU only, and this run's device is {device.type}"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "the bitsandbytes package is not installed (pip install bitsandbytes)"
    return ""


def autocast_for(device: torch.device, precision: str):
    """A factory of the autocast context for a precision (a no-op context for fp32)."""
    if precision == "fp32":
        return nullcontext
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return partial(torch.autocast, device_type=device.type, dtype=dtype)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: PyTorch's CUDA allocations on a GPU, the process's RSS otherwise."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
    except ImportError:  # Windows
        return 0.0


def device_label(device: torch.device) -> str:
    """The device in words for summaries: the GPU's model and memory, else its name."""
    if device.type == "cuda":
        import torch

        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return str(device)
