"""The causal-LM demo teacher, everyday-gpt: it loads as a built-in, is small, and its figures
recomputed now match the ones it ships with in training.json."""

import json

import pytest
import torch

from kdstudio.core.catalog import BUILTIN_MODELS
from kdstudio.core.compare import GenerationSettings, Predictor
from kdstudio.core.config import default_config
from kdstudio.core.data import load_text_data
from kdstudio.core.errors import ModelError
from kdstudio.core.evaluation import EvalSet, Evaluator, weights_size_bytes
from kdstudio.core.models import load_model, resolve_model_source
from kdstudio.core.runs import resources_dir

FOLDER = resources_dir() / "models" / "everyday-gpt"


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((FOLDER / "training.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def teacher():
    return load_model(resolve_model_source("everyday-gpt"), "causal-lm", role="teacher")


@pytest.fixture(scope="module")
def eval_texts(record) -> list[str]:
    d = record["data"]
    cfg = default_config("causal-lm")
    cfg.data.dataset, cfg.data.eval_fraction = d["dataset"], d["eval_fraction"]
    texts = load_text_data(cfg.data, "causal-lm", seed=d["split_seed"]).eval_texts
    assert len(texts) == d["eval_sentences"]
    return texts


def perplexity(model, tok, texts: list[str], ev: dict) -> float:
    """The engine's teacher perplexity with the settings training.json records."""
    model.eval()
    es = EvalSet("causal-lm", texts, None, max_samples=ev["max_samples"],
                 max_length=ev["max_length"], pack=ev["pack"], batch_size=ev["batch_size"])
    return Evaluator("causal-lm", es, model, tok, tok, torch.device("cpu")).teacher_metrics()["perplexity"]


def test_it_is_a_small_builtin_gpt2_with_its_own_tokenizer(teacher, record):
    assert resolve_model_source("everyday-gpt") == str(FOLDER)
    assert weights_size_bytes(FOLDER) <= 20 * 2**20
    assert list(FOLDER.glob("*.safetensors")) and not list(FOLDER.glob("*.bin"))
    cfg, tok = teacher.model.config, teacher.tokenizer
    assert cfg.model_type == "gpt2" and cfg.n_layer == record["architecture"]["n_layer"] == 6
    assert sum(p.numel() for p in teacher.model.parameters()) == record["architecture"]["parameters"]
    assert len(tok) == cfg.vocab_size == record["tokenizer"]["vocab_size"]
    assert {tok.pad_token, tok.eos_token, tok.unk_token} == {"<pad>", "<eos>", "<unk>"}
    assert (cfg.eos_token_id, cfg.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert (FOLDER / "generation_config.json").exists() and (FOLDER / "README.md").exists()


@pytest.mark.slow
def test_heldout_perplexity_matches_what_it_ships_with(teacher, record, eval_texts):
    figures, ev = record["figures"], record["evaluation"]
    trained = perplexity(teacher.model, teacher.tokenizer, eval_texts, ev)
    assert trained == pytest.approx(figures["heldout_perplexity"], rel=0.02)
    # The same architecture untrained, initialised as the build script did (same seed).
    torch.manual_seed(record["training"]["seed"])
    untrained_model = type(teacher.model)(teacher.model.config)
    untrained = perplexity(untrained_model, teacher.tokenizer, eval_texts, ev)
    assert untrained == pytest.approx(figures["heldout_perplexity_untrained"], rel=0.02)
    assert trained < untrained / 10  # genuinely trained, not a random network


def test_greedy_generation_reproduces_the_shipped_samples(teacher, record):
    samples = record["samples"]
    assert samples["decoding"] == "greedy"
    p = Predictor(teacher.model, teacher.tokenizer, "causal-lm", device=torch.device("cpu"))
    gen = GenerationSettings(max_new_tokens=samples["max_new_tokens"], temperature=0.0)
    for item in samples["items"][:2]:
        assert p.answer(item["prompt"], gen).text == item["continuation"]


def test_a_missing_shipped_model_is_a_clear_model_error(monkeypatch):
    monkeypatch.setitem(BUILTIN_MODELS, "everyday-gpt",
                        (lambda: None, "", BUILTIN_MODELS["everyday-gpt"][2]))
    with pytest.raises(ModelError, match="everyday-gpt.*missing"):
        resolve_model_source("everyday-gpt", role="teacher")
