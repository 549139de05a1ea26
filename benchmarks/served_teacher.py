"""A served teacher against a local one: the LM demo distilled from a teacher behind a
vLLM-style server, and the same run from a cache a local teacher pass wrote.

The server is tests/serve_server.py (a real everyday-gpt answering vLLM's /v1/completions
with prompt_logprobs, or SGLang's /generate) on 127.0.0.1, in this process. Both runs keep
the same k (vLLM's default --max-logprobs, 20), the same seed and steps, and read their
answers from the teacher cache; they differ only in who wrote it. Printed: each student's
held-out perplexity, top-1 agreement and KL to the teacher, the ratio (goal: perplexity
within 0.1%), and the time each took to fill the cache.

    OMP_NUM_THREADS=2 python benchmarks/served_teacher.py [--steps 300] [--k 20] [--protocol vllm]
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


def demo_config(steps: int, k: int, endpoint: str = "", temperature: float | None = None):
    from kdstudio.core.config import load_config

    cfg = load_config(ROOT / "resources" / "demos" / "causal-lm.toml")
    cfg.training.max_steps = steps
    cfg.training.eval_every = 0
    cfg.evaluation.baseline = False
    cfg.evaluation.latency_repeats = 1
    cfg.evaluation.pinned_inputs = []
    cfg.teacher.cache, cfg.teacher.cache_k = "always", k
    cfg.teacher.endpoint = endpoint
    if temperature is not None:
        cfg.method.temperature = temperature
    return cfg


def timed_run(cfg):
    """(summary, seconds the cache pass took, wall seconds) of one run in a fresh home."""
    from kdstudio.core.events import Log, Stage
    from kdstudio.core.trainer import run_training

    marks: dict[str, float] = {}

    def sink(ev):
        if isinstance(ev, Stage) and ev.name == "teacher cache":
            marks["start"] = time.perf_counter()
        if isinstance(ev, Log) and ev.message.startswith("Teacher cache written"):
            marks["end"] = time.perf_counter()
        if isinstance(ev, Log) and ("Served" in ev.message or "served" in ev.message
                                    or ev.level == "warning"):
            print("   log:", ev.message)

    with tempfile.TemporaryDirectory(prefix="kdstudio-bench-") as home:
        os.environ["KDSTUDIO_HOME"] = home
        t0 = time.perf_counter()
        result = run_training(cfg, sink)
        wall = time.perf_counter() - t0
    if result.status != "finished":
        raise SystemExit(f"run {result.status}: {result}")
    return result.summary, marks.get("end", 0) - marks.get("start", 0), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--k", type=int, default=20, help="teacher.cache_k of both runs")
    ap.add_argument("--protocol", choices=("vllm", "sglang"), default="vllm")
    ap.add_argument("--temperature", type=float, default=None,
                    help="method.temperature of both runs (default: the demo's, 2)")
    args = ap.parse_args()
    import torch

    from tests.serve_server import FakeServe

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; "
          f"{args.steps} steps, k = {args.k}, {args.protocol} protocol, temperature "
          f"{args.temperature or 'the demo default'}")
    with FakeServe(protocol=args.protocol) as server:
        served, served_fill, served_wall = timed_run(
            demo_config(args.steps, args.k, server.endpoint, args.temperature))
    local, local_fill, local_wall = timed_run(demo_config(args.steps, args.k,
                                                          temperature=args.temperature))
    a, b = local["student_metrics"], served["student_metrics"]
    print(f"   {'':22}{'local cache':>14}{'served cache':>14}{'ratio':>9}")
    for key, label in (("perplexity", "perplexity"), ("top1_agreement", "top-1 agreement"),
                       ("kl_to_teacher", "KL to teacher")):
        if key in a and key in b:
            print(f"   {label:22}{a[key]:14.4f}{b[key]:14.4f}{b[key] / a[key]:9.5f}")
    print(f"   {'cache fill (s)':22}{local_fill:14.1f}{served_fill:14.1f}"
          f"{served_fill / max(local_fill, 1e-9):9.3f}")
    print(f"   {'run wall (s)':22}{local_wall:14.1f}{served_wall:14.1f}")
    worse = b["perplexity"] / a["perplexity"] - 1
    print(f"   perplexity from the served teacher: {100 * worse:+.3f}% against the local cache "
          "(goal: within 0.1%)")
    for name, s in (("local", local), ("served", served)):
        print(f"   {name} teacher_targets: {s.get('teacher_targets')}")


if __name__ == "__main__":
    main()
