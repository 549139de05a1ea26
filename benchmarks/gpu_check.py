"""The GPU path at a real LLM's shape: Qwen2.5-1.5B into Qwen2.5-0.5B, bf16, 8 x 2048 tokens.

Teacher and student are built from Qwen2 configs with the shapes of Qwen2.5-1.5B (28 layers,
width 1536) and Qwen2.5-0.5B (24 layers, width 896), 151,936-token vocabulary, random
weights (no download). It runs the engine's own objective (core.distiller.Distiller) and
optimizer step (core.loop): bf16 autocast, fused AdamW, gradient checkpointing, the logit
terms chunked (training.logit_chunk = 0: chunk chosen from free memory), forward KL at T = 2
plus 0.5 x next-token loss. Two passes of 20 steps each (after 3 warm-up steps):

  live   the teacher runs beside the student at every step;
  cache  one teacher pass writes its top-64 answers (core.teacher_cache) and the steps read
         them; the write is timed on its own.

For each it prints tokens per second, peak GPU memory, and MFU: model FLOPs per second
(6 x student parameters x tokens for the student's forward and backward, plus 2 x teacher
parameters x tokens for the live teacher's forward, attention excluded) over the GPU's
dense bf16 peak (H100/H200: 989 TFLOP/s; other GPUs: --peak-tflops).

    python benchmarks/gpu_check.py                 # on a CUDA machine
    python benchmarks/gpu_check.py --smoke         # tiny shapes on the CPU: checks the script
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QWEN_15B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                num_attention_heads=12, num_key_value_heads=2)
QWEN_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2)
SMOKE_T = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2)
SMOKE_S = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
               num_attention_heads=2, num_key_value_heads=1)
PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0}


def build(shape: dict, vocab: int, seq: int, device, dtype):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab, max_position_embeddings=max(seq, 32),
                      tie_word_embeddings=shape["hidden_size"] < 1024, **shape)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    return model.to(dtype=dtype)


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAKS.items() if k in name), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    args = ap.parse_args()

    import torch

    from kdstudio.core.config import MethodConfig
    from kdstudio.core.distiller import Distiller
    from kdstudio.core.loop import Optimizer, make_optimizer, optimizer_step
    from kdstudio.core.batch import Batch
    from kdstudio.core.setup import enable_checkpointing
    from kdstudio.core.teacher_cache import TeacherCache, TeacherCacheWriter

    if args.smoke:
        device, vocab = torch.device("cpu"), 151_936
        args.batch, args.seq, args.steps, args.warmup = 2, 64, 2, 1
        t_shape, s_shape, dtype, precision = SMOKE_T, SMOKE_S, torch.float32, "fp32"
        name = "CPU (smoke test)"
    else:
        if not torch.cuda.is_available():
            sys.exit("benchmarks/gpu_check.py needs a CUDA GPU (use --smoke to check the script "
                     "on the CPU).")
        device, vocab = torch.device("cuda"), 151_936
        t_shape, s_shape, dtype, precision = QWEN_15B, QWEN_05B, torch.bfloat16, "bf16"
        name = torch.cuda.get_device_name(0)
    print(f"torch {torch.__version__}, {name}; batch {args.batch} x {args.seq} tokens, "
          f"vocabulary {vocab:,}, {precision}")

    torch.manual_seed(0)
    teacher = build(t_shape, vocab, args.seq, device, dtype).eval().requires_grad_(False)
    student = build(s_shape, vocab, args.seq, device, torch.float32)  # fp32 master weights
    enable_checkpointing(student)
    student.train()
    n_t = sum(p.numel() for p in teacher.parameters())
    n_s = sum(p.numel() for p in student.parameters())
    print(f"teacher {n_t / 1e9:.2f}B parameters, student {n_s / 1e9:.2f}B")

    method = MethodConfig(logit_weight=1.0, hard_label_weight=0.5, temperature=2.0)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" \
        else __import__("contextlib").nullcontext
    rows = args.warmup + args.steps
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, vocab, (rows * args.batch, args.seq), generator=g)

    def batch(i: int) -> Batch:
        ids = data[i * args.batch:(i + 1) * args.batch].to(device)
        b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
        return Batch(b, b, None, ids.numel(), args.batch,
                     rows=list(range(i * args.batch, (i + 1) * args.batch)))

    def run(cache) -> tuple[float, float]:
        distiller = Distiller("causal-lm", method, teacher, student, vocab_size=vocab, chunk=0)
        distiller.cache = cache
        opt_, sched, scaler = make_optimizer(distiller, lr=1e-5, weight_decay=0.0,
                                             scheduler="constant", warmup_steps=0,
                                             total_steps=rows, device=device, precision=precision)
        opt = Optimizer(opt_, sched, scaler, 1.0, autocast)
        for i in range(args.warmup):
            optimizer_step(distiller, [batch(i)], 1, opt)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for i in range(args.warmup, rows):
            losses, *_ = optimizer_step(distiller, [batch(i)], 1, opt)
            if not math.isfinite(losses["total"]):
                sys.exit(f"the loss is not a number at step {i}: {losses}")
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        del opt_, opt, distiller
        return seconds, peak

    tokens = args.steps * args.batch * args.seq
    tflops = peak_tflops(name, args.peak_tflops)

    def report(label: str, seconds: float, peak: float, teacher_runs: bool) -> None:
        flops = 6 * n_s * tokens + (2 * n_t * tokens if teacher_runs else 0)
        mfu = f"{100 * flops / seconds / (tflops * 1e12):.1f}%" if tflops else "n/a (--peak-tflops)"
        print(f"{label:6} {tokens / seconds:10,.0f} tokens/s   peak memory {peak:6.1f} GiB   "
              f"MFU {mfu}   ({seconds:.1f} s for {args.steps} steps)")

    live_s, live_peak = run(None)
    report("live", live_s, live_peak, True)

    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        writer = TeacherCacheWriter({"teacher": "qwen2.5-1.5b-shape", "revision": "", "weights":
                                     "random", "tokenizer": "", "data": "random", "token_ids":
                                     "random", "max_length": args.seq, "pack": True, "k": args.k,
                                     "dtype": str(dtype)}, vocab, root=Path(root))
        with torch.no_grad():
            for i in range(rows):
                b = batch(i)
                with autocast():
                    out = teacher.model(input_ids=b.student["input_ids"])
                hidden = out.last_hidden_state
                mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=device)
                mask[:, -1] = False
                ids = torch.zeros((*hidden.shape[:2], args.k), dtype=torch.long, device=device)
                lps = torch.zeros((*hidden.shape[:2], args.k), device=device)
                tail = torch.zeros(hidden.shape[:2], device=device)
                half = torch.zeros(hidden.shape[:2], device=device)
                from kdstudio.core.teacher_cache import topk_targets
                for r in range(hidden.shape[0]):
                    for s0 in range(0, args.seq - 1, 1024):
                        sl = slice(s0, min(args.seq - 1, s0 + 1024))
                        logits = teacher.lm_head(hidden[r, sl])
                        a, bb, c, d = topk_targets(logits, args.k)
                        ids[r, sl], lps[r, sl], tail[r, sl], half[r, sl] = a, bb, c, d
                writer.add(b.rows, mask, top_ids=ids, top_logprobs=lps, tail_logmass=tail,
                           tail_log_half=half)
        path = writer.finish()
        if device.type == "cuda":
            torch.cuda.synchronize()
        write_s = time.perf_counter() - t0
        cache = TeacherCache(path)
        print(f"cache  written in {write_s:.1f} s: {cache.manifest['bytes'] / 2**20:.1f} MiB, "
              f"{cache.manifest['bytes_per_token']:.0f} bytes per position")
        cache_s, cache_peak = run(cache)
        report("cache", cache_s, cache_peak, False)
    print(f"cache/live: step time {cache_s / live_s:.3f}x, peak memory "
          f"{cache_peak / live_peak if live_peak == live_peak else float('nan'):.3f}x")


if __name__ == "__main__":
    main()
