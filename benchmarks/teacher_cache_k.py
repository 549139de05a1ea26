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

With --perplexity it instead trains the LM demo's student (everyday-gpt's layers 0, 3 and 5;
the demo's loss: 1.0 x forward KL at T = 2 + 0.5 x next-token cross-entropy; the demo's
packed 128-token training rows, batch 16, AdamW 1e-3, seed 42) once against the teacher's
full logits and once per record encoding (targets written and read back through the
encoder, so quantization counts), in this process, and prints each encoding's bytes per
position (at V = 2,048 and at V = 151,936) and the held-out perplexity change against the
full logits:

    OMP_NUM_THREADS=2 python benchmarks/teacher_cache_k.py --perplexity [--steps 120]
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


# (name, format, k, log-prob bits): format 1 stores the tail's exact shape at T = 2 (a local
# pass only); format 2 stores the tail's mass alone and models its shape (sparse.tail_temper).
ENCODINGS = (("format 1, k=64, 8-bit", 1, 64, 8), ("format 2, k=64, 8-bit", 2, 64, 8),
             ("format 2, k=128, 4-bit", 2, 128, 4),
             ("format 2, k=256, 4-bit", 2, 256, 4), ("format 2, k=256, 3-bit", 2, 256, 3),
             ("format 1, k=1024, 8-bit", 1, 1024, 8))


def demo_rows():
    """The LM demo's teacher, tokenizer, packed training rows (n, 128) and held-out rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from kdstudio.core.config import load_config
    from kdstudio.core.data import load_text_data
    from kdstudio.core.tasks import get_task

    hf_logging.set_verbosity_error()
    cfg = load_config(ROOT / "resources" / "demos" / "causal-lm.toml")
    task = get_task(cfg.task)
    data = load_text_data(cfg.data, task, seed=cfg.training.seed)
    tok = AutoTokenizer.from_pretrained(TEACHER)
    model = AutoModelForCausalLM.from_pretrained(TEACHER).eval()
    rows = []
    for texts in (data.train_texts, data.eval_texts):
        _, make_batch = task.batch_maker(texts, None, student_tok=tok, teacher_tok=tok, same_tok=True,
                                         max_length=cfg.data.max_length, pack=True, device="cpu")
        rows.append(make_batch(list(range(len(make_batch.cache_rows)))).student)
    return model, rows[0], rows[1]


def encoded(teacher: torch.Tensor, fmt: int, k: int, bits: int):
    """The teacher's logits (P, V) through one record encoding and back: (ids, lp, tail, half)."""
    from kdstudio.core.teacher_cache.records import decode_records, encode_records

    out = []
    for i in range(0, teacher.shape[0], 4096):
        ids, lp, tail, half = tc.topk_targets(teacher[i:i + 4096], k)
        rec = encode_records(ids, lp, tail, half, teacher.shape[-1], fmt=fmt, lp_bits=bits)
        out.append(decode_records(torch.from_numpy(rec), teacher.shape[-1], k, fmt=fmt, lp_bits=bits))
    return tuple(torch.cat(x) for x in zip(*out))


def train_ppl(teacher_model, train, held_out, targets, steps: int, temperature: float = 2.0) -> float:
    """Held-out perplexity of the demo's student after `steps` steps against the targets
    (None: the teacher's full logits)."""
    import copy

    from kdstudio.core.models import derive_student

    torch.manual_seed(42)
    student = derive_student(copy.deepcopy(teacher_model), layer_indices=[0, 3, 5]).model
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    ids_all, labels_all = train["input_ids"], train["labels"]
    n, seq = ids_all.shape
    g = torch.Generator().manual_seed(42)
    for step in range(steps):
        idx = torch.randint(0, n, (16,), generator=g)
        ids, labels = ids_all[idx], labels_all[idx]
        z = student(ids, use_cache=False).logits[:, :-1].reshape(-1, student.config.vocab_size)
        y = labels[:, 1:].reshape(-1)
        keep = y != -100
        pos = (idx[:, None] * seq + torch.arange(seq - 1)).reshape(-1)[keep]
        if targets is None:
            kd = dense_kl(z[keep], targets_dense[pos], temperature)
        else:
            t_ids, t_lp, t_tail, t_half = (x[pos] for x in targets)
            kd = tc.sparse_logit_loss(z[keep], t_ids, t_lp, t_tail, tail_log_half=t_half,
                                      temperature=temperature)
        loss = kd + 0.5 * F.cross_entropy(z[keep], y[keep])
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, held_out["input_ids"].shape[0], 32):
            ids, labels = held_out["input_ids"][i:i + 32], held_out["labels"][i:i + 32]
            z = student(ids, use_cache=False).logits[:, :-1]
            y = labels[:, 1:]
            keep = y != -100
            total += F.cross_entropy(z[keep], y[keep], reduction="sum").item()
            count += int(keep.sum())
    return float(torch.tensor(total / count).exp())


targets_dense: torch.Tensor = torch.empty(0)


def perplexity_table(steps: int) -> None:
    global targets_dense
    t0 = time.perf_counter()
    model, train, held_out = demo_rows()
    with torch.no_grad():
        targets_dense = torch.cat([model(train["input_ids"][i:i + 16]).logits
                                   for i in range(0, train["input_ids"].shape[0], 16)])
    n, seq, v = targets_dense.shape
    targets_dense = targets_dense.reshape(-1, v)
    p2 = F.softmax(targets_dense / 2, -1).topk(64, -1).values.sum(-1).mean().item()
    print(f"LM demo: {n} training rows of {seq}, {held_out['input_ids'].shape[0]} held-out rows, "
          f"{steps} steps; the teacher's top 64 hold {p2:.0%} of its probability at T = 2")
    ref = train_ppl(model, train, held_out, None, steps)
    print(f"{'encoding':26} {'B/pos V=2048':>12} {'B/pos V=151936':>14} {'perplexity':>10} {'change':>8}")
    print(f"{'full logits (reference)':26} {v * 4:>12} {151_936 * 4:>14} {ref:>10.3f} {'':>8}")
    for name, fmt, k, bits in ENCODINGS:
        targets = encoded(targets_dense, fmt, k, bits)
        ppl = train_ppl(model, train, held_out, targets, steps)
        print(f"{name:26} {tc.record_bytes(v, k, fmt, bits):>12} "
              f"{tc.record_bytes(151_936, k, fmt, bits):>14} {ppl:>10.3f} {ppl / ref - 1:>+8.2%}",
              flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=400)
    ap.add_argument("--zipf-positions", type=int, default=96)
    ap.add_argument("--perplexity", action="store_true",
                    help="train the LM demo's student per encoding; print bytes and perplexity")
    ap.add_argument("--steps", type=int, default=120, help="--perplexity: training steps per run")
    args = ap.parse_args()
    if args.perplexity:
        perplexity_table(args.steps)
        return
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
