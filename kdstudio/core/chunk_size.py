"""How many positions one chunk of the output head and the logit losses takes.

The chunked training loss (chunked.py) and the chunked evaluation figures (chunked_eval.py)
both size their chunks here, from the vocabulary, the hidden width and the memory free now.
"""

from __future__ import annotations

import os

import torch

__all__ = ["CHUNK_MULTIPLE", "MAX_CHUNK", "MIN_CHUNK", "auto_chunk_size"]

MIN_CHUNK, MAX_CHUNK, CHUNK_MULTIPLE = 64, 8192, 64
# fp32 tensors of (chunk, vocab) alive at once: student logits, their grad, teacher logits,
# and the log-softmax / divergence temporaries.
_WORKING_COPIES = 6
_SHARE_OF_FREE = 8  # use at most 1/8 of free memory: the model, optimizer and others need the rest


def _free_bytes(device: torch.device | str | None) -> int:
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil is optional; Linux says the same in /proc/meminfo
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_chunk_size(vocab_size: int, hidden: int = 0, free_bytes: int | None = None,
                    device: torch.device | str | None = None, *,
                    override: int | None = None) -> int:
    """Positions per chunk so that a chunk's working set stays under 1/8 of free memory.

    The working set is ~6 fp32 (chunk, vocab_size) tensors plus the chunk's hidden rows.
    free_bytes defaults to what the device has free now (CUDA's mem_get_info, else the
    system's available RAM). Clamped to [64, 8192] and rounded down to a multiple of 64;
    an explicit override (>= 1) is returned as it is.
    """
    if override is not None:
        if int(override) < 1:
            raise ValueError(f"chunk size must be >= 1, got {override}")
        return int(override)
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    free = _free_bytes(device) if free_bytes is None else int(free_bytes)
    per_row = _WORKING_COPIES * vocab_size * 4 + 4 * max(int(hidden), 0) * 4
    rows = free // _SHARE_OF_FREE // per_row
    rows = rows // CHUNK_MULTIPLE * CHUNK_MULTIPLE
    return int(min(max(rows, MIN_CHUNK), MAX_CHUNK))
