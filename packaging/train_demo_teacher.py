"""Train the built-in causal-LM demo teacher, everyday-gpt, from scratch on the built-in corpus.

    python packaging/train_demo_teacher.py [--out resources/models/everyday-gpt] [--steps N] [--seed 42]

No pretrained causal LM can be downloaded where KD Studio is built, so the LLM demo's teacher
is made here: a byte-level BPE tokenizer and a 6-layer GPT-2, both trained on the training
split of builtin:everyday-topics, the very split the engine trains students on (eval_fraction
0.2, seed 42), so the held-out figures are honest for the demo. It writes the model in
save_pretrained form (safetensors), its tokenizer, generation_config.json, training.json (the
settings and the figures reached) and a model card. Deterministic for a given seed and thread
count; about 4 minutes on a 2-core laptop CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The data split and the perplexity settings of the LLM demo (resources/demos/causal-lm.toml);
# tests/core/test_demo_teacher.py recomputes the figures with exactly these.
DATASET = "builtin:everyday-topics"
EVAL_FRACTION = 0.2
SPLIT_SEED = 42
EVAL_MAX_LENGTH = 128
EVAL_BATCH = 64
SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]
PROMPTS = ["The weather forecast", "Is it worth", "Our local", "My grandmother", "The museum",
           "We spent"]
SAMPLE_NEW_TOKENS = 24  # what the engine's pinned inputs generate
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "seed": 0}
# What the defaults rest on (each run with this script, seed 42, 2048-token vocabulary).
TUNING = ("6 x 128 wide, dropout 0.2, 600 steps: best held-out perplexity 159.0 (the default). "
          "6 x 192 wide, dropout 0.2, 800 steps: best 166.5 at step 400, then overfitting (198 "
          "at step 800). 6 x 192 wide, dropout 0.35, 700 steps: 163.8. The corpus is small "
          "enough that the narrower model generalises as well and trains and distils faster.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "resources" / "models" / "everyday-gpt"))
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--vocab", type=int, default=2048, help="BPE vocabulary size")
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-positions", type=int, default=128)
    ap.add_argument("--block", type=int, default=128, help="tokens per training window")
    ap.add_argument("--batch", type=int, default=16, help="windows per step")
    ap.add_argument("--long-every", type=int, default=2,
                    help="train on whole windows every N-th step; the other steps split each "
                         "window into two halves (0 = never split)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    ap.add_argument("--dry", action="store_true", help="train and report, write nothing")
    return ap.parse_args(argv)


def engine_split():
    """The engine's train/eval texts for the demo's data settings."""
    from kdstudio.core.config import default_config
    from kdstudio.core.data import load_text_data

    cfg = default_config("causal-lm")
    cfg.data.dataset, cfg.data.eval_fraction = DATASET, EVAL_FRACTION
    return load_text_data(cfg.data, "causal-lm", seed=SPLIT_SEED)


def train_tokenizer(texts: list[str], vocab: int, max_length: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    # GPT-2's convention: one end-of-text token also marks the start; no tokens are added
    # around a text, so the engine's packing (text, <eos>, text, ...) is what the model sees.
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<eos>", unk_token="<unk>",
                                   model_max_length=max_length)


def heldout_perplexity(model, tok, texts: list[str]) -> float:
    """Perplexity exactly as the engine measures a causal-lm teacher (packed 128-token blocks, the causal-lm default length)."""
    from kdstudio.core.evaluation import EvalSet, Evaluator
    import torch

    model.eval()
    es = EvalSet("causal-lm", texts, None, max_samples=0, max_length=EVAL_MAX_LENGTH, pack=True,
                 batch_size=EVAL_BATCH)
    return Evaluator("causal-lm", es, model, tok, tok, torch.device("cpu")).teacher_metrics()["perplexity"]


def bits_per_char(ppl: float, tok, texts: list[str]) -> float:
    """The same figure per character of text: comparable across tokenizers, unlike perplexity."""
    from kdstudio.core.data import causal_blocks

    blocks = causal_blocks(tok, texts, EVAL_MAX_LENGTH, pack=True)
    predicted = sum(len(b) - 1 for b in blocks)
    return math.log(ppl) * predicted / (sum(len(t) for t in texts) * math.log(2))


class Windows:
    """Training windows: each epoch reshuffles the sentences, packs them with <eos> between
    (as the engine does) and cuts the stream at a random offset, so the model sees every
    sentence in many contexts and positions instead of the same few hundred blocks."""

    def __init__(self, ids: list[list[int]], eos: int, block: int, batch: int, seed: int):
        import torch

        self.ids, self.eos, self.block, self.batch = ids, eos, block, batch
        self.g = torch.Generator().manual_seed(seed)
        self.queue: list = []
        self.epochs = 0

    def _refill(self) -> None:
        import torch

        stream: list[int] = []
        for i in torch.randperm(len(self.ids), generator=self.g).tolist():
            stream.extend(self.ids[i])
            stream.append(self.eos)
        start = int(torch.randint(self.block, (1,), generator=self.g))
        n = (len(stream) - start) // self.block
        blocks = torch.tensor(stream[start:start + n * self.block]).view(n, self.block)
        self.queue.extend(blocks[torch.randperm(n, generator=self.g)])
        self.epochs += 1

    def next(self):
        import torch

        while len(self.queue) < self.batch:
            self._refill()
        out, self.queue = torch.stack(self.queue[:self.batch]), self.queue[self.batch:]
        return out


def generate(model, tok, prompts: list[str], sampling: dict | None = None) -> list[dict[str, str]]:
    """Continuations generated the way the engine's pinned inputs are: greedy, or sampled with
    a fixed seed before each prompt."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for p in prompts:
            enc = tok([p], return_tensors="pt")
            kwargs = {"do_sample": False}
            if sampling:
                torch.manual_seed(sampling["seed"])
                kwargs = {"do_sample": True, "temperature": sampling["temperature"],
                          "top_p": sampling["top_p"]}
            ids = model.generate(**enc, max_new_tokens=SAMPLE_NEW_TOKENS,
                                 pad_token_id=tok.pad_token_id, **kwargs)
            out.append({"prompt": p, "continuation":
                        tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)})
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GenerationConfig

    from kdstudio.core.models import quiet_transformers

    quiet_transformers()
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()

    data = engine_split()
    print(f"data: {len(data.train_texts)} training and {len(data.eval_texts)} held-out sentences "
          f"({DATASET}, eval_fraction {EVAL_FRACTION}, split seed {SPLIT_SEED})")
    # The tokenizer sees only the training split: the held-out sentences stay unseen.
    tok = train_tokenizer(data.train_texts, args.vocab, args.n_positions)
    train_ids = tok(data.train_texts, add_special_tokens=False)["input_ids"]
    n_tokens = sum(len(x) + 1 for x in train_ids)
    print(f"tokenizer: {len(tok)} tokens; training split = {n_tokens} tokens with <eos>")

    cfg = GPT2Config(vocab_size=len(tok), n_positions=args.n_positions, n_embd=args.n_embd,
                     n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=args.dropout,
                     embd_pdrop=args.dropout, attn_pdrop=args.dropout,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(cfg)
    params = sum(p.numel() for p in model.parameters())
    untrained = heldout_perplexity(model, tok, data.eval_texts)
    print(f"model: GPT-2, {args.n_layer} layers x {args.n_embd} wide, {params:,} parameters; "
          f"held-out perplexity untrained {untrained:.1f}")

    # Weight decay on matrices only, as nanoGPT does; biases, norms and positions are left free.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wpe" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine down to min_lr_ratio * lr
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

    windows = Windows(train_ids, tok.eos_token_id, args.block, args.batch, args.seed)
    curve: list[dict[str, float]] = []
    best = (float("inf"), 0, None)
    t_train = time.perf_counter()
    running = 0.0
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step - 1)
        model.train()
        x = windows.next()
        if args.long_every and step % args.long_every:
            # Half-length windows, twice as many: the demo's 64-token context most of the time,
            # while the whole-window steps keep positions up to n_positions trained.
            x = x.reshape(-1, args.block // 2)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        if step % args.eval_every == 0 or step == args.steps:
            ppl = heldout_perplexity(model, tok, data.eval_texts)
            n = args.eval_every if step % args.eval_every == 0 else step % args.eval_every
            curve.append({"step": step, "train_loss": round(running / n, 4),
                          "heldout_perplexity": round(ppl, 3)})
            running = 0.0
            if ppl < best[0]:
                best = (ppl, step, copy.deepcopy(model.state_dict()))
            print(f"step {step:5d}/{args.steps}  lr {lr_at(step - 1):.2e}  train loss "
                  f"{curve[-1]['train_loss']:.3f}  held-out perplexity {ppl:7.2f}  "
                  f"({time.perf_counter() - t_train:.0f}s, epoch {windows.epochs})", flush=True)
    train_s = time.perf_counter() - t_train

    model.load_state_dict(best[2])
    heldout = heldout_perplexity(model, tok, data.eval_texts)
    train_ppl = heldout_perplexity(model, tok, data.train_texts)
    samples = generate(model, tok, PROMPTS)
    sampled = generate(model, tok, PROMPTS, SAMPLING)
    bpc = bits_per_char(heldout, tok, data.eval_texts)
    print(f"best held-out perplexity {heldout:.2f} ({bpc:.3f} bits per character) at step "
          f"{best[1]} (untrained {untrained:.1f}); training perplexity {train_ppl:.2f}; "
          f"trained in {train_s:.0f}s")
    for s, r in zip(samples, sampled):
        print(f"  {s['prompt']!r} -> greedy {s['continuation']!r} | sampled {r['continuation']!r}")
    if args.dry:
        return

    import tokenizers
    import transformers

    record = {
        "name": "everyday-gpt",
        "architecture": {"model_type": "gpt2", "class": "GPT2LMHeadModel", "n_layer": args.n_layer,
                         "n_embd": args.n_embd, "n_head": args.n_head,
                         "n_positions": args.n_positions, "vocab_size": len(tok),
                         "tie_word_embeddings": True, "dropout": args.dropout,
                         "parameters": params},
        "tokenizer": {"kind": "byte-level BPE (tokenizers)", "vocab_size": len(tok),
                      "special_tokens": SPECIAL_TOKENS, "trained_on": "training split only",
                      "add_prefix_space": False},
        "data": {"dataset": DATASET, "eval_fraction": EVAL_FRACTION, "split_seed": SPLIT_SEED,
                 "train_sentences": len(data.train_texts), "eval_sentences": len(data.eval_texts),
                 "train_tokens": n_tokens,
                 "how": "kdstudio.core.data.load_text_data with task causal-lm (the engine's "
                        "own split, so the demo's students train and are measured on the same)"},
        "training": {"steps": args.steps, "batch_size": args.batch, "block_tokens": args.block,
                     "long_every": args.long_every,
                     "windows": "each epoch: sentences reshuffled, packed with <eos> between, "
                                "cut at a random offset; every long_every-th step trains on "
                                "the whole windows, the others on each window split in two "
                                "halves (twice as many, half as long)",
                     "epochs_seen": windows.epochs, "optimizer": "AdamW", "betas": [0.9, 0.95],
                     "learning_rate": args.lr, "schedule": "linear warm-up then cosine",
                     "warmup_steps": args.warmup, "min_lr_ratio": args.min_lr_ratio,
                     "weight_decay": args.weight_decay, "grad_clip": 1.0, "seed": args.seed,
                     "threads": threads, "eval_every": args.eval_every,
                     "selection": "the weights with the lowest held-out perplexity among the "
                                  "evaluations (the held-out split chooses the step, nothing else)",
                     "best_step": best[1], "wall_time_s": round(train_s, 1),
                     "total_time_s": round(time.perf_counter() - t_start, 1),
                     "torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "machine": platform.machine()},
        "evaluation": {"how": "kdstudio.core.evaluation.Evaluator.teacher_metrics: the eval "
                              "texts tokenized without special tokens, packed with <eos> between "
                              "into blocks (causal_blocks, pack=True), next-token perplexity",
                       "max_length": EVAL_MAX_LENGTH, "pack": True, "max_samples": 0,
                       "batch_size": EVAL_BATCH},
        "figures": {"heldout_perplexity": round(heldout, 4),
                    "heldout_perplexity_untrained": round(untrained, 4),
                    "train_perplexity": round(train_ppl, 4),
                    "heldout_bits_per_char": round(bpc, 4)},
        "curve": curve,
        "samples": {"decoding": "greedy", "max_new_tokens": SAMPLE_NEW_TOKENS, "items": samples},
        "sampled": {"decoding": "sampled", **SAMPLING, "max_new_tokens": SAMPLE_NEW_TOKENS,
                    "items": sampled},
        "tuning": TUNING,
    }
    write(Path(args.out), model, tok, record)


def write(out: Path, model, tok, record: dict) -> None:
    """Write everything into a temporary folder, then swap it in: never a half-written model."""
    from transformers import GenerationConfig

    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    # transformers 5 names the class TokenizersBackend; the older name loads in 4.x and 5.x alike.
    tc_path = tmp / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8"))
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc_path.write_text(json.dumps(tc, indent=2) + "\n", encoding="utf-8")
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id).save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (tmp / "README.md").write_text(model_card(record), encoding="utf-8")
    for f in tmp.iterdir():
        f.chmod(0o644)  # save_pretrained may leave private temp-file modes; these are shipped
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**20
    print(f"wrote {out} ({size:.1f} MB of weights)")


def model_card(r: dict) -> str:
    a, t, f, d, e = r["architecture"], r["training"], r["figures"], r["data"], r["evaluation"]
    sm = r["sampled"]
    k = t.get("long_every", 0)
    split = "" if not k else (
        f" (on {'every other step' if k == 2 else f'all steps but every {k}-th'}, each window "
        f"split in two: {2 * t['batch_size']} windows of {t['block_tokens'] // 2} tokens, the "
        "demo's context length)")
    samples = "\n".join(f"| {g['prompt']} | {g['continuation']} | {x['continuation']} |"
                        for g, x in zip(r["samples"]["items"], sm["items"]))
    return f"""# everyday-gpt

The built-in teacher of KD Studio's causal-LM demo (`teacher.name = "everyday-gpt"`): a small
GPT-2 trained from scratch, with its own byte-level BPE tokenizer, on the built-in corpus
`everyday-topics` (see `resources/corpus/DATASHEET.md`). It exists because the demo must run
offline on any machine, where no pretrained causal language model can be downloaded.

## What it is
- GPT-2 (`GPT2LMHeadModel`), {a['n_layer']} layers, {a['n_embd']} wide, {a['n_head']} heads,
  {a['n_positions']} positions, tied input/output embeddings: {a['parameters']:,} parameters,
  float32 safetensors.
- Tokenizer: byte-level BPE of {r['tokenizer']['vocab_size']} tokens trained on the training
  split, with `<pad>`, `<eos>` (also the start token) and `<unk>`. Nothing is added around a
  text; packed texts are separated by `<eos>`.
- It writes short everyday English sentences in the corpus's style on its ten topics (arts,
  food, health, money, nature, science, sport, technology, travel, weather). It knows nothing
  else: it is a teaching model for distillation, not a general language model.

## How it was trained
- Data: the engine's own split of `{d['dataset']}` (eval_fraction {d['eval_fraction']}, seed
  {d['split_seed']}): {d['train_sentences']} training sentences ({d['train_tokens']:,} tokens),
  {d['eval_sentences']} held out. The demo's students train and are measured on the same split.
- {t['steps']} AdamW steps (betas 0.9/0.95, weight decay {t['weight_decay']} on matrices), batch
  {t['batch_size']} windows of {t['block_tokens']} tokens{split}, peak learning rate {t['learning_rate']},
  {t['warmup_steps']} warm-up steps then cosine to {t['min_lr_ratio']} of the peak, dropout
  {a['dropout']}, gradient clipping {t['grad_clip']}, seed {t['seed']}. Each epoch reshuffles the
  sentences, packs them and cuts the stream at a random offset ({t['epochs_seen']} epochs in all).
- The held-out perplexity was measured every {t['eval_every']} steps and the best weights kept
  (step {t['best_step']}); the held-out split chose that step and nothing else.
- Wall time: {t['wall_time_s']:.0f} s of training on {t['threads']} CPU threads.

## Figures
Perplexity as the engine measures it: held-out texts packed into {e['max_length']}-token blocks
with `<eos>` between, all {d['eval_sentences']} held-out sentences.

| | perplexity |
|---|---|
| held-out, this model | {f['heldout_perplexity']:.2f} |
| held-out, same architecture untrained (seed {t['seed']}) | {f['heldout_perplexity_untrained']:.1f} |
| training split | {f['train_perplexity']:.2f} |

Per character of held-out text that is {f['heldout_bits_per_char']:.2f} bits (a figure that, unlike
perplexity per token, compares across tokenizers).

Continuations of fixed prompts ({r['samples']['max_new_tokens']} new tokens at most, stopping at
`<eos>`): greedy, and sampled (temperature {sm['temperature']}, top-p {sm['top_p']}, seed
{sm['seed']} before each prompt). Greedy decoding of a model this small tends to loop on its
favourite phrases; sampling shows its range better.

| prompt | greedy | sampled |
|---|---|---|
{samples}

How the settings were chosen: {r['tuning']}

`training.json` holds the full settings, the learning curve and these figures;
`tests/core/test_demo_teacher.py` checks them against the shipped weights.

## How to retrain
```
python packaging/train_demo_teacher.py --out resources/models/everyday-gpt --steps {t['steps']} --seed {t['seed']}
```
Results are deterministic for a seed and thread count (torch {t['torch']}, transformers
{t['transformers']}); other versions or thread counts may differ in the last digits.

## Licence
The same as KD Studio's (Apache-2.0), like the corpus it was trained on.
"""


if __name__ == "__main__":
    main()
