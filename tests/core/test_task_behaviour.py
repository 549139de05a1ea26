"""Tasks carry behaviour, not flags: code outside core/tasks asks the task what to do (how to
measure, export, show, plan) and never reads its `generative` or `output` flags; each family's
answers keep today's behaviour (same numbers, same words)."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from kdstudio.core.compare import ModelAnswer
from kdstudio.core.objective import _gives_logits
from kdstudio.core.preflight import untrained_head_error
from kdstudio.core.tasks import CAUSAL_LM, CLASSIFICATION, EMBEDDING, Task
from kdstudio.core.tasks.base import (
    CACHE_SETTINGS,
    EMBEDDING_SETTINGS,
    LOGIT_SETTINGS,
    PREPARE_SETTINGS,
)

PACKAGE = Path(__file__).resolve().parents[2] / "kdstudio"
FLAGS = ("generative", "output")


def _receiver(node: ast.Attribute) -> str:
    """The last name of what the attribute is read from: `b` for `a.b.output`."""
    v = node.value
    if isinstance(v, ast.Attribute):
        return v.attr
    if isinstance(v, ast.Name):
        return v.id
    return ""


def _flag_reads(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """`<x>.generative` / `<x>.output` reads in one module, except ONNX nodes' and graphs'
    outputs and a loss term's Needs.output (a term's needs, not a task's flag)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    needs_classes = {n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Needs"}
    inside_needs = {id(n) for c in needs_classes for n in ast.walk(c)}
    hits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr in FLAGS):
            continue
        who = _receiver(node)
        if node.attr == "output" and (who in ("node", "graph", "needs")
                                      or (who == "self" and id(node) in inside_needs)):
            continue
        hits.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    # getattr(task, "generative") would dodge the check above.
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "getattr" and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in FLAGS):
            hits.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return hits


def test_no_module_outside_the_tasks_reads_their_flags():
    tasks_dir = PACKAGE / "core" / "tasks"
    hits = [h for path in sorted(PACKAGE.rglob("*.py")) if tasks_dir not in path.parents
            for h in _flag_reads(path)]
    assert not hits, ("Ask the task a question named for the behaviour instead of reading "
                      "its flags:\n" + "\n".join(hits))


def test_the_flag_check_finds_a_read(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f(task, node, t):\n    return task.output == 'logits' or node.output "
                      "or t.needs.output or task.generative or getattr(task, 'output')\n")
    reads = sorted(r.split(": ", 1)[1] for r in _flag_reads(sample, tmp_path))
    assert reads == ["getattr(task, 'output')", "task.generative", "task.output"]


# -- each family's answers -------------------------------------------------------------------------

def test_generation_questions_belong_to_the_language_model_only():
    for attr in ("generation_applies", "shows_token_view", "caches_teacher",
                 "scores_vocabulary", "chunks_head"):
        assert getattr(CAUSAL_LM, attr) is True, attr
        assert getattr(CLASSIFICATION, attr) is False, attr
        assert getattr(EMBEDDING, attr) is False, attr


def test_logits_and_the_logit_terms():
    assert CAUSAL_LM.gives_logits and CLASSIFICATION.gives_logits and not EMBEDDING.gives_logits
    assert [_gives_logits(t) for t in (CAUSAL_LM, CLASSIFICATION, EMBEDDING)] == [True, True, False]
    feats = {"logits": "L", "embedding": "E", "hidden_states": None}
    assert CAUSAL_LM.output_of(feats) == "L" and CLASSIFICATION.output_of(feats) == "L"
    assert EMBEDDING.output_of(feats) == "E"


def test_method_page_settings_each_family_shows():
    for key in LOGIT_SETTINGS:
        assert CAUSAL_LM.shows_setting(*key) and CLASSIFICATION.shows_setting(*key)
        assert not EMBEDDING.shows_setting(*key)
    for key in EMBEDDING_SETTINGS:
        assert EMBEDDING.shows_setting(*key)
        assert not CAUSAL_LM.shows_setting(*key) and not CLASSIFICATION.shows_setting(*key)
    for key in PREPARE_SETTINGS:
        assert [t.shows_setting(*key) for t in (CAUSAL_LM, CLASSIFICATION, EMBEDDING)] == \
            [False, True, False]
    for key in CACHE_SETTINGS:
        assert [t.shows_setting(*key) for t in (CAUSAL_LM, CLASSIFICATION, EMBEDDING)] == \
            [True, False, False]
    for key in (("method", "hidden_weight"), ("method", "hidden_loss"), ("teacher", "dtype")):
        assert all(t.shows_setting(*key) for t in (CAUSAL_LM, CLASSIFICATION, EMBEDDING))


