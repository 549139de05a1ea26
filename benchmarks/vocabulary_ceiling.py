"""What cutting the vocabulary to the training data costs by itself: the teacher, every layer
and channel kept, read through the cut vocabulary, measured with the run's own evaluator on the
demo's held-out rows. No student can keep more of the teacher than this at any size once its
vocabulary is cut the same way.

Two ways of reading a word the cut vocabulary lacks:
- "split": KD Studio's cut (student.vocabulary = "data"): the word is spelt with the kept
  WordPiece pieces, or read as [UNK] when it cannot be;
- "nearest": each dropped token is read as the kept token whose teacher embedding is closest
  by cosine (an alternative not in the product, measured here to see what it would be worth).

    .venv/bin/python benchmarks/vocabulary_ceiling.py resources/demos/sentence-embedding.toml

It prints the teacher's figures, each way's figures and the quality kept; it asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdstudio.core.config import load_config  # noqa: E402
from kdstudio.core.data import load_text_data  # noqa: E402
from kdstudio.core.evaluation import EvalSet, Evaluator  # noqa: E402
from kdstudio.core.metrics import quality_retained  # noqa: E402
from kdstudio.core.models import (  # noqa: E402
    check_compatibility,
    load_model,
    resolve_model_source,
)
from kdstudio.core.student_prep import data_vocabulary, trimmed_tokenizer, unknown_share  # noqa: E402
from kdstudio.core.tasks import get_task  # noqa: E402
from kdstudio.core.teacher_prep import prepared_teacher  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(args.config)
    task = get_task(cfg.task)
    data = load_text_data(cfg.data, task, seed=cfg.training.seed)
    teacher = load_model(resolve_model_source(cfg.teacher.name), task,
                         label_names=data.label_names, role="teacher")
    ctx = SimpleNamespace(emit=lambda e: None, stop=None, device=torch.device("cpu"))
    teacher = prepared_teacher(cfg, task, teacher, data, ctx)  # a classifier's fine-tuned one
    teacher.model.eval()
    tok = teacher.tokenizer
    es = EvalSet(task, data.eval_texts, data.eval_labels, max_samples=cfg.evaluation.max_samples,
                 max_length=cfg.data.max_length, pack=cfg.data.pack,
                 batch_size=cfg.evaluation.batch_size)
    keep = data_vocabulary(tok, data.train_texts, cfg.data.max_length)
    cut = trimmed_tokenizer(tok, keep)
    changed, unknown, total = unknown_share(tok, cut, data.eval_texts, cfg.data.max_length, keep)
    print(f"vocabulary cut to the {len(data.train_texts):,} training rows: {len(keep):,} of "
          f"{len(tok):,} tokens; of {total:,} held-out tokens {changed / total:.1%} are in words "
          f"read differently, {unknown / total:.1%} in words read as [UNK]")

    emb = teacher.model.get_input_embeddings().weight.detach()
    kept = torch.tensor(keep)
    # "split": the teacher reads the cut tokenizer's ids mapped back to its own rows.
    split_model = copy.deepcopy(teacher.model)
    split_model.resize_token_embeddings(len(keep))
    split_model.get_input_embeddings().weight.data.copy_(emb[kept])
    # "nearest": every teacher id reads the closest kept row, through the teacher's tokenizer.
    unit = torch.nn.functional.normalize(emb, dim=1)
    nearest = kept[torch.cat([(unit[i:i + 4096] @ unit[kept].T).argmax(1)
                              for i in range(0, len(unit), 4096)])]
    near_model = copy.deepcopy(teacher.model)
    near_model.get_input_embeddings().weight.data.copy_(emb[nearest])

    headline, _ = task.headline(data.eval_labels is not None)
    t_metrics = None
    for name, model, stok in (("split (KD Studio's cut)", split_model, cut),
                              ("nearest kept token", near_model, tok)):
        comp = check_compatibility(task, cfg.method, teacher.model, model, tok, stok)
        ev = Evaluator(task, es, teacher.model, tok, stok, ctx.device, nullcontext,
                       comp.vocab_size)
        if t_metrics is None:
            t_metrics = ev.teacher_metrics()
            print("teacher: " + " ".join(f"{k} {v:.4g}" for k, v in t_metrics.items()))
        with torch.no_grad():
            m = ev.student_metrics(model.eval())
        kept_q = quality_retained(headline, t_metrics, m)
        print(f"{name:24s} kept {kept_q:.1%} ({headline})  "
              + " ".join(f"{k} {v:.4g}" for k, v in m.items()), flush=True)


if __name__ == "__main__":
    main()
