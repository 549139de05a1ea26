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


def demo_config(steps: int, k: int, endpoint: str = "", temperature: float | None = None,
                eval_samples: int = 0):
    """teacher_cache_runs.py's LM-demo config (cache 'always' at k), served from endpoint."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from teacher_cache_runs import demo_config as cached_demo_config

    cfg = cached_demo_config(steps, "always", k)
    cfg.teacher.endpoint = endpoint
    if temperature is not None:
        cfg.method.temperature = temperature
    cfg.evaluation.max_samples = eval_samples
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


def fill_only(k: int, protocol: str, concurrency: int) -> None:
    """Only the cache fill, on the demo's training rows: a local teacher pass against the
    served pass, each into a fresh home, in this process."""
    import contextlib

    from kdstudio.core.config import load_config
    from kdstudio.core.data import load_text_data
    from kdstudio.core.tasks import get_task
    from kdstudio.core.teacher_serve import TeacherServer, write_served_cache
    from kdstudio.core.teacher_source import key_parts, write_cache
    from tests.serve_server import FakeServe

    cfg = load_config(ROOT / "resources" / "demos" / "causal-lm.toml")
    task = get_task(cfg.task)
    data = load_text_data(cfg.data, task, seed=cfg.training.seed)
    with FakeServe(protocol=protocol) as server:
        tok = server.tokenizer
        n, make_batch = task.batch_maker(data.train_texts, None, student_tok=tok, teacher_tok=tok,
                                         same_tok=True, max_length=cfg.data.max_length,
                                         pack=cfg.data.pack, device="cpu")
        rows, vocab = make_batch.cache_rows, len(tok)
        bs = cfg.training.batch_size
        with tempfile.TemporaryDirectory() as home:
            os.environ["KDSTUDIO_HOME"] = home
            t0 = time.perf_counter()
            write_cache(key_parts(cfg, "local", tok, rows, "float32", k), rows, make_batch,
                        server.model, task, vocab, batch_size=bs, autocast=contextlib.nullcontext,
                        emit=lambda e: None, stop=None)
            local = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as home:
            os.environ["KDSTUDIO_HOME"] = home
            with TeacherServer(server.endpoint, server.name, concurrency=concurrency) as c:
                c.connect()
                t0 = time.perf_counter()
                write_served_cache(key_parts(cfg, "served", tok, rows, "served", k), n,
                                   make_batch, c, vocab, batch_size=bs, emit=lambda e: None,
                                   stop=None, concurrency=concurrency)
                served = time.perf_counter() - t0
    print(f"   cache fill, {n} rows of {cfg.data.max_length} tokens, k = {k}: local teacher pass "
          f"{local:.1f} s, served ({protocol}, {concurrency} at once) {served:.1f} s, "
          f"ratio {served / local:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--k", type=int, default=20, help="teacher.cache_k of both runs")
    ap.add_argument("--protocol", choices=("vllm", "sglang"), default="vllm")
    ap.add_argument("--temperature", type=float, default=None,
                    help="method.temperature of both runs (default: the demo's, 2)")
    ap.add_argument("--eval-samples", type=int, default=0,
                    help="evaluation.max_samples of both runs (0: all 340 held-out sentences)")
    ap.add_argument("--fill-only", action="store_true", help="time only the cache fill")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight (fill-only)")
    args = ap.parse_args()
    import torch

    if args.fill_only:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
        fill_only(args.k, args.protocol, args.concurrency)
        return

    from tests.serve_server import FakeServe

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; "
          f"{args.steps} steps, k = {args.k}, {args.protocol} protocol, temperature "
          f"{args.temperature or 'the demo default'}")
    with FakeServe(protocol=args.protocol) as server:
        served, served_fill, served_wall = timed_run(
            demo_config(args.steps, args.k, server.endpoint, args.temperature, args.eval_samples))
    local, local_fill, local_wall = timed_run(demo_config(args.steps, args.k,
                                                          temperature=args.temperature,
                                                          eval_samples=args.eval_samples))
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
