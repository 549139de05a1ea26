"""What the teacher-logit cache's k costs (bytes per token) and buys (fidelity to the dense loss).

For each k, the built-in everyday-gpt teacher's logits on packed blocks of the built-in
corpus go through the real cache (written, read back, so quantization is included) and
the sparse loss is compared with the dense one for two students: an untrained small
GPT-2 (the start of distillation) and a "half-way" student (0.7 x teacher logits plus
unit noise). Columns: relative error of the loss value and of its gradient on the
student logits (||g_sparse - g_dense|| / ||g_dense||) for forward KL at T = 1 and at the
app's default T = 2, the error of the default causal-lm objective (1.0 x KL at T = 2 +
0.5 x next-token cross-entropy, which the cache leaves exact), how much of the loss error
quantization alone causes, how often the cached top-1 is the teacher's argmax (the
teacher's hard label), and bytes per token on disk. A synthetic Zipf-like teacher over a
151,936-token vocabulary (Qwen-sized) gives the same figures at realistic vocabulary.

    OMP_NUM_THREADS=1 python benchmarks/teacher_cache_k.py [--texts 400] [--zipf-positions 96]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdstudio.core import teacher_cache as tc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEACHER = ROOT / "resources" / "models" / "everyday-gpt"
CORPUS = ROOT / "resources" / "corpus" / "everyday-topics.jsonl"
KS = (8, 16, 32, 64, 128)
DISTILLKIT_BYTES = 300  # their README's recommended format, k = 128


def dense_kl(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    lp_t = F.log_softmax(t / temperature, -1)
    lp_s = F.log_softmax(s / temperature, -1)
    return (lp_t.exp() * (lp_t - lp_s)).sum(-1).mean() * temperature ** 2


def errors(student: torch.Tensor, teacher: torch.Tensor, cached: tuple, temperature: float):
    """(relative loss error, relative gradient error) of the sparse loss against the dense one."""
    s1 = student.clone().requires_grad_(True)
    d = dense_kl(s1, teacher, temperature)
    gd, = torch.autograd.grad(d, s1)
    s2 = student.clone().requires_grad_(True)
    ids, lp, tail, half = cached
    sp = tc.sparse_logit_loss(s2, ids, lp, tail, tail_log_half=half, temperature=temperature)
    gs, = torch.autograd.grad(sp, s2)
    return (sp - d).item() / d.item(), ((gs - gd).norm() / gd.norm()).item(), sp.item(), d.item()


def through_cache(parts_base: dict, k: int, teacher: torch.Tensor, seq: int):
    """Write teacher logits (P, V) as rows of seq positions, read back; (targets, bytes/token)."""
    p, v = teacher.shape
    rows = p // seq
    logits = teacher[:rows * seq].reshape(rows, seq, v)
    parts = dict(parts_base, k=k)
    with tc.TeacherCacheWriter(parts, v, expected_rows=rows) as w:
        for i in range(0, rows, 16):
            chunk = logits[i:i + 16]
            w.add(list(range(i, i + chunk.shape[0])), torch.ones(chunk.shape[:2], dtype=torch.bool), chunk)
    cache = tc.TeacherCache(w.final_dir)
    got = cache.get(list(range(rows)))
    flat = (got.top_ids.reshape(-1, k), got.top_logprobs.reshape(-1, k),
            got.tail_logmass.reshape(-1), got.tail_log_half.reshape(-1))
    return flat, cache.manifest["bytes_per_token"], rows * seq


def everyday_logits(n_texts: int):
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(TEACHER)
    model = AutoModelForCausalLM.from_pretrained(TEACHER).eval()
    texts = [json.loads(line)["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines()][:n_texts]
    stream: list[int] = []
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        stream += ids + [tok.eos_token_id]
    seq = 64  # the teacher's training and evaluation block length
    blocks = torch.tensor([stream[i:i + seq] for i in range(0, len(stream) - seq + 1, seq)])
    torch.manual_seed(0)
    small = GPT2LMHeadModel(GPT2Config(vocab_size=model.config.vocab_size, n_layer=2, n_embd=64,
                                       n_head=2, n_positions=128)).eval()
    with torch.no_grad():
        t = model(blocks).logits
        untrained = small(blocks).logits
    labels = blocks[:, 1:].reshape(-1)
    v = t.shape[-1]
    g = torch.Generator().manual_seed(1)
    halfway = 0.7 * t + torch.randn(t.shape, generator=g)
    return t.reshape(-1, v), {"untrained": untrained.reshape(-1, v), "half-way": halfway.reshape(-1, v)}, \
        blocks, labels, seq


def zipf_logits(positions: int, vocab: int = 151_936):
    """Zipf-like teacher logits: p_r ~ r**-a over a random order, a per position in [1.3, 2.3].

    That spread gives a mean entropy near 2.5 nats, about what LLM teachers show on text.
    """
    g = torch.Generator().manual_seed(2)
    a = 1.3 + 1.0 * torch.rand(positions, 1, generator=g)
    ranks = torch.arange(1, vocab + 1, dtype=torch.float32).log()
    logits = torch.empty(positions, vocab)
    for i in range(positions):
        logits[i, torch.randperm(vocab, generator=g)] = -a[i] * ranks + 0.3 * torch.randn(vocab, generator=g)
    student = 0.7 * logits + torch.randn(logits.shape, generator=g)
    return logits, student


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=400)
    ap.add_argument("--zipf-positions", type=int, default=96)
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="kd-cache-bench-")
    os.environ["KDSTUDIO_HOME"] = home
    try:
        run(args)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    base = {"teacher": "bench", "revision": None, "weights": "w", "tokenizer": "t", "data": "d",
            "token_ids": "ids", "max_length": 64, "pack": True, "dtype": "float32"}

    t0 = time.perf_counter()
    teacher, students, blocks, labels, seq = everyday_logits(args.texts)
    lp_full = F.log_softmax(teacher, -1)
    ent = -(lp_full.exp() * lp_full).sum(-1).mean().item()
    print(f"everyday-gpt (V=2048): {teacher.shape[0]} positions in {blocks.shape[0]} blocks of {seq}, "
          f"teacher entropy {ent:.2f} nats (a flat teacher: the hard case for top-k)")
    # Cross-entropy of each student on the next token: exact with or without the cache.
    keep = torch.ones(blocks.shape, dtype=torch.bool)
    keep[:, -1] = False
    ce = {n: F.cross_entropy(s.reshape(blocks.shape[0], seq, -1)[:, :-1].reshape(-1, s.shape[-1]),
                             labels).item() for n, s in students.items()}
    header = (f"{'k':>4} {'student':>9} | {'T=1 loss':>8} {'T=1 grad':>8} | {'T=2 loss':>8} "
              f"{'T=2 grad':>8} | {'objective':>9} | {'quant':>6} | {'top1=argmax':>11} | "
              f"{'B/tok 2048':>10} {'B/tok 151936':>12}")
    print(header)
    print("-" * len(header))
    rows = []
    for k in KS:
        cached, bpt, _ = through_cache(base, k, teacher, seq)
        exact = tc.topk_targets(teacher, k)
        argmax = (cached[0].gather(-1, cached[1].argmax(-1, keepdim=True))[:, 0] == teacher.argmax(-1)).float().mean().item()
        for name, s in students.items():
            e1, g1, _, _ = errors(s, teacher, cached, 1.0)
            e2, g2, sp2, d2 = errors(s, teacher, cached, 2.0)
            q2 = errors(s, teacher, exact, 2.0)[2]
            obj = (sp2 - d2) / (d2 + 0.5 * ce[name])
            rows.append((k, name, e1, g1, e2, g2, obj))
            print(f"{k:>4} {name:>9} | {e1:>+8.1%} {g1:>8.1%} | {e2:>+8.1%} {g2:>8.1%} | {obj:>+9.1%} | "
                  f"{(sp2 - q2) / d2:>+6.2%} | {argmax:>11.1%} | {bpt:>10.1f} {tc.record_bytes(151_936, k):>12d}")

    zt, zs = zipf_logits(args.zipf_positions)
    lpz = F.log_softmax(zt, -1)
    print(f"\nsynthetic Zipf teacher (V=151,936): {zt.shape[0]} positions, entropy "
          f"{-(lpz.exp() * lpz).sum(-1).mean().item():.2f} nats")
    print(f"{'k':>4} | {'T=1 loss':>8} {'T=1 grad':>8} | {'T=2 loss':>8} {'T=2 grad':>8} | "
          f"{'tail mass':>9} | {'B/tok on disk':>13} {'vs DistillKit':>13}")
    for k in KS:
        cached, bpt, _ = through_cache(dict(base, teacher="zipf"), k, zt, 16)
        e1, g1, _, _ = errors(zs, zt, cached, 1.0)
        e2, g2, _, _ = errors(zs, zt, cached, 2.0)
        tail = cached[2].exp().mean().item()
        print(f"{k:>4} | {e1:>+8.1%} {g1:>8.1%} | {e2:>+8.1%} {g2:>8.1%} | {tail:>9.3f} | "
              f"{bpt:>13.1f} {bpt / DISTILLKIT_BYTES:>12.0%}")

    # Reading speed: a batch of 8 x 512 positions at V = 151,936, k = the default.
    k = tc.DEFAULT_K
    big = torch.randn(8 * 512, 2048)
    ids, lp, tail, half = tc.topk_targets(big, k)
    ids = ids * 74  # spread over a 151,936 vocabulary
    with tc.TeacherCacheWriter(dict(base, teacher="speed", k=k), 151_936) as w:
        w.add(range(8), torch.ones(8, 512, dtype=torch.bool), top_ids=ids.reshape(8, 512, k),
              top_logprobs=lp.reshape(8, 512, k), tail_logmass=tail.reshape(8, 512),
              tail_log_half=half.reshape(8, 512))
    cache = tc.TeacherCache(w.final_dir)
    cache.get(range(8))
    t1 = time.perf_counter()
    for _ in range(5):
        cache.get(range(8))
    ms = (time.perf_counter() - t1) / 5 * 1000
    print(f"\nread + decode of 8 x 512 positions (V=151,936, k={k}) on one CPU thread: {ms:.1f} ms")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
