"""What each causal-LM distillation method costs per training step, against token-level KD.

All cases distil the same teacher into the same derived student on the same data in one
process; the reference is token-level forward KL. On-policy steps include the student's
sampling; sequence-level adds a one-off generation pass, timed separately. It prints
figures and asserts nothing.

    python benchmarks/lm_methods.py [--steps 20] [--device cpu] [--teacher everyday-gpt]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdstudio.core.config import config_from_dict, default_config  # noqa: E402
from kdstudio.core.events import Progress, Stage, Step  # noqa: E402
from kdstudio.core.trainer import run_training  # noqa: E402

CASES = {
    "token-level forward KL (reference)": {},
    "cross-tokenizer loss (ULD) + next-token": {"logit_weight": 0.0, "hard_label_weight": 1.0,
                                                "cross_tokenizer_weight": 1.0},
    "on-policy, lambda = 0.5": {"on_policy_share": 0.5},
    "on-policy, lambda = 1": {"on_policy_share": 1.0},
    "sequence-level (next-token on teacher text)": {"sequence_level": True, "logit_weight": 0.0,
                                                    "hard_label_weight": 1.0},
}


def measure(cfg) -> tuple[float, float, float]:
    """(median ms per step, generation seconds, peak memory MB) of one run."""
    import time

    times: list[float] = []
    gen = {"start": None, "end": None}
    peak = [0.0]

    def sink(e):
        if isinstance(e, Step):
            times.append(cfg.training.batch_size * cfg.training.grad_accum_steps / e.samples_per_s)
            peak[0] = max(peak[0], e.memory_mb)
        elif isinstance(e, Stage) and e.name == "generate":
            gen["start"] = time.perf_counter()
        elif isinstance(e, Progress) and e.stage == "generate" and e.current == e.total:
            gen["end"] = time.perf_counter()

    run_training(cfg, sink)
    warm = times[2:] or times
    g = gen["end"] - gen["start"] if gen["start"] and gen["end"] else 0.0
    return statistics.median(warm) * 1000, g, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--teacher", default="everyday-gpt")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KDSTUDIO_HOME"] = tmp
        print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads; "
              f"teacher {args.teacher} -> 3 layers, batch {args.batch_size} x 64 tokens, "
              f"{args.steps} steps each (first 2 dropped as warm-up)\n")
        ref = None
        for name, method in CASES.items():
            d = default_config("causal-lm").to_dict()
            d["teacher"]["name"] = args.teacher
            d["student"]["layers"] = 3
            d["method"].update(method)
            d["data"].update(max_length=64, eval_fraction=0.2)
            d["generation"].update(prompt_tokens=8, max_new_tokens=24, max_prompts=256)
            d["training"].update(max_steps=args.steps, eval_every=0, device=args.device,
                                 batch_size=args.batch_size)
            d["evaluation"].update(latency_repeats=1, max_samples=16)
            ms, gen_s, peak = measure(config_from_dict(d))
            ref = ref or ms
            extra = f", one-off generation of 256 continuations {gen_s:.1f} s" if gen_s else ""
            print(f"{name:46s} {ms:8.1f} ms/step  x{ms / ref:5.2f}  peak {peak:,.0f} MB{extra}")


if __name__ == "__main__":
    main()
