"""Students pruned from a demo's teacher at step 0: parameters, size on disk, quality kept.

For a demo config, builds today's layer-dropping student and pruned students for each target
size x shape (the run's own code: student_prep.derived_student), and measures each before
any training with the run's evaluator. The importance pass is timed (measured once, then
read back from the KD Studio home).

    KDSTUDIO_HOME=/tmp/kdhome-prune .venv/bin/python benchmarks/pruned_students.py \
        resources/demos/causal-lm.toml --sizes 0.5,0.3 --shapes layers,width,both
    ... resources/demos/sentence-embedding.toml --sizes 0.5,0.3 --vocabulary data
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from kdstudio.core.config import load_config
from kdstudio.core.data import load_text_data
from kdstudio.core.distiller import Distiller
from kdstudio.core.evaluation import EvalSet, Evaluator
from kdstudio.core.events import Log
from kdstudio.core.metrics import quality_retained
from kdstudio.core.models import check_compatibility, count_params, load_model, resolve_model_source
from kdstudio.core.student_prep import derived_student, importance_dir
from kdstudio.core.tasks import get_task
from kdstudio.core.teacher_prep import prepared_teacher


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--sizes", default="0.5,0.3")
    ap.add_argument("--shapes", default="layers,width,both")
    ap.add_argument("--vocabulary", default="teacher")
    ap.add_argument("--layer-choice", default="even")
    ap.add_argument("--extra", default="", help="extra students: SECTION.KEY=VALUE;... | ...")
    ap.add_argument("--random", action="store_true",
                    help="also measure each student's shape with fresh random weights (step 0)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(2)
    base = load_config(args.config)
    task = get_task(base.task)
    data = load_text_data(base.data, task, seed=base.training.seed)
    source = resolve_model_source(base.teacher.name)
    teacher = load_model(source, task, label_names=data.label_names, role="teacher")
    device = torch.device("cpu")
    logs: list[str] = []
    ctx = SimpleNamespace(emit=lambda e: logs.append(e.message) if isinstance(e, Log) else None,
                          stop=None, device=device)
    # A classifier's teacher is the one fine-tuned for the task (read back once prepared).
    teacher = prepared_teacher(base, task, teacher, data, ctx)
    teacher.model.eval()
    es = EvalSet(task, data.eval_texts, data.eval_labels, max_samples=base.evaluation.max_samples,
                 max_length=base.data.max_length, pack=base.data.pack,
                 batch_size=base.evaluation.batch_size)
    variants = [("today", [])]
    for t in [float(x) for x in args.sizes.split(",") if x]:
        for s in [x for x in args.shapes.split(",") if x]:
            variants.append((f"{s} {t:.0%}", [f"student.target_size={t}", f'student.shape="{s}"',
                                              f'student.vocabulary="{args.vocabulary}"',
                                              f'student.layer_choice="{args.layer_choice}"']))
    for i, extra in enumerate(x for x in args.extra.split("|") if x.strip()):
        variants.append((f"extra {i + 1}", [a.strip() for a in extra.split(";") if a.strip()]))
    rows = []
    t_metrics = None
    t_size = _saved_size(teacher.model)  # the teacher saved the same way as the students
    for label, overrides in variants:
        cfg = base.with_overrides(overrides) if overrides else base
        logs.clear()
        had = importance_dir(cfg, teacher, data).exists()
        t0 = time.perf_counter()
        torch.manual_seed(cfg.training.seed)
        student, tok, kept, desc = derived_student(cfg, teacher, data, ctx)
        build_s = time.perf_counter() - t0
        student.eval()
        comp = check_compatibility(task, cfg.method, teacher.model, student, teacher.tokenizer, tok)
        dist = Distiller(task, cfg.method, teacher.model, student, kept_layers=kept,
                         vocab_size=comp.vocab_size, chunk=cfg.training.logit_chunk)
        stok = teacher.tokenizer if comp.same_vocab else tok
        ev = Evaluator(task, es, teacher.model, teacher.tokenizer, stok, device, nullcontext,
                       comp.vocab_size, project=dist.project_embedding)
        if t_metrics is None:
            t_metrics = ev.teacher_metrics()
        with torch.no_grad():
            s_metrics = ev.student_metrics(student)
        headline, _ = task.headline(data.eval_labels is not None)
        random_kept = None
        if args.random:  # the same shape and config, fresh random weights
            torch.manual_seed(cfg.training.seed)
            fresh = type(student)(student.config).eval()
            with torch.no_grad():
                random_kept = quality_retained(headline, t_metrics, ev.student_metrics(fresh))
        size = _saved_size(student)
        row = {"student": label, "desc": desc, "params": count_params(student),
               "share": count_params(student) / count_params(teacher.model),
               "size_mb": size / 2**20, "size_share": size / t_size,
               "quality_kept": quality_retained(headline, t_metrics, s_metrics),
               "metrics": s_metrics, "teacher": t_metrics,
               "importance_s": None if had or not importance_dir(cfg, teacher, data).exists()
               else json.loads((importance_dir(cfg, teacher, data) / "importance.json")
                               .read_text())["seconds"],
               "build_s": build_s, "random_quality_kept": random_kept, "notes": [m for m in logs if "unknown" in m or "picks" in m
                                             or "For about" in m]}
        rows.append(row)
        keep = row["quality_kept"]
        print(f"{label:12s} params {row['params']:>11,} ({row['share']:.0%})  disk "
              f"{row['size_mb']:.2f} MB ({row['size_share']:.0%})  quality kept at step 0 "
              f"{keep if keep is None else f'{keep:.1%}'}  "
              + " ".join(f"{k} {v:.4g}" for k, v in s_metrics.items())
              + (f"  [importance pass {row['importance_s']:.1f} s]" if row["importance_s"] else "")
              + (f"  random init: {random_kept:.1%}" if random_kept is not None else ""),
              flush=True)
        for n in row["notes"]:
            print("    " + n, flush=True)
    print("teacher: " + " ".join(f"{k} {v:.4g}" for k, v in (t_metrics or {}).items()))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")


def _saved_size(model: torch.nn.Module) -> int:
    """Bytes of the model's safetensors files as save_pretrained writes them."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors"))


if __name__ == "__main__":
    main()
