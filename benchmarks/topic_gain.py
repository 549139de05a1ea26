"""What distillation adds to an embedding run's topic accuracy, with its uncertainty: the saved
student's topic accuracy (each held-out sentence's nearest other sentence has its topic)
minus that of the undistilled student (the same teacher layers, before any training), with a
95% interval from a paired bootstrap over the same held-out sentences
(kdstudio.core.intervals.paired_interval, 1,000 resamples, fixed seed).

    .venv/bin/python benchmarks/topic_gain.py RUN_DIR [RUN_DIR ...] [--teacher]

--teacher also prints the teacher's own gain over the undistilled student: a student that
copied the teacher exactly would show that much. It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdstudio.core.config import load_config  # noqa: E402
from kdstudio.core.data import load_text_data  # noqa: E402
from kdstudio.core.intervals import Mean, paired_interval  # noqa: E402
from kdstudio.core.losses import mean_pool  # noqa: E402
from kdstudio.core.measures import nearest  # noqa: E402
from kdstudio.core.models import resolve_model_source  # noqa: E402
from kdstudio.core.tasks import get_task  # noqa: E402


def embed(model: torch.nn.Module, tok, texts: list[str], max_length: int) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            enc = tok(texts[i:i + 64], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            out.append(mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]))
    return torch.cat(out)


def right(emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 where a sentence's nearest other held-out sentence has its topic, else 0 (the run's
    topic accuracy, measures.knn_accuracy, is the mean of these)."""
    return (labels[nearest(emb)] == labels).double()


def main() -> None:
    from transformers import AutoModel, AutoTokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--teacher", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    first = Path(args.runs[0])
    cfg = load_config(first / "config.toml")
    data = load_text_data(cfg.data, get_task(cfg.task), seed=cfg.training.seed)
    labels = torch.tensor(data.eval_labels)
    source = resolve_model_source(cfg.teacher.name)
    tok = AutoTokenizer.from_pretrained(source)
    kept = json.loads((first / "summary.json").read_text())["kept_layers"]
    before = AutoModel.from_pretrained(source).eval()
    before.encoder.layer = torch.nn.ModuleList([before.encoder.layer[i] for i in kept])
    base = Mean(right(embed(before, tok, data.eval_texts, cfg.data.max_length), labels))
    print(f"undistilled student (teacher layers {kept}): topic accuracy "
          f"{float(base.values.mean()):.1%} on {len(labels)} held-out sentences")
    rows = [(str(r), Path(r) / "student") for r in args.runs]
    if args.teacher:
        rows.append(("the teacher", source))
    for name, path in rows:
        model = AutoModel.from_pretrained(path).eval()
        fig = Mean(right(embed(model, tok, data.eval_texts, cfg.data.max_length), labels))
        gain = float(fig.values.mean() - base.values.mean())
        low, high = paired_interval(fig, base, kind="difference")
        print(f"{name}: topic accuracy {float(fig.values.mean()):.1%}, gain {gain * 100:+.1f} "
              f"({low * 100:+.1f} to {high * 100:+.1f})", flush=True)


if __name__ == "__main__":
    main()
