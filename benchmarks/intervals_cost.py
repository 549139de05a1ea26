"""What the 95% intervals (intervals.py) cost at the end of an evaluation, against the
evaluation itself, at the sizes the product meets.

- The embedding demo: its teacher (all-MiniLM-L6-v2), its 3-layer student and its held-out
  rows (340 sentences), through the run's own Evaluator: the student's measurement, then
  Evaluator.intervals (cosine, neighbour agreement, topic accuracy, Spearman, the paired
  quality retained).
- A language model's 2,000 blocks: the intervals of perplexity, agreement and KL per block
  and the paired quality retained, against the forward passes of a tiny 2-layer GPT-2 over
  the same 2,000 blocks of 128 tokens. The bootstrap's cost depends on the blocks alone; any
  real language model's evaluation takes longer than this tiny one, so this ratio is an
  upper bound.

Each figure is the median of --repeats timings. It prints figures and asserts nothing.

    python benchmarks/intervals_cost.py [--repeats 3] [--blocks 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdstudio.core.config import load_config  # noqa: E402
from kdstudio.core.data import load_text_data  # noqa: E402
from kdstudio.core.evaluation import EvalSet, Evaluator  # noqa: E402
from kdstudio.core.intervals import Ratio, intervals, paired_interval  # noqa: E402
from kdstudio.core.models import derive_student, load_model, resolve_model_source  # noqa: E402
from kdstudio.core.tasks import get_task  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "resources" / "demos" / "sentence-embedding.toml"


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def embedding_demo(repeats: int) -> tuple[int, float, float]:
    cfg = load_config(DEMO)
    task = get_task(cfg.task)
    data = load_text_data(cfg.data, task, seed=cfg.training.seed)
    teacher = load_model(resolve_model_source(cfg.teacher.name), task, role="teacher")
    teacher.model.eval()
    student = derive_student(teacher.model, layers=cfg.student.layers).model.eval()
    es = EvalSet(task, data.eval_texts, data.eval_labels, max_samples=cfg.evaluation.max_samples,
                 max_length=cfg.data.max_length, pack=cfg.data.pack,
                 batch_size=cfg.evaluation.batch_size)
    ev = Evaluator(task, es, teacher.model, teacher.tokenizer, teacher.tokenizer,
                   torch.device("cpu"))
    ev.teacher_metrics()
    headline, _ = task.headline(data.eval_labels is not None)
    ev.intervals(headline)  # the teacher's intervals are taken once, at the first evaluation
    with torch.no_grad():
        measure = _median_s(lambda: ev.student_metrics(student), repeats)
    bootstrap = _median_s(lambda: ev.intervals(headline), repeats)
    return len(es.texts), measure, bootstrap


def lm_blocks(blocks: int, repeats: int) -> tuple[float, float]:
    from transformers import GPT2Config, GPT2LMHeadModel

    g = torch.Generator().manual_seed(0)
    tokens = torch.full((blocks,), 127.0, dtype=torch.float64)
    nll = tokens * (3.0 + torch.rand(blocks, generator=g, dtype=torch.float64))
    t_nll = tokens * (2.5 + torch.rand(blocks, generator=g, dtype=torch.float64))
    right = (tokens * torch.rand(blocks, generator=g, dtype=torch.float64)).round()
    kl = tokens * torch.rand(blocks, generator=g, dtype=torch.float64)
    student = {"perplexity": Ratio(nll, tokens, exp=True), "top1_agreement": Ratio(right, tokens),
               "kl_to_teacher": Ratio(kl, tokens)}
    teacher = Ratio(t_nll, tokens, exp=True)

    def bootstrap() -> None:
        intervals(student)
        paired_interval(teacher, student["perplexity"])
    cost = _median_s(bootstrap, repeats)

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=128, n_head=2, vocab_size=5000,
                                       n_positions=128)).eval()
    ids = torch.randint(5000, (blocks, 128), generator=g)

    @torch.no_grad()
    def forwards() -> None:
        for i in range(0, blocks, 16):
            b = ids[i:i + 16]
            model(input_ids=b, labels=b)
    return _median_s(forwards, 1), cost


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows, measure, cost = embedding_demo(args.repeats)
    print(f"embedding demo, {rows} held-out rows: student measurement {measure:.3f} s, "
          f"intervals {cost:.3f} s ({cost / measure:.0%} of the measurement)")
    forwards, cost = lm_blocks(args.blocks, args.repeats)
    print(f"language model, {args.blocks} blocks: intervals {cost:.3f} s; a 2-layer 128-wide "
          f"GPT-2's forward passes over them {forwards:.2f} s ({cost / forwards:.1%})")


if __name__ == "__main__":
    main()
