"""Time the engine's training step against a minimal hand-written PyTorch loop.

Both run the same teacher, student, batches and loss in the same process; the ratio is
what the engine's bookkeeping (events, loss components, batching, scheduler) costs.
It prints figures and asserts nothing.

    python benchmarks/engine_step.py [--steps 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdstudio.core.config import config_from_dict, default_config  # noqa: E402
from kdstudio.core.data import BatchOrder, causal_blocks, collate_blocks, encode, load_text_data  # noqa: E402
from kdstudio.core.events import Step  # noqa: E402
from kdstudio.core.losses import mean_pool  # noqa: E402
from kdstudio.core.models import derive_student, load_model, resolve_model_source  # noqa: E402
from kdstudio.core.trainer import run_training  # noqa: E402


def engine_step_times(cfg) -> list[float]:
    times: list[float] = []

    def sink(e):
        if isinstance(e, Step):
            # samples_per_s is measured over exactly one optimizer step
            times.append(cfg.training.batch_size * cfg.training.grad_accum_steps / e.samples_per_s)

    run_training(cfg, sink)
    return times


def health_watch_seconds(cfg, steps: int = 2000) -> float:
    """Seconds the run-health watch (core/health.py) spends on one step's event, on average:
    what run health adds to a step (it runs in the event sink, after the step)."""
    from kdstudio.core.health import watch_for
    from kdstudio.core.objective import active_terms
    from kdstudio.core.tasks import get_task

    task = get_task(cfg.task)
    names = [t.name for t in active_terms(task, cfg.method)]
    watch = watch_for(task, cfg.method, task.headline(True)[0], steps, 340)
    events = [Step(step=i, total_steps=steps, lr=1e-4, samples_per_s=1.0, tokens_per_s=1.0,
                   memory_mb=0.0, elapsed_s=0.0, eta_s=0.0,
                   losses={**{n: 1.0 / i for n in names}, "total": 1.0 / i})
              for i in range(1, steps + 1)]
    t0 = time.perf_counter()
    for e in events:
        watch(e)
    return (time.perf_counter() - t0) / steps


def hand_loop_times(cfg, steps: int, device: torch.device) -> list[float]:
    """The smallest honest loop: teacher under no_grad, student forward, loss, backward, step."""
    task = cfg.task
    data = load_text_data(cfg.data, task, seed=cfg.training.seed)
    src = resolve_model_source(cfg.teacher.name)
    t = load_model(src, task)
    student = derive_student(t.model, layers=cfg.student.layers).model.to(device).train()
    teacher = t.model.to(device).eval().requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.training.learning_rate)
    bs, tok, L = cfg.training.batch_size, t.tokenizer, cfg.data.max_length
    if task == "causal-lm":
        blocks = causal_blocks(tok, data.train_texts, L, True)
        order = BatchOrder(len(blocks), bs, 0)
    else:
        order = BatchOrder(len(data.train_texts), bs, 0)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        idx = order.indices(i)
        if task == "causal-lm":
            b = {k: v.to(device) for k, v in collate_blocks([blocks[j] for j in idx], tok.pad_token_id).items()}
            with torch.no_grad():
                tl = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            sl = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            T = cfg.method.temperature
            mask = b["labels"][:, 1:] != -100
            kl = F.kl_div(F.log_softmax(sl[:, :-1] / T, -1), F.log_softmax(tl[:, :-1] / T, -1),
                          log_target=True, reduction="none").sum(-1)
            loss = (kl * mask).sum() / mask.sum() * T * T
        else:
            b = {k: v.to(device) for k, v in encode(tok, [data.train_texts[j] for j in idx], L).items()}
            with torch.no_grad():
                te = mean_pool(teacher(**b).last_hidden_state, b["attention_mask"])
            se = mean_pool(student(**b).last_hidden_state, b["attention_mask"])
            loss = F.mse_loss(se, te) + (1 - F.cosine_similarity(se, te, dim=-1)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def _gpt2_folder(tmp: Path) -> str:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from kdstudio.core.models import BUILTIN_MODELS

    tok = AutoTokenizer.from_pretrained(BUILTIN_MODELS["all-MiniLM-L6-v2"][0]())
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=256, n_layer=6, n_head=4,
                                       n_positions=128, pad_token_id=tok.pad_token_id,
                                       eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id))
    model.save_pretrained(tmp / "gpt2")
    tok.save_pretrained(tmp / "gpt2")
    return str(tmp / "gpt2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KDSTUDIO_HOME"] = tmp
        cases = {
            "sentence-embedding, MiniLM 6 -> 3 layers, batch 32": dict(
                task="sentence-embedding", teacher={"name": "all-MiniLM-L6-v2"},
                student={"layers": 3}, data={"max_length": 64}),
            "causal-lm, GPT-2 shape 6 -> 3 layers (256 wide), batch 8 x 128 tokens": dict(
                task="causal-lm", teacher={"name": _gpt2_folder(Path(tmp))}, student={"layers": 3},
                data={"max_length": 128}),
        }
        print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
              f"{args.steps} steps each (first 3 dropped as warm-up)\n")
        for name, spec in cases.items():
            d = default_config(spec["task"]).to_dict()
            for k, v in spec.items():
                d[k] = {**d[k], **v} if isinstance(v, dict) else v
            d["training"].update(max_steps=args.steps, eval_every=0, device=args.device,
                                 batch_size=32 if spec["task"] != "causal-lm" else 8)
            d["evaluation"].update(latency_repeats=1, max_samples=32)
            cfg = config_from_dict(d)
            hand = hand_loop_times(cfg, args.steps, device)[3:]
            engine = engine_step_times(cfg)[3:]
            h, e = statistics.median(hand), statistics.median(engine)
            w = health_watch_seconds(cfg)
            print(f"{name}\n  hand-written loop: {h * 1000:8.1f} ms/step (median)\n"
                  f"  KD Studio engine:  {e * 1000:8.1f} ms/step (median)\n"
                  f"  ratio engine/hand: {e / h:8.3f}\n"
                  f"  run-health watch:  {w * 1e6:8.1f} us/step ({w / e:.4%} of the step)\n")


if __name__ == "__main__":
    main()