def test_the_teacher_head_check():
    assert CAUSAL_LM.trained_head_classes == ("ForCausalLM", "LMHeadModel",
                                              "ForConditionalGeneration")
    assert CLASSIFICATION.trained_head_classes == () == EMBEDDING.trained_head_classes
    err = untrained_head_error(CAUSAL_LM, "m", "a BertModel")
    assert "without a trained language-model head, so as a causal-lm teacher" in str(err)
    assert err.hint == ("Choose a causal language model as the teacher: the built-in "
                        "'everyday-gpt', a Hub model such as 'gpt2', or a folder saved from a "
                        "*ForCausalLM model. A sentence encoder such as all-MiniLM-L6-v2 fits "
                        "task = \"sentence-embedding\".")
    err = untrained_head_error(CLASSIFICATION, "m", "")
    assert ("without a trained sequence-classification head, so as a sequence-classification"
            in str(err))
    assert err.hint == "Choose a teacher trained for this task."


def test_export_questions():
    assert [t.onnx_output for t in (CAUSAL_LM, CLASSIFICATION, EMBEDDING)] == \
        ["logits", "logits", "sentence_embedding"]
    assert [t.export_pools for t in (CAUSAL_LM, CLASSIFICATION, EMBEDDING)] == [False, False, True]
    assert [t.saves_sentence_transformers for t in (CAUSAL_LM, CLASSIFICATION, EMBEDDING)] == \
        [False, False, True]
    assert CAUSAL_LM.export_kwargs() == {"use_cache": False}
    assert CLASSIFICATION.export_kwargs() == {} == EMBEDDING.export_kwargs()
    assert EMBEDDING.export_check_reads_teacher(False)
    assert not EMBEDDING.export_check_reads_teacher(True)
    assert not CAUSAL_LM.export_check_reads_teacher(False)
    assert not CLASSIFICATION.export_check_reads_teacher(False)
    model = SimpleNamespace(get_output_embeddings=lambda: SimpleNamespace(
        weight=torch.zeros(1000, 2)))
    # 256 MiB of fp32 logits over a 1000-entry vocabulary and 128 positions: 524 rows.
    assert CAUSAL_LM.export_batch_size(32, model, 128, 256 * 2**20) == 32
    assert CAUSAL_LM.export_batch_size(4096, model, 128, 256 * 2**20) == 524
    assert CAUSAL_LM.export_batch_size(32, model, 128, 1) == 1
    assert CLASSIFICATION.export_batch_size(4096, model, 128, 1) == 4096


# -- the export's check: the numbers the old code gave ----------------------------------------

def _old_nearest(emb):
    e = F.normalize(emb.float(), dim=-1)
    sim = e @ e.T
    sim.fill_diagonal_(-float("inf"))
    return sim.argmax(-1)


def _check(task, batches, outs, labels=None, vocab=0, teacher=None):
    check = task.output_check(labels, vocab, teacher)
    diff = max(check.add(b, r, c) for b, (r, c) in zip(batches, outs))
    return (diff, *check.result())


def test_language_model_check_is_perplexity_over_real_tokens():
    torch.manual_seed(0)
    batches, outs = [], []
    for _ in range(2):
        mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
        labels = torch.randint(0, 11, (2, 5)).masked_fill(mask == 0, -100)
        r = torch.randn(2, 5, 12)
        batches.append({"attention_mask": mask, "labels": labels})
        outs.append((r, r + 0.01 * torch.randn_like(r)))
    diff, metric, value, student, extra = _check(CAUSAL_LM, batches, outs, vocab=11)
    nll_r = nll_c = 0.0
    count, old_diff = 0, 0.0
    for b, (r, c) in zip(batches, outs):
        keep = b["attention_mask"].bool()
        old_diff = max(old_diff, (r - c).abs()[keep].max().item())
        lab = b["labels"][:, 1:].flatten()
        nll_r += F.cross_entropy(r[:, :-1, :11].flatten(0, 1), lab, ignore_index=-100,
                                 reduction="sum").item()
        nll_c += F.cross_entropy(c[:, :-1, :11].flatten(0, 1), lab, ignore_index=-100,
                                 reduction="sum").item()
        count += int((lab != -100).sum())
    assert (diff, metric, extra) == (old_diff, "perplexity", {})
    assert value == math.exp(min(nll_c / count, 50.0))
    assert student == math.exp(min(nll_r / count, 50.0))


