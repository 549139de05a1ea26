"""Memory and token estimates, checked against figures worked out by hand."""

import pytest

from kdstudio.core.config import default_config
from kdstudio.core.plan import memory as est
from tests.conftest import tiny_config

MB = 2 ** 20


def _cfg(batch=8, length=128, **training):
    cfg = default_config("causal-lm")
    cfg.training.batch_size = batch
    cfg.data.max_length = length
    for k, v in training.items():
        setattr(cfg.training, k, v)
    return cfg


def _estimate(cfg, device="cpu", available=1e6):
    return est.estimate_memory(cfg, 100_000_000, 50_000_000, 768, 12, device, vocab_size=32000,
                               available_mb=available)


def test_parts_on_hand_numbers():
    e = _estimate(_cfg(logit_chunk=-1))  # full logits at once
    # CPU: fp32 teacher (4 bytes a parameter), AdamW student (16 bytes), 600 MB for the process.
    assert e.parts["teacher weights"] == pytest.approx(100e6 * 4 / MB)          # 381.5 MB
    assert e.parts["student training state"] == pytest.approx(50e6 * 16 / MB)   # 762.9 MB
    assert e.parts["overhead"] == 600
    # Logits: 8 x 128 tokens x 32000 entries x 4 bytes x 5 copies = 625 MB exactly.
    assert e.parts["logits"] == pytest.approx(625.0)
    # Student keeps 6 of 12 layers; per layer 18 fp32 values per token and width, plus
    # 12 heads of 128 x 128 attention scores (2 x 4 bytes + a 1-byte mask) per example.
    per_layer = 1024 * 768 * 18 * 4 + 8 * 12 * 128 ** 2 * 9
    assert e.parts["student activations"] == pytest.approx(per_layer * 6 / MB)  # 405 MB
    assert e.needed_mb == pytest.approx(sum(e.parts.values()) * 1.1)
    assert e.fits is True and e.suggestion == "" and e.changes == {}


def test_gpu_holds_the_teacher_in_half_precision_and_bigger_batches_need_more():
    gpu = _estimate(_cfg(), device="cuda")
    assert gpu.parts["teacher weights"] == pytest.approx(100e6 * 2 / MB)
    assert gpu.parts["overhead"] == 800
    small, big = _estimate(_cfg(batch=8)), _estimate(_cfg(batch=32))
    assert big.needed_mb > small.needed_mb
    assert big.parts["student training state"] == small.parts["student training state"]
    # Accumulation adds no memory: that is why the suggestion raises it.
    assert _estimate(_cfg(grad_accum_steps=8)).needed_mb == pytest.approx(small.needed_mb)


def test_too_big_suggests_a_smaller_batch_with_more_accumulation():
    cfg = _cfg(batch=64, grad_accum_steps=2)
    e = _estimate(cfg, available=4000)
    assert e.fits is False
    assert "batch size" in e.suggestion and "gradient accumulation" in e.suggestion
    batch, accum = e.changes["training.batch_size"], e.changes["training.grad_accum_steps"]
    assert batch < 64 and batch * accum >= 64 * 2  # the effective batch is kept
    cfg.training.batch_size, cfg.training.grad_accum_steps = batch, accum
    assert _estimate(cfg, available=4000).fits is True


def test_half_precision_teacher_is_suggested_when_that_alone_fits():
    cfg = _cfg(logit_chunk=512)  # a fixed chunk: an automatic one shrinks with free memory
    cfg.teacher.dtype = "float32"
    full = _estimate(cfg, device="cuda").needed_mb
    cfg.teacher.dtype = "bfloat16"
    half = _estimate(cfg, device="cuda").needed_mb
    assert half < full
    cfg.teacher.dtype = "float32"
    e = _estimate(cfg, device="cuda", available=(full + half) / 2)
    assert e.fits is False and e.changes == {"teacher.dtype": "bfloat16"}


def test_models_too_big_for_any_batch_say_so():
    e = _estimate(_cfg(), available=500)
    assert e.fits is False and e.changes == {}
    assert "models alone" in e.suggestion and "500 MB" in e.suggestion


def test_missing_gpu_is_flagged_with_a_fix():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    e = est.estimate_memory(_cfg(), 1000, 500, 32, 2, "cuda")
    assert e.available_mb is None and e.fits is None
    assert "no CUDA GPU" in e.suggestion and e.changes == {"training.device": "auto"}


def test_available_memory_of_this_machine():
    free = est.system_available_mb()
    assert free is not None and 0 < free < 10 ** 8
    mb, where, note = est.available_memory_mb("cpu")
    assert mb == pytest.approx(free, rel=0.2) and where == "the CPU" and note == ""


