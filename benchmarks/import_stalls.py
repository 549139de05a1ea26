"""How long each start-up import holds the interpreter's lock: the worst gap it leaves the main
thread, which is what the window would freeze for.

Imports the modules the window warms up in the background (kdstudio.ui.startup.ENGINE_MODULES,
torch first, as the device check does) in a thread, while the main thread wakes every 2 ms and
records its longest wait during each import. Run it in a fresh process; it asserts nothing.

With --app it imports the way the window does: torch's shared libraries loaded first with the
interpreter's lock released (kdstudio/ui/native.py), automatic garbage collection off and each
imported module's objects frozen out of later collections (kdstudio/ui/collector.py; the window
then collects young objects on its own thread). Without it, Python's defaults: the loader holds
the lock, and a full collection, triggered by whichever thread allocates, walks every object.

    .venv/bin/python benchmarks/import_stalls.py [--app] [MODULE ...]
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import PySide6.QtWidgets  # noqa: F401 - the app has Qt loaded before these start

    from kdstudio.ui.collector import freeze_imports
    from kdstudio.ui.startup import ENGINE_MODULES

    args = sys.argv[1:]
    app_gc = "--app" in args
    args = [a for a in args if a != "--app"]
    order = args or ["torch", *ENGINE_MODULES]
    if app_gc:
        gc.disable()  # the window's Collector, without its timer: nothing else allocates here
    current: dict[str, str | None] = {"name": None}
    figures: dict[str, list[float]] = {name: [0.0, 0.0] for name in order}
    done = threading.Event()

    def work() -> None:
        if app_gc:
            from kdstudio.ui.native import preload_torch

            current["name"] = "(torch's libraries, lock released)"
            start = time.perf_counter()
            figures[current["name"]] = [0.0, 0.0]
            print("preloaded:", preload_torch())
            figures[current["name"]][1] = time.perf_counter() - start
        for name in order:
            current["name"] = name
            start = time.perf_counter()
            importlib.import_module(name)
            figures[name][1] = time.perf_counter() - start
            if app_gc:
                freeze_imports()
            current["name"] = None
        done.set()

    threading.Thread(target=work, daemon=True).start()
    last = time.perf_counter()
    while not done.is_set():
        time.sleep(0.002)
        now = time.perf_counter()
        name = current["name"]
        if name:
            figures[name][0] = max(figures[name][0], now - last - 0.002)
        last = now
    print("imports:", "the window's (libraries preloaded, collector off, imports frozen)"
          if app_gc else "Python's defaults")
    for name in figures:
        gap, took = figures[name]
        print(f"{name:45s} worst main-thread gap {gap * 1000:6.0f} ms   import {took:5.2f} s")


if __name__ == "__main__":
    main()
