"""Peak memory and time of one causal-LM distillation step: full logits against chunked.

A tiny Qwen2-shaped student (vocab 151,936, hidden 64, 2 layers, tied head as in
Qwen2.5-0.5B: ~10M parameters) learns from a wider same-vocab teacher. One step is the
teacher's forward (no grad), the student's forward, the forward-KL logit loss and the
backward. "today" takes model(...).logits and losses.logit_distillation_loss; "chunked"
takes the bodies' last hidden states and core.chunked with the head weights. Each
configuration runs in a fresh process; its peak is the resident-set high-water mark of
the measured step above the resident set just before it. It prints figures and asserts
nothing.

    OMP_NUM_THREADS=1 python benchmarks/chunked_memory.py [--shapes 2x512,4x512,8x512] [--repeats 3]

Each process may use at most 3/4 of the memory available when it starts; a step that
needs more is reported as failed (today's path at 8x512 needs ~16 GB).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdstudio.core.chunk_size import auto_chunk_size  # noqa: E402
from kdstudio.core.chunked import chunked_distillation_loss  # noqa: E402
from kdstudio.core.losses import logit_distillation_loss  # noqa: E402

VOCAB = 151_936
STUDENT = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2}
TEACHER = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
           "num_attention_heads": 4, "num_key_value_heads": 2}


def _models():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)

    def build(shape):
        cfg = Qwen2Config(vocab_size=VOCAB, max_position_embeddings=4096,
                          tie_word_embeddings=True, attn_implementation="sdpa", **shape)
        return Qwen2ForCausalLM(cfg)

    student, teacher = build(STUDENT), build(TEACHER).eval()
    teacher.requires_grad_(False)
    return student, teacher


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+)", f.read(), re.MULTILINE).group(1))


def _reset_peak() -> bool:
    try:  # "5" resets VmHWM to the current resident set (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _limit_memory() -> None:
    # A hard cap turns a step too large for this machine into an error, not the OOM killer
    # (which could pick another process).
    cap = int(_available_bytes() * 0.75)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.RLIM_INFINITY))


def _step_fn(path: str, batch: int, seq: int, chunk: int, student, teacher):
    ids = torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(1))
    labels = ids[:, 1:]
    mask = labels != -100  # packed blocks keep every position, as the engine's LM batches do

    def step() -> float:
        student.zero_grad(set_to_none=True)  # the step allocates its own grads, as in training
        if path == "today":
            with torch.no_grad():
                t = teacher(input_ids=ids).logits
            s = student(input_ids=ids).logits
            loss = logit_distillation_loss(s[:, :-1], t[:, :-1], mask=mask)
        else:
            with torch.no_grad():
                th = teacher.model(input_ids=ids).last_hidden_state[:, :-1].flatten(0, 1)
            sh = student.model(input_ids=ids).last_hidden_state[:, :-1].flatten(0, 1)
            loss = chunked_distillation_loss(
                sh, student.lm_head.weight, None, lambda pos: teacher.lm_head(th[pos]),
                weights={"logit": 1.0}, mask=mask.flatten(), chunk_size=chunk).total
        loss.backward()
        return float(loss.detach())

    return step


def _release_free_heap() -> None:
    # glibc keeps freed small blocks resident; without this the warm-up step's leftovers
    # would count as "before" and hide what the measured step needs.
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure may then read low
        pass


def memory_child(path: str, batch: int, seq: int, chunk: int) -> dict:
    """Peak MB of one step above the resident set before it (after one warm-up step)."""
    _limit_memory()
    step = _step_fn(path, batch, seq, chunk, *_models())
    step()  # warms thread pools and the allocator
    _release_free_heap()
    exact = _reset_peak()
    before = _status_kb("VmRSS")
    loss = step()
    peak_kb = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": (peak_kb - before) / 1024, "loss": loss, "exact_peak": exact}


def time_child(batch: int, seq: int, chunk: int, repeats: int) -> dict:
    """Median seconds per step of each path, the paths taking turns so load hits both alike."""
    _limit_memory()
    student, teacher = _models()
    steps = {p: _step_fn(p, batch, seq, chunk, student, teacher) for p in ("today", "chunked")}
    times: dict[str, list[float]] = {p: [] for p in steps}
    failed: set[str] = set()
    for i in range(repeats + 1):
        for p, step in steps.items():
            if p in failed:
                continue
            t0 = time.perf_counter()
            try:
                step()
            except RuntimeError:  # over the memory cap: time the other path alone
                failed.add(p)
                continue
            if i:  # round 0 is the warm-up
                times[p].append(time.perf_counter() - t0)
    return {p: statistics.median(t) if t else None for p, t in times.items()}


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        return int(re.search(r"^MemAvailable:\s+(\d+)", f.read(), re.MULTILINE).group(1)) * 1024


def _run(args: list[str]) -> dict | str:
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                       check=False)
    if r.returncode:
        return "failed: " + ((r.stderr.strip().splitlines() or ["?"])[-1])[:100]
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="2x512,4x512,8x512", help="batch x seq, comma separated")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per path and shape")
    ap.add_argument("--chunk", type=int, default=0, help="positions per chunk (0: auto)")
    ap.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--time-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        p, b, s, c = args.memory_child
        print(json.dumps(memory_child(p, int(b), int(s), int(c))))
        return
    if args.time_child:
        b, s, c = (int(x) for x in args.time_child)
        print(json.dumps(time_child(b, s, c, args.repeats)))
        return

    # One chunk size for every process, so the slope measures tokens and not a chunk change.
    chunk = args.chunk or auto_chunk_size(VOCAB, STUDENT["hidden_size"])
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    print(f"vocab {VOCAB}, student {STUDENT}, teacher {TEACHER}, chunk {chunk} positions, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch {torch.__version__}")
    mem = {(p, b, s): _run(["--memory-child", p, str(b), str(s), str(chunk)])
           for p in ("today", "chunked") for b, s in shapes}
    tim = {(b, s): _run(["--repeats", str(args.repeats), "--time-child", str(b), str(s), str(chunk)])
           for b, s in shapes}

    head = (f"{'path':8} {'batch':>7} {'tokens':>6} {'peak MB':>9} {'KB/extra tok':>12} "
            f"{'step s':>7} {'loss':>8} {'peak ratio':>10} {'time ratio':>10}")
    print(head)
    print("-" * len(head))
    for p in ("today", "chunked"):
        prev = None
        for b, s in shapes:
            r, t, base = mem[(p, b, s)], tim[(b, s)], mem[("today", b, s)]
            tokens = b * s
            if isinstance(r, str):
                print(f"{p:8} {f'{b}x{s}':>7} {tokens:6d} {r}")
                prev = None
                continue
            slope = (f"{(r['peak_mb'] - prev[1]) * 1024 / (tokens - prev[0]):12.1f}"
                     if prev and tokens != prev[0] else f"{'':12}")
            t = t if isinstance(t, dict) else {}
            step_s = f"{t[p]:7.2f}" if t.get(p) else f"{'-':>7}"
            peak_ratio = (f"{r['peak_mb'] / base['peak_mb']:10.3f}"
                          if p != "today" and isinstance(base, dict) else f"{'':10}")
            time_ratio = (f"{t['chunked'] / t['today']:10.3f}"
                          if p != "today" and t.get("today") and t.get(p) else f"{'':10}")
            print(f"{p:8} {f'{b}x{s}':>7} {tokens:6d} {r['peak_mb']:9.1f} {slope} {step_s} "
                  f"{r['loss']:8.4f} {peak_ratio} {time_ratio}")
            prev = (tokens, r["peak_mb"])
    for (b, s), t in tim.items():
        if isinstance(t, str):
            print(f"timing {b}x{s}: {t}")


if __name__ == "__main__":
    main()
