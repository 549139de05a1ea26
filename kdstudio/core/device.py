"""Which device and precision a run uses, and what it reports about them."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch

from kdstudio.core.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
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
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("training.device is 'mps', but Apple's Metal backend is not available.",
                          hint="Use 'auto' or 'cpu'.")
    return dev


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("training.precision is 'fp16', which the CPU does not run.",
                          hint="Use 'fp32' or 'bf16' on the CPU.")
    return name


def teacher_dtype(name: str, device: torch.device, precision: str) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return partial(torch.autocast, device_type=device.type, dtype=dtype)


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
    except ImportError:  # Windows
        return 0.0


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return str(device)