def test_model_shape_from_config_matches_the_real_model(tiny):
    from transformers import AutoModel

    shape = est.model_shape(str(tiny["bert"]), "sentence-embedding")
    real = AutoModel.from_pretrained(tiny["bert"])
    assert shape.params == sum(p.numel() for p in real.parameters())
    assert (shape.hidden_size, shape.num_layers) == (32, 4)
    assert 0 < shape.layer_params < shape.params
    # A derived 2-of-4-layer student drops exactly half the blocks' parameters.
    assert est.derived_student_params(shape, 2) == shape.params - shape.layer_params // 2


def test_estimate_for_a_tiny_config(tiny):
    cfg = tiny_config("causal-lm", tiny["gpt2"])
    e = est.estimate_for_config(cfg, available_mb=10_000)
    assert e.fits is True and 600 < e.needed_mb < 2000  # mostly the process itself
    assert e.parts["teacher weights"] < 1 and "logits (chunked)" in e.parts


def test_chunked_logits_and_checkpointing_on_hand_numbers():
    big = _cfg(batch=8, length=2048, logit_chunk=-1)
    chunked = _cfg(batch=8, length=2048, logit_chunk=256)
    full, part = _estimate(big), _estimate(chunked)
    # Full: 8 x 2048 tokens x 32000 x 4 bytes x 5 copies; chunked: 256 rows x 32000 x 4 x 6
    # plus the head's gradient (32000 x 768 fp32).
    assert full.parts["logits"] == pytest.approx(8 * 2048 * 32000 * 20 / MB)   # 10,000 MB
    assert part.parts["logits (chunked)"] == pytest.approx((256 * 32000 * 24 + 32000 * 768 * 4) / MB)
    assert full.needed_mb - part.needed_mb > 9000  # ~1.1 x the 9.7 GB of logits saved
    ckpt = _estimate(_cfg(batch=8, length=2048, logit_chunk=256, gradient_checkpointing=True))
    assert ckpt.parts["student activations"] < part.parts["student activations"] / 2


@pytest.mark.slow
def test_token_count_exact_and_sampled(tiny):
    from kdstudio.core.data import load_text_data
    from kdstudio.core.models import load_tokenizer

    cfg = tiny_config("sentence-embedding", tiny["bert"])
    tok = load_tokenizer(str(tiny["bert"]))
    texts = load_text_data(cfg.data, "causal-lm", seed=cfg.training.seed).train_texts
    lengths = [len(x) for x in tok(texts)["input_ids"]]
    exact = est.estimate_tokens(cfg, tok)
    assert (exact.train_rows, exact.eval_rows) == (96, 40) and exact.exact
    assert exact.tokens == sum(lengths)
    assert exact.used_tokens == sum(min(x, cfg.data.max_length) for x in lengths)
    assert exact.cut_share == pytest.approx(sum(x > 32 for x in lengths) / 96)
    sampled = est.estimate_tokens(cfg, tok, sample=12)
    assert not sampled.exact and sampled.sampled_rows == 12
    assert sampled.tokens == pytest.approx(exact.tokens, rel=0.3)
    rows_only = est.estimate_tokens(cfg, None)
    assert rows_only.tokens is None and rows_only.train_rows == 96


def test_the_teacher_cache_frees_the_teacher_activations_and_is_suggested():
    from kdstudio.core.config import default_config
    from kdstudio.core.plan.memory import estimate_memory

    cfg = default_config("causal-lm")
    cfg.training.batch_size, cfg.data.max_length = 8, 2048
    cfg.training.device, cfg.training.logit_chunk = "cpu", 1024
    cfg.training.gradient_checkpointing = True
    # A 1.5B teacher with a 152k vocabulary, a 0.5B student.
    args = (1_500_000_000, 500_000_000, 1536, 28, "cpu")
    live = estimate_memory(cfg, *args, vocab_size=151_936, available_mb=1e9)
    assert live.parts["teacher activations"] > 0 and "teacher cache batch" not in live.parts
    cfg.teacher.cache = "always"
    cached = estimate_memory(cfg, *args, vocab_size=151_936, available_mb=1e9)
    assert cached.parts["teacher activations"] == 0 and cached.parts["teacher cache batch"] > 0
    assert cached.needed_mb < live.needed_mb
    # Free memory between the two: the cache is the suggestion, and applying it fits.
    cfg.teacher.cache = "auto"
    free = (live.needed_mb + cached.needed_mb) / 2
    short = estimate_memory(cfg, *args, vocab_size=151_936, available_mb=free)
    assert short.fits is False and short.changes == {"teacher.cache": "always"}
    assert "teacher cache" in short.suggestion
    # Hidden-layer distillation needs the live teacher: the cache is not offered.
    cfg.method.hidden_weight = 1.0
    hidden = estimate_memory(cfg, *args, vocab_size=151_936, available_mb=free)
    assert "teacher.cache" not in hidden.changes
