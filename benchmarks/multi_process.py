"""Overhead of 2 processes (DDP, and FSDP2) against 1 on the same global batch (CPU, gloo), and
their parity.

The tiny GPT-2 of the tests (no dropout, packed rows): one process at batch 16 and two
processes at 8 each ('kdstudio run --processes 2'), the same steps. Prints the wall time of
the training steps (from the runs' own step events, so start-up is reported apart), the
ratio, and the largest per-step loss difference. On this 2-core machine the two processes
share the cores a single process would use, so the ratio measures the launcher's and the
collectives' cost, not a speed-up.

    python benchmarks/multi_process.py [--steps 60] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _model(folder: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.conftest import _bpe_tokenizer, _save

    torch.manual_seed(0)
    bpe = _bpe_tokenizer(400)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=32, n_layer=4,
                                   n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                   bos_token_id=bpe.eos_token_id, eos_token_id=bpe.eos_token_id,
                                   pad_token_id=bpe.pad_token_id))
    return _save(m, bpe, folder)


def _run(cfg: Path, home: Path, processes: int, batch: int,
         fsdp: bool = False) -> tuple[float, list[dict]]:
    env = dict(os.environ, KDSTUDIO_HOME=str(home), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kdstudio.cli", "run", str(cfg), "--processes",
                    str(processes), "--set", f"training.batch_size={batch}",
                    *(["--fsdp"] if fsdp else [])], env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    run = max((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return wall, [s for s in steps if s.get("kind") == "step"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16, help="the global batch")
    args = ap.parse_args()
    from tests.conftest import tiny_config

    tmp = Path(tempfile.mkdtemp(prefix="kd-bench-mp-"))
    folder = _model(tmp / "gpt2")
    cfg = tiny_config("causal-lm", folder,
                      training={"max_steps": args.steps, "eval_every": 0, "save_every": 0},
                      data={"pack": True, "max_train_samples": 400}, student={"layers": 2},
                      method={"logit_weight": 1.0, "hard_label_weight": 0.5},
                      evaluation={"baseline": False})
    path = tmp / "run.toml"
    path.write_text(cfg.to_toml())
    wall1, s1 = _run(path, tmp / "home1", 1, args.batch)
    wall2, s2 = _run(path, tmp / "home2", 2, args.batch // 2)
    wall3, s3 = _run(path, tmp / "home3", 2, args.batch // 2, fsdp=True)
    steps1, steps2, steps3 = s1[-1]["elapsed_s"], s2[-1]["elapsed_s"], s3[-1]["elapsed_s"]
    worst3 = max(abs(a["losses"][k] - b["losses"][k]) for a, b in zip(s1, s3) for k in a["losses"])
    worst = max(abs(a["losses"][k] - b["losses"][k]) for a, b in zip(s1, s2) for k in a["losses"])
    print(f"{args.steps} steps at a global batch of {args.batch} (tiny GPT-2, CPU, gloo)")
    print(f"  1 process  x {args.batch:3d}: steps {steps1:6.2f} s ({steps1 / args.steps * 1000:.1f} "
          f"ms/step), whole command {wall1:6.2f} s")
    print(f"  2 processes x {args.batch // 2:3d}: steps {steps2:6.2f} s ({steps2 / args.steps * 1000:.1f} "
          f"ms/step), whole command {wall2:6.2f} s")
    print(f"  2 processes x {args.batch // 2:3d}, FSDP2: steps {steps3:6.2f} s "
          f"({steps3 / args.steps * 1000:.1f} ms/step), whole command {wall3:6.2f} s")
    print(f"  ratio 2/1: steps {steps2 / steps1:.2f}x, whole command {wall2 / wall1:.2f}x; "
          f"FSDP2/1: steps {steps3 / steps1:.2f}x, whole command {wall3 / wall1:.2f}x")
    print(f"  largest per-step loss difference: {worst:.3g} (DDP), {worst3:.3g} (FSDP2)")


if __name__ == "__main__":
    main()
