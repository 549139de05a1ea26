"""The task registry and the loss-term seam: each family and each term in one place."""

import sys

import pytest

from kdstudio.core.config import config_from_dict, default_config
from kdstudio.core.errors import ConfigError
from kdstudio.core.objective import (
    active_terms,
    all_terms,
    check_terms,
    has_plain_loss,
    plain_terms,
    terms_for,
)
from kdstudio.core.tasks import (
    CAUSAL_LM,
    CLASSIFICATION,
    EMBEDDING,
    REGISTRY,
    TASK_NAMES,
    Task,
    get_task,
)


def test_registry_gives_one_object_per_family_and_refuses_unknown_names():
    assert set(TASK_NAMES) == {"causal-lm", "sequence-classification", "sentence-embedding",
                               "token-classification"}
    for name, task in REGISTRY.items():
        assert isinstance(task, Task) and task.name == name and get_task(name) is task
        assert get_task(task) is task
        assert task.title and task.description and task.auto_class and task.demo_file
    with pytest.raises(ConfigError, match="task is 'translation'.*'causal-lm'"):
        get_task("translation")


def test_each_family_answers_its_own_questions():
    assert CAUSAL_LM.generative and CAUSAL_LM.packs and not CAUSAL_LM.needs_labels
    assert CLASSIFICATION.needs_labels and CLASSIFICATION.has_task_head
    assert EMBEDDING.output == "embedding" and not EMBEDDING.generative
    assert EMBEDDING.headline(False) == ("cosine_to_teacher", True)
    assert EMBEDDING.headline(True) == ("knn_accuracy", True)
    assert CAUSAL_LM.headline(True) == ("perplexity", False)
    # The baseline needs a loss that learns from the data alone.
    assert has_plain_loss(CAUSAL_LM) and has_plain_loss(CLASSIFICATION)
    assert not has_plain_loss(EMBEDDING)


def test_terms_apply_to_the_families_they_name():
    from kdstudio.core.objective import _BUILTIN

    builtin = {t.name for t in _BUILTIN}
    # The built-in terms, by what each family's output is; plug-in terms (core/terms) say
    # for themselves which families they serve.
    names = lambda task: [t.name for t in terms_for(task) if t.name in builtin]
    assert names(CAUSAL_LM) == ["logit", "hard_label", "cross_tokenizer", "hidden"]
    assert names(CLASSIFICATION) == ["logit", "hard_label", "hidden"]
    for term in all_terms():
        assert term.users(), f"{term.name} applies to no task family"
    assert "embedding" in names(EMBEDDING) and "logit" not in names(EMBEDDING)
    assert [t.name for t in plain_terms(CAUSAL_LM)] == ["hard_label"]
    terms = all_terms()
    assert len({t.name for t in terms}) == len(terms)
    assert len({t.weight_key for t in terms}) == len(terms)


def test_weights_for_terms_of_another_family_are_refused_with_the_key():
    m = default_config("sentence-embedding").method
    m.logit_weight = 1.0
    with pytest.raises(ConfigError, match="method.logit_weight is 1.0.*not 'sentence-embedding'"):
        check_terms(EMBEDDING, m)
    with pytest.raises(ConfigError, match="cross_tokenizer_weight.*only to the causal-lm"):
        config_from_dict({"task": "sequence-classification",
                          "method": {"cross_tokenizer_weight": 1.0}})
    m = default_config("causal-lm").method
    m.logit_weight = 0.0
    with pytest.raises(ConfigError, match="Every loss weight"):
        check_terms(CAUSAL_LM, m)
    m.hard_label_weight = 1.0
    assert [t.name for t in active_terms(CAUSAL_LM, m)] == ["hard_label"]


def test_defaults_come_from_the_task():
    for task in REGISTRY.values():
        cfg = default_config(task.name)
        for key, value in task.method_defaults.items():
            assert getattr(cfg.method, key) == value
        for key, value in task.data_defaults.items():
            assert getattr(cfg.data, key) == value
        cfg.validate()


def test_config_and_tasks_import_without_torch():
    import subprocess

    code = ("import sys, kdstudio.core.config, kdstudio.core.tasks, kdstudio.core.objective; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_language_model_evaluation_is_the_same_chunked_or_from_full_logits(monkeypatch, tiny):
    """Perplexity, agreement and KL computed chunk by chunk over the heads equal the figures
    from whole-batch logits (the path for heads that are more than a linear map)."""
    import torch

    from kdstudio.core.evaluation import EvalSet, Evaluator
    from kdstudio.core.models import load_model
    from kdstudio.core.tasks import base
    from tests.conftest import corpus_texts

    teacher = load_model(str(tiny["gpt2"]), "causal-lm")
    student = load_model(str(tiny["llama"]), "causal-lm")
    ev = Evaluator(CAUSAL_LM, EvalSet(CAUSAL_LM, corpus_texts(24), None, max_samples=0,
                                      max_length=32, pack=True, batch_size=8),
                   teacher.model.eval(), teacher.tokenizer, teacher.tokenizer,
                   torch.device("cpu"))
    chunked = ev.student_metrics(student.model)
    t_chunked = CAUSAL_LM.teacher_metrics(ev)
    monkeypatch.setattr(base, "plain_head", lambda model: None)
    full = ev.student_metrics(student.model)
    assert CAUSAL_LM.teacher_metrics(ev)["perplexity"] == pytest.approx(t_chunked["perplexity"], rel=1e-5)
    for k in ("perplexity", "top1_agreement", "kl_to_teacher"):
        assert chunked[k] == pytest.approx(full[k], rel=1e-5), k
    assert chunked["top1_agreement"] < 1 and chunked["kl_to_teacher"] > 0


def test_the_baseline_is_offered_only_where_the_task_can_train_one():
    from kdstudio.core.objective import baseline_possible

    assert baseline_possible("causal-lm") and baseline_possible(CLASSIFICATION)
    assert not baseline_possible("sentence-embedding")
    # A run's summary without a task, or with one this version does not know, keeps the words.
    assert baseline_possible("") and baseline_possible(None) and baseline_possible("no-such-task")

