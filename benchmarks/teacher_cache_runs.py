"""The teacher cache in real runs: what it costs in quality and what it saves in time.

1. The LM demo (resources/demos/causal-lm.toml, its baseline off) trained twice in this
   process, with the live teacher and reading a top-k cache: the held-out perplexity,
   top-1 agreement and KL of each student, their ratio (goal: the cached student at most 1%
   worse in perplexity), the cache's bytes per position and each run's wall time.
2. A sweep of 4 derived students (1, 2, 3 and 4 of the teacher's 6 layers) on the same
   demo, once with the live teacher (teacher.cache = "never") and once sharing one cache
   (the sweep's default): wall time of each sweep and their ratio (goal: <= 0.6).

Each part runs in a fresh KD Studio home, so no cache is reused from outside.

    OMP_NUM_THREADS=2 python benchmarks/teacher_cache_runs.py [--steps 300] [--sweep-steps 150] [--k 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def demo_config(steps: int, cache: str, k: int):
    from kdstudio.core.config import load_config

    cfg = load_config(ROOT / "resources" / "demos" / "causal-lm.toml")
    cfg.training.max_steps = steps
    cfg.training.eval_every = 0
    cfg.evaluation.baseline = False
    cfg.evaluation.latency_repeats = 1
    cfg.evaluation.pinned_inputs = []
    cfg.teacher.cache, cfg.teacher.cache_k = cache, k
    return cfg


def in_fresh_home(fn):
    with tempfile.TemporaryDirectory(prefix="kdstudio-bench-") as home:
        os.environ["KDSTUDIO_HOME"] = home
        return fn()


def part_quality(steps: int, k: int) -> None:
    from kdstudio.core.teacher_cache import list_caches
    from kdstudio.core.trainer import run_training

    rows = {}
    bytes_per = None
    asked_k = k
    for cache in ("never", "always"):
        def go(cache=cache):
            t0 = time.perf_counter()
            result = run_training(demo_config(steps, cache, k))
            wall = time.perf_counter() - t0
            caches = list_caches()
            return result.summary, wall, caches[0].bytes_per_token if caches else None
        summary, wall, bpt = in_fresh_home(go)
        rows[cache] = (summary["student_metrics"], wall, summary["teacher_targets"]["mode"])
        bytes_per = bpt or bytes_per
        k = summary["teacher_targets"].get("k", k)
    live, cached = rows["never"][0], rows["always"][0]
    print(f"1. LM demo, {steps} steps, k = {k} (cache: {bytes_per:.0f} bytes per position)"
          + (" chosen by coverage" if not asked_k else ""))
    print(f"   {'':22}{'live teacher':>14}{'teacher cache':>15}{'ratio':>8}")
    for key, label in (("perplexity", "perplexity"), ("top1_agreement", "top-1 agreement"),
                       ("kl_to_teacher", "KL to teacher")):
        a, b = live[key], cached[key]
        print(f"   {label:22}{a:14.4f}{b:15.4f}{b / a:8.4f}")
    print(f"   {'wall time (s)':22}{rows['never'][1]:14.1f}{rows['always'][1]:15.1f}"
          f"{rows['always'][1] / rows['never'][1]:8.3f}")
    worse = cached["perplexity"] / live["perplexity"] - 1
    print(f"   perplexity with the cache: {100 * worse:+.2f}% against the live teacher "
          f"(goal: at most +1%)")


def part_sweep(steps: int, k: int) -> None:
    from kdstudio.core.sweep.queue import run_sweep
    from kdstudio.core.sweep.spec import derived
    from kdstudio.core.sweep.store import Sweep

    walls = {}
    for cache in ("never", "auto"):
        def go(cache=cache):
            sweep = Sweep.new(demo_config(steps, cache, k), derived(1, 2, 3, 4), teacher_layers=6)
            t0 = time.perf_counter()
            result = run_sweep(sweep)
            assert result.status == "finished", result.status
            return time.perf_counter() - t0, [e.wall_s for e in sweep.entries]
        walls[cache] = in_fresh_home(go)
    (live, live_each), (cached, cached_each) = walls["never"], walls["auto"]
    print(f"2. Sweep of 4 students (1-4 of 6 layers), {steps} steps each")
    print(f"   live teacher:  {live:7.1f} s  (per student: {', '.join(f'{w:.1f}' for w in live_each)})")
    print(f"   teacher cache: {cached:7.1f} s  (per student: {', '.join(f'{w:.1f}' for w in cached_each)};"
          " the first also writes the cache)")
    print(f"   ratio cache / live: {cached / live:.3f} (goal: <= 0.6)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="steps of each demo run (part 1)")
    ap.add_argument("--sweep-steps", type=int, default=150, help="steps of each sweep student")
    ap.add_argument("--k", type=int, default=0, help="teacher.cache_k (0: chosen by coverage)")
    ap.add_argument("--only", choices=("quality", "sweep"), default=None)
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if args.only in (None, "quality"):
        part_quality(args.steps, args.k)
    if args.only in (None, "sweep"):
        part_sweep(args.sweep_steps, args.k)


if __name__ == "__main__":
    main()
