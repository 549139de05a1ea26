"""Peak memory of the LM demo three ways, each in a child process of its own (peak RSS, as
the kernel counts it for that process), in one benchmark run so the figures compare:

1. live teacher: the demo with teacher.cache = "never" (the teacher runs at every step and
   is measured live);
2. cache-only: the demo reading a teacher cache that a first run wrote (that first run is
   not measured): the teacher's weights are not kept, the steps and the measurements read its
   cached answers and figures;
3. the student alone: the demo's student (saved by the cache-only run) trained on the same
   rows with the next-token loss, no teacher at all, then measured on the evaluation rows.

Every child trains the same number of steps at the demo's batch and length, with the baseline
off, in a fresh KD Studio home shared by 2 and 3.

    OMP_NUM_THREADS=2 python benchmarks/cache_only_memory.py [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def demo_config(steps: int, cache: str):
    from kdstudio.core.config import load_config

    cfg = load_config(ROOT / "resources" / "demos" / "causal-lm.toml")
    cfg.training.max_steps, cfg.training.eval_every = steps, 0
    cfg.evaluation.baseline = False
    cfg.evaluation.latency_repeats = 1
    cfg.teacher.cache = cache
    return cfg


def child_run(steps: int, cache: str) -> dict:
    from kdstudio.core.trainer import run_training

    r = run_training(demo_config(steps, cache))
    s = r.summary
    return {"run_dir": str(r.run_dir), "perplexity": s["student_metrics"]["perplexity"],
            "teacher": s.get("teacher_targets", {}).get("why", "")}


def child_student(steps: int, folder: str) -> dict:
    """The demo's student alone: next-token loss on the demo's rows, then its perplexity."""
    import math

    import torch

    from kdstudio.core.batch import causal_blocks, collate_blocks
    from kdstudio.core.data import load_text_data
    from kdstudio.core.models import load_model
    from kdstudio.core.tasks import get_task

    cfg = demo_config(steps, "never")
    task = get_task(cfg.task)
    torch.manual_seed(cfg.training.seed)
    data = load_text_data(cfg.data, task, seed=cfg.training.seed)
    loaded = load_model(folder, task, role="student")
    model, tok = loaded.model.float(), loaded.tokenizer
    _, make = task.batch_maker(data.train_texts, None, student_tok=tok, teacher_tok=tok,
                               same_tok=True, max_length=cfg.data.max_length, pack=True,
                               device="cpu")
    n = len(make.cache_rows)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.training.learning_rate)
    model.train()
    bs = cfg.training.batch_size
    for step in range(steps):
        idx = [(step * bs + i) % n for i in range(bs)]
        b = make(idx).student
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    nll, count = 0.0, 0
    blocks = causal_blocks(tok, data.eval_texts, cfg.data.max_length, True)
    with torch.no_grad():
        for i in range(0, len(blocks), cfg.evaluation.batch_size):
            b = collate_blocks(blocks[i:i + cfg.evaluation.batch_size], tok.pad_token_id)
            kept = int((b["labels"][:, 1:] != -100).sum())
            nll += float(model(**b).loss) * kept
            count += kept
    return {"perplexity": math.exp(nll / max(count, 1))}


def in_child(args: list[str], home: str) -> dict:
    env = {**os.environ, "KDSTUDIO_HOME": home}
    out = subprocess.run([sys.executable, __file__, *args], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--child", choices=["live", "cache", "student"])
    p.add_argument("--folder", default="")
    a = p.parse_args()
    if a.child:
        out = (child_student(a.steps, a.folder) if a.child == "student"
               else child_run(a.steps, "never" if a.child == "live" else "always"))
        # ru_maxrss is in KiB on Linux: this process's peak resident memory.
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    steps = str(a.steps)
    print(f"LM demo, {a.steps} steps at the demo's batch and length, each in its own process "
          "(peak RSS), each line as soon as it is measured (a cut-off run keeps its figures):",
          flush=True)
    print(f"  {'':38}{'peak MB':>9}{'perplexity':>12}", flush=True)

    def show(label: str, r: dict) -> dict:
        print(f"  {label:38}{r['peak_mb']:9.0f}{r['perplexity']:12.2f}", flush=True)
        return r

    with tempfile.TemporaryDirectory(prefix="kdstudio-bench-") as live_home, \
            tempfile.TemporaryDirectory(prefix="kdstudio-bench-") as home:
        live = show("live teacher", in_child(["--child", "live", "--steps", steps], live_home))
        first = show("(first cached run, writes the cache)",
                     in_child(["--child", "cache", "--steps", steps], home))
        cached = show("cache-only", in_child(["--child", "cache", "--steps", steps], home))
        alone = show("student alone", in_child(["--child", "student", "--steps", steps,
                                                "--folder",
                                                str(Path(cached["run_dir"]) / "student")], home))
    print("  against the student alone: " + ", ".join(
        f"{label} x{r['peak_mb'] / alone['peak_mb']:.3f}"
        for label, r in (("live teacher", live), ("cache-only", cached),
                         ("first cached run", first))))
    print(f"  cache-only run: {cached['teacher']}")

if __name__ == "__main__":
    main()
