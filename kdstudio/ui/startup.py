"""Work the window starts in the background once it is up: finding the device (the first
import of torch) and importing the training engine ahead of the first run."""

from __future__ import annotations

import contextlib
import threading

from typing import Any, Callable

from PySide6.QtCore import QTimer

from kdstudio.ui.collector import freeze_imports
from kdstudio.ui.jobs import import_engine


def start_background_work(jobs: Any, show_device: Callable[[str], None]) -> None:
    """Once the window is up (the next turn of its event loop): find the device, which is what
    first imports torch, on the job pool; and warm the engine up on a thread of its own, not the
    pool's two, which the demo teacher's loading may hold."""
    QTimer.singleShot(0, lambda: jobs.submit(describe_device, show_device,
                                             lambda exc: show_device("Device: unknown")))
    QTimer.singleShot(0, lambda: threading.Thread(target=warm_engine, name="warm-engine",
                                                  daemon=True).start())


def describe_device() -> str:
    """The status bar's device text (imports torch, so it runs in a background job)."""
    import torch

    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info(0)
        return f"GPU: {p.name}, {free / 2**30:.1f} of {total / 2**30:.0f} GiB free"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "GPU: Apple Metal (mps)"
    import os

    return f"CPU: {os.cpu_count()} cores (no GPU found)"


# The engine, and what loading any model and tokenizer imports (transformers' model loading
# pulls in torch._dynamo, sympy and the kernels hub: 2.2 s of imports that, left to a run
# started early, held the interpreter's lock in 150-190 ms stretches during "load teacher").
ENGINE_MODULES = ("datasets", "accelerate", "kdstudio.core.setup", "kdstudio.core.evaluation",
                  "kdstudio.core.run_steps", "kdstudio.core.trainer", "tokenizers",
                  "transformers.modeling_utils", "transformers.models.auto.modeling_auto",
                  "transformers.models.auto.tokenization_auto")


# Set once the warm-up has run in this process (a second window does not run it again).
ENGINE_WARM = threading.Event()


def warm_engine() -> None:
    """Import the training engine ahead of the first run, in a background thread, once per
    process. An import holds the interpreter's lock while extension modules load: left to the
    run's own thread, it froze the window for about a quarter of a second when Run was pressed
    (benchmarks/gui_latency.py). Each module's objects are frozen out of later collections as
    it arrives (a full collection over them held the lock for about 200 ms; the few garbage
    objects alive at those moments stay for good, a one-off cost)."""
    import importlib

    if ENGINE_WARM.is_set():
        return
    try:
        with contextlib.suppress(Exception):  # a missing part is the run's to report, not this
            import_engine()  # torch and transformers first, under the jobs' lock
            freeze_imports()
            for name in ENGINE_MODULES:
                importlib.import_module(name)
                freeze_imports()
    finally:
        ENGINE_WARM.set()
