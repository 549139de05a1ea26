"""How long the GUI thread is blocked while a real distillation runs, and how soon the
window opens.

Opens the main window offscreen, runs the built-in demo for a few steps (with evaluations),
and meanwhile fires a 10 ms QTimer on the GUI thread: each tick's lateness is how long the
event loop was busy. Prints p50/p99/max lateness while idle (the reference, same process),
in the first seconds after Run is pressed (the run's start: loading, tokenizing, the first
evaluation) and while training, and the ratio. Then (unless --no-startup) it starts
`kdstudio --demo` three times as a user would (packaging/build_frozen.py's time_to_window: a
fresh HOME, offscreen) and prints the seconds until the window is shown. It asserts nothing.

    QT_QPA_PLATFORM=offscreen python benchmarks/gui_latency.py [--steps 40] [--no-startup]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--start-window", type=float, default=5.0,
                    help="seconds after Run that count as the run's start")
    ap.add_argument("--idle", type=float, default=3.0,
                    help="seconds of idle reference before Run is pressed")
    ap.add_argument("--no-startup", action="store_true", help="skip timing the window's opening")
    ap.add_argument("--trace", type=float, default=0.0, metavar="MS",
                    help="list each stall over MS ms after Run: when, the run's stage, the threads")
    args = ap.parse_args()
    os.environ["KDSTUDIO_HOME"] = tempfile.mkdtemp(prefix="kd-gui-bench-")
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from kdstudio.ui.main_window import MainWindow

    w = MainWindow(demo=True)
    w.show()
    w.ctx.config = w.ctx.config.with_overrides(
        [f"training.max_steps={args.steps}", "training.eval_every=10", "evaluation.latency_repeats=5"])
    w.ctx.config_replaced.emit()
    clock = QElapsedTimer()
    clock.start()
    samples: dict[str, list[float]] = {"idle": [], "run start": [], "training": []}
    phase = {"name": "idle", "last": clock.nsecsElapsed()}
    steps = []

    def tick() -> None:
        now = clock.nsecsElapsed()
        name = phase["name"]
        if name == "training" and (time.perf_counter() - started["t"]) < args.start_window:
            name = "run start"
        late = max(0.0, (now - phase["last"]) / 1e6 - 10.0)
        samples[name].append(late)
        phase["last"] = now
        if args.trace and name != "idle" and late > args.trace:
            import threading

            stalls.append((time.perf_counter() - started["t"], late, stage[-1] if stage else "",
                           sorted(t.name for t in threading.enumerate())))

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    timer.start()
    w.ctx.run_event.connect(lambda e: steps.append(e) if e.kind == "step" else None)
    stalls: list[tuple[float, float, str, list[str]]] = []
    stage: list[str] = []
    w.ctx.run_event.connect(lambda e: stage.append(e.name) if e.kind == "stage" else None)
    done = []
    started = {}

    def start_training() -> None:  # after 3 s of idle reference
        phase["name"] = "training"
        phase["last"] = clock.nsecsElapsed()
        started["t"] = time.perf_counter()
        w.start_run()

    def finished(result) -> None:
        done.append(time.perf_counter() - started["t"])
        timer.stop()
        QTimer.singleShot(0, app.quit)

    w.ctx.run_finished.connect(finished)
    QTimer.singleShot(int(args.idle * 1000), start_training)
    app.exec()  # the real event loop, as the app runs it
    wall = done[0]
    print(f"Demo run of {len(steps)} steps in {wall:.1f} s with the window open "
          f"({len(samples['training'])} timer ticks while training).")
    print(f"{'':10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, vals in samples.items():
        print(f"{name:10} {statistics.median(vals):8.2f} {percentile(vals, 0.99):8.2f} {max(vals):8.2f}")
    idle99 = max(percentile(samples["idle"], 0.99), 0.01)
    print(f"p99 lateness while training: {percentile(samples['training'], 0.99):.1f} ms "
          f"(budget 50 ms; {percentile(samples['training'], 0.99) / idle99:.1f}x idle p99)")
    print(f"worst stall in the first {args.start_window:g} s after Run: "
          f"{max(samples['run start']):.0f} ms (goal 100 ms)")
    for at, late, name, threads in stalls:
        print(f"  stall of {late:.0f} ms, {at:.2f} s after Run, stage {name or '-'!r}, "
              f"threads: {', '.join(threads)}")
    w.close()
    if not args.no_startup:
        import importlib.util
        import shutil

        spec = importlib.util.spec_from_file_location(
            "build_frozen", Path(__file__).resolve().parent.parent / "packaging" / "build_frozen.py")
        frozen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(frozen)
        program = shutil.which("kdstudio", path=str(Path(sys.executable).parent))
        times = frozen.time_to_window([program], runs=3, settle=1.0)
        print(f"window shown after {', '.join(f'{t:.2f}' for t in times)} s "
              f"(median {statistics.median(times):.2f} s; goal 1 s) for {program} --demo")


if __name__ == "__main__":
    main()
