"""Tests for the cache's format 2: old caches, the tail model, served = local, and importing
axolotl's top-k log-probability rows."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from kdstudio.core import teacher_cache as tc
from kdstudio.core.sparse import tail_temper


def _parts(**changes):
    parts = {"teacher": "t", "revision": None, "weights": "w0", "tokenizer": "t0",
             "data": "d", "token_ids": [[5, 6, 7], [8, 9]], "max_length": 64, "pack": True,
             "k": 8, "dtype": "float32"}
    parts.update(changes)
    return parts


def _logits(seed=0, shape=(2, 6, 50)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2


def test_a_format_1_cache_is_still_found_and_read(kd_home):
    logits = _logits()
    mask = torch.ones(2, 6, dtype=torch.bool)
    with tc.TeacherCacheWriter(_parts(), 50, fmt=1) as w:
        w.add([0, 1], mask, logits)
    cache = tc.find_cache(_parts())
    assert cache is not None and cache.format == 1 and cache.path == w.final_dir
    got = cache.get([0, 1])
    lp = F.log_softmax(logits, -1)
    rest = lp.scatter(-1, lp.topk(8, -1).indices, float("-inf"))
    # Format 1 keeps the tail's shape at T = 2 (float16: 1e-3 relative).
    half = torch.logsumexp(0.5 * rest, -1)
    assert torch.allclose(got.tail_log_half, half, rtol=1e-3, atol=1e-3)


def test_an_unknown_format_is_refused_with_how_to_rebuild(kd_home):
    with tc.TeacherCacheWriter(_parts(), 50) as w:
        w.add([0, 1], torch.ones(2, 6, dtype=torch.bool), _logits())
    manifest = json.loads((w.final_dir / "manifest.json").read_text())
    manifest["format"] = 99
    (w.final_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"format 99.*kdstudio cache delete " + w.final_dir.name[:12]):
        tc.TeacherCache(w.final_dir)


@pytest.mark.parametrize("alpha", [0.6, 1.0, 1.7])
@pytest.mark.parametrize("temperature", [0.5, 2.0, 4.0])
def test_the_tail_model_is_exact_on_a_power_law_teacher(alpha, temperature):
    v, k = 4096, 64
    lp = -alpha * torch.arange(1, v + 1, dtype=torch.float64).log()
    lp = lp - torch.logsumexp(lp, 0)
    tail = torch.logsumexp(lp[k:], 0).reshape(1)
    got = tail_temper(tail, torch.full((1,), math.nan, dtype=torch.float64), lp[k - 1].reshape(1),
                      v - k, temperature, k=k)
    want = torch.logsumexp(lp[k:] / temperature, 0)
    # The model sums with midpoint integrals: 1e-3 relative to the tempered tail is its error.
    assert abs(got.item() - want.item()) < 1e-3 * max(1.0, abs(want.item()))
    # At T = 1 it is the stored mass itself.
    one = tail_temper(tail, torch.full((1,), math.nan, dtype=torch.float64), lp[k - 1].reshape(1),
                      v - k, 1.0, k=k)
    assert one.item() == tail.item()


def test_served_and_local_answers_give_the_same_cache(kd_home):
    """A server gives the top-k log-probs only; a local pass has the logits. Same records."""
    logits = _logits(1)
    mask = torch.ones(2, 6, dtype=torch.bool)
    with tc.TeacherCacheWriter(_parts(weights="local"), 50) as w:
        w.add([0, 1], mask, logits)
    lp = F.log_softmax(logits, -1)
    vals, ids = lp.topk(8, -1)
    with tc.TeacherCacheWriter(_parts(weights="served"), 50) as s:
        s.add([0, 1], mask, top_ids=ids, top_logprobs=vals)  # tail: 1 - the top k's sum
    a, b = tc.TeacherCache(w.final_dir).get([0, 1]), tc.TeacherCache(s.final_dir).get([0, 1])
    assert torch.equal(a.top_ids, b.top_ids) and torch.equal(a.top_logprobs, b.top_logprobs)
    # The two tail masses differ by float32 rounding of 1 - sum only, then by float16.
    assert torch.allclose(a.tail_logmass, b.tail_logmass, atol=2e-3)
    student = torch.randn(2, 6, 50, generator=torch.Generator().manual_seed(3))
    la, lb = (tc.sparse_logit_loss(student, c.top_ids, c.top_logprobs, c.tail_logmass,
                                   tail_log_half=c.tail_log_half, temperature=2.0) for c in (a, b))
    assert abs(la.item() - lb.item()) <= 1e-3 * abs(la.item())


def _axolotl_file(path, rows, logits, k, *, field="target_logprobs"):
    """Rows as axolotl's KD data set holds them: entry i is token i's top k given the tokens
    before it (entry 0 empty), as vLLM's prompt_logprobs gives them."""
    lp = F.log_softmax(logits, -1)
    with open(path, "w", encoding="utf-8") as fh:
        for r, row in enumerate(rows):
            ids, lps = [[]], [[]]
            for j in range(len(row) - 1):
                vals, top = lp[r, j].topk(k)
                ids.append(top.tolist())
                lps.append(vals.tolist())
            fh.write(json.dumps({"input_ids": row, "target_token_ids": ids, field: lps}) + "\n")


@pytest.mark.parametrize("field", ["target_logprobs", "logprobs"])
def test_an_axolotl_topk_file_imports_into_the_cache(kd_home, tmp_path, field):
    rows = [[3, 4, 5, 6, 7, 8], [9, 10, 11, 12]]
    logits = _logits(2)
    _axolotl_file(tmp_path / "kd.jsonl", rows, logits, 12, field=field)
    path = tc.import_topk_jsonl(tmp_path / "kd.jsonl", rows, _parts(token_ids=rows, k=0), 50)
    cache = tc.TeacherCache(path)
    assert cache.k == 12 and len(cache) == 2
    got = cache.get([0, 1])
    assert got.mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2]  # the last token predicts none
    lp = F.log_softmax(logits, -1)
    for b, j in got.mask.nonzero().tolist():
        vals, ids = lp[b, j].topk(12)
        order = ids.argsort()
        assert torch.equal(got.top_ids[b, j], ids[order])
        gap = vals.max() - vals[order]
        bound = (gap * gap.max()).sqrt() / 15 + gap.max() / 225 + 2e-3 * vals.max().abs() + 1e-6
        assert ((got.top_logprobs[b, j] - vals[order]).abs() <= bound).all()
        tail = torch.log1p(-vals.exp().sum())
        assert abs(got.tail_logmass[b, j] - tail) <= 2e-3 * abs(tail) + 1e-3


def test_an_import_missing_a_training_row_names_it(kd_home, tmp_path):
    rows = [[3, 4, 5, 6]]
    _axolotl_file(tmp_path / "kd.jsonl", rows, _logits(), 8)
    with pytest.raises(ValueError, match=r"training row 1 .* is not in .*kd.jsonl"):
        tc.import_topk_jsonl(tmp_path / "kd.jsonl", rows + [[7, 8, 9]], _parts(), 50)
    (tmp_path / "bad.jsonl").write_text('{"input_ids": [1, 2]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 1: missing target_token_ids"):
        tc.import_topk_jsonl(tmp_path / "bad.jsonl", rows, _parts(), 50)