def test_classifier_check_is_accuracy_and_agreement():
    torch.manual_seed(1)
    outs = [(torch.randn(4, 3), torch.randn(4, 3)) for _ in range(2)]
    labels = [0, 1, 2, 0, 1, 1, 2, 0]
    diff, metric, value, student, extra = _check(CLASSIFICATION, [{}, {}], outs, labels)
    r, c = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
    gold = torch.tensor(labels)
    assert diff == max((a - b).abs().max().item() for a, b in outs)
    assert metric == "accuracy"
    assert value == (c.argmax(-1) == gold).float().mean().item()
    assert student == (r.argmax(-1) == gold).float().mean().item()
    assert extra == {"agreement_with_student": (r.argmax(-1) == c.argmax(-1)).float().mean().item()}


@pytest.mark.parametrize("case", ["labels", "teacher", "neither"])
def test_embedding_check_follows_the_runs_headline(case):
    torch.manual_seed(2)
    outs = [(torch.randn(5, 8), torch.randn(5, 8)) for _ in range(2)]
    r, c = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
    labels = [0, 1, 0, 1, 2, 2, 0, 1, 2, 0] if case == "labels" else None
    teacher = torch.randn(10, 8) if case == "teacher" else None
    diff, metric, value, student, extra = _check(EMBEDDING, [{}, {}], outs, labels,
                                                 teacher=teacher)
    old_extra = {"cosine_to_student": F.cosine_similarity(c, r, dim=-1).mean().item(),
                 "neighbour_agreement_with_student":
                     (_old_nearest(c) == _old_nearest(r)).float().mean().item()}
    assert extra == old_extra
    if case == "labels":
        gold = torch.tensor(labels)
        assert (metric, value, student) == (
            "knn_accuracy", (gold[_old_nearest(c)] == gold).float().mean().item(),
            (gold[_old_nearest(r)] == gold).float().mean().item())
    elif case == "teacher":
        assert (metric, value, student) == (
            "cosine_to_teacher", F.cosine_similarity(c, teacher, dim=-1).mean().item(),
            F.cosine_similarity(r, teacher, dim=-1).mean().item())
    else:
        assert (metric, value, student) == ("cosine_to_student", old_extra["cosine_to_student"],
                                            1.0)


# -- Compare ---------------------------------------------------------------------------------------

def _answer(text="", probabilities=(), neighbours=()):
    return ModelAnswer(text=text, latency_ms=1.0, probabilities=list(probabilities),
                       neighbours=list(neighbours))


def test_compare_views_and_verdicts():
    assert [t.compare_view for t in (CAUSAL_LM, CLASSIFICATION, EMBEDDING)] == \
        ["continuation", "probabilities", "neighbours"]
    v = CAUSAL_LM.compare_verdict
    assert v(_answer(" sunny "), _answer("sunny")) == " and wrote the same continuation."
    assert v(_answer("sunny"), _answer("rain")) == "; its continuation differs from the teacher's."
    v = CLASSIFICATION.compare_verdict
    assert v(_answer(probabilities=[("sport", 0.9)]), _answer(probabilities=[("sport", 0.6)])) \
        == ", and both chose “sport”."
    assert v(_answer(probabilities=[("sport", 0.9)]), _answer()) \
        == "; the teacher chose “sport”, the student “?”."
    v = EMBEDDING.compare_verdict
    assert v(_answer(neighbours=[("a", 0.9)]), _answer(neighbours=[("a", 0.8)])) \
        == ", and both found the same closest sentence."
    assert v(_answer(neighbours=[("a", 0.9)]), _answer()) == "; their closest sentences differ."


class _Plain(Task):
    """A family that overrides nothing: the base class's defaults."""

    name = "plain"
    output = "logits"


def test_the_base_class_defaults():
    t = _Plain()
    assert t.compare_view == "text" and t.onnx_output == "logits" and not t.export_pools
    assert not (t.generation_applies or t.shows_token_view or t.caches_teacher
                or t.scores_vocabulary or t.chunks_head or t.saves_sentence_transformers)
    assert t.trained_head_classes == () and t.head_words == "plain"
    assert t.export_kwargs() == {} and t.export_batch_size(8, None, 128, 1) == 8
    assert t.compare_verdict(_answer("x"), _answer(" x")) == ", and both gave the same answer."
    assert t.compare_verdict(_answer("x"), _answer("y")) == "; their answers differ."
    with pytest.raises(NotImplementedError, match="plain"):
        t.output_check(None, 0)
