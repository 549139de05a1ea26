"""Token classification (named-entity tagging): word/tag data, alignment to sub-word tokens,
entity metrics against seqeval, the logit/hard-label terms per word, a short run and an export."""

from __future__ import annotations

import json

import pytest
import torch

from kdstudio.core.config import DataConfig
from kdstudio.core.errors import DataError
from kdstudio.core.tasks import get_task
from kdstudio.core.tasks.word_tags import encode_words, entity_spans, scheme_tags, split_words
from tests.conftest import minilm_folder, tiny_config

TASK = get_task("token-classification")


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_folder()))


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


ROWS = [{"tokens": ["We", "flew", "to", "Lisbon", "on", "Friday"],
         "ner_tags": ["O", "O", "O", "B-PLACE", "O", "B-TIME"]},
        {"tokens": ["Priya", "likes", "olive", "oil"],
         "ner_tags": ["B-PERSON", "O", "B-FOOD", "I-FOOD"]}] * 5


# -- data ------------------------------------------------------------------------------------------

def test_jsonl_rows_become_texts_and_tag_ids_with_outside_first(tmp_path):
    from kdstudio.core.data import load_text_data

    cfg = DataConfig(dataset=_write_jsonl(tmp_path / "ner.jsonl", ROWS), eval_fraction=0.2)
    d = load_text_data(cfg, TASK)
    assert d.label_names[0] == "O" and d.label_names == sorted(d.label_names, key=lambda n: n != "O")
    assert (d.text_column, d.label_column) == ("tokens", "ner_tags")
    assert len(d.train_texts) == 8 and len(d.eval_texts) == 2
    for text, tags in zip(d.train_texts, d.train_labels):
        assert len(text.split(" ")) == len(tags)
    row = d.train_texts.index("Priya likes olive oil")
    assert [d.label_names[i] for i in d.train_labels[row]] == ["B-PERSON", "O", "B-FOOD", "I-FOOD"]


def test_csv_with_space_separated_words_and_number_tags(tmp_path):
    from kdstudio.core.data import load_text_data

    path = tmp_path / "ner.csv"
    path.write_text("words,tags\n" + "".join(f"Paris is nice,{i % 2} 0 0\n" for i in range(10)),
                    encoding="utf-8")
    d = load_text_data(DataConfig(dataset=str(path), eval_fraction=0.2), TASK)
    assert d.label_names == ["0", "1"] and (d.text_column, d.label_column) == ("words", "tags")
    assert all(t == "Paris is nice" for t in d.train_texts)


def test_conll_classlabel_sequences_keep_their_names(monkeypatch):
    import datasets

    from kdstudio.core import data

    feats = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-LOC", "I-LOC"]))})
    ds = datasets.Dataset.from_dict({"tokens": [["New", "York", "rocks"]] * 6,
                                     "ner_tags": [[1, 2, 0]] * 6}, features=feats)
    monkeypatch.setattr(data, "_load_raw", lambda *a: datasets.DatasetDict(train=ds, validation=ds))
    d = data.load_text_data(DataConfig(dataset="x/conll", eval_split="validation"), TASK)
    assert d.label_names == ["O", "B-LOC", "I-LOC"] and d.eval_labels[0] == [1, 2, 0]
    prev = data.preview(DataConfig(dataset="x/conll"), task=TASK)
    assert (prev.text_column, prev.label_column, prev.label_names) == ("tokens", "ner_tags",
                                                                      ["O", "B-LOC", "I-LOC"])


def test_bad_rows_are_named_with_the_columns(tmp_path):
    from kdstudio.core.data import load_text_data

    bad = ROWS[:4] + [{"tokens": ["Oslo", "is", "cold"], "ner_tags": ["B-PLACE", "O"]}] + ROWS[4:]
    cfg = DataConfig(dataset=_write_jsonl(tmp_path / "bad.jsonl", bad), eval_split="train")
    with pytest.raises(DataError, match=r"Row 5 .*'Oslo is cold\.\.\.'.* 3 words in 'tokens' "
                                        r"but 2 tags in 'ner_tags'"):
        load_text_data(cfg, TASK)
    spaced = [{"tokens": ["New York", "is", "big"], "ner_tags": ["B-PLACE", "O", "O"]}] * 4
    cfg = DataConfig(dataset=_write_jsonl(tmp_path / "sp.jsonl", spaced), eval_split="train")
    with pytest.raises(DataError, match="'New York'.*empty or holds spaces"):
        load_text_data(cfg, TASK)
    cfg = DataConfig(dataset=_write_jsonl(tmp_path / "ok.jsonl", ROWS), eval_split="train",
                     label_column="labelz")
    with pytest.raises(DataError, match="tags column 'labelz' is not in"):
        load_text_data(cfg, TASK)


def test_the_default_reading_of_other_tasks_is_unchanged():
    from kdstudio.core.data import load_text_data

    assert get_task("sequence-classification").read_examples(None, None, None, "") is None
    d = load_text_data(DataConfig(dataset="builtin:everyday-topics", label_column="topic",
                                  max_train_samples=20), "sequence-classification")
    assert isinstance(d.train_labels[0], int) and d.text_column == "text"


def test_first_sub_token_of_each_word_carries_its_tag(tok):
    words = [["Unbelievably", "tasty", "sardines"], ["Hi"]]
    enc, word_ids = encode_words(tok, words, 32, [[1, 0, 2], [3]])
    labels = enc["labels"]
    for r, ids in enumerate(word_ids):
        firsts = [p for p, w in enumerate(ids) if w is not None and (p == 0 or ids[p - 1] != w)]
        assert labels[r][firsts].tolist() == [[1, 0, 2], [3]][r]
        others = [p for p in range(labels.shape[1]) if p not in firsts]
        assert (labels[r][others] == -100).all()
    # "Unbelievably" and "sardines" are cut into several tokens: only the first is scored.
    assert len(word_ids[0]) > 5
    enc, _ = encode_words(tok, [["a"] * 50], 8, [[1] * 50])
    assert int((enc["labels"] != -100).sum()) == 6  # truncated: 8 minus [CLS] and [SEP]


def test_slow_tokenizers_are_refused():
    from kdstudio.core.errors import ModelError

    class Slow:
        is_fast = False
    with pytest.raises(ModelError, match="slow"):
        encode_words(Slow(), [["a"]], 8)


# -- metrics ----------------------------------------------------------------------------------------

def test_entity_metrics_match_seqeval_on_a_hand_case():
    from seqeval.metrics import f1_score, precision_score, recall_score

    from kdstudio.core.measures import tagging_metrics

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-FOOD", "I-FOOD", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-FOOD", "O", "B-LOC"]]
    m = tagging_metrics(gold, pred)
    # Right: the person. Wrong span: "olive" alone. Missed: the place; invented: a place.
    assert m["entity_precision"] == pytest.approx(1 / 3) == precision_score(gold, pred)
    assert m["entity_recall"] == pytest.approx(1 / 3) == recall_score(gold, pred)
    assert m["entity_f1"] == pytest.approx(f1_score(gold, pred))
    assert m["token_accuracy"] == pytest.approx(5 / 8)  # 3 of 4 words, then 2 of 4
    assert tagging_metrics(gold, gold)["entity_f1"] == 1.0


def test_tags_without_prefixes_are_read_as_io_tags():
    assert scheme_tags(["O", "0", "B-X", "PLACE"]) == ["O", "O", "B-X", "I-PLACE"]
    assert entity_spans(["in", "New", "York", "on", "Monday"],
                        ["O", "PLACE", "PLACE", "O", "TIME"]) == [("New York", "PLACE"),
                                                                 ("Monday", "TIME")]
    assert split_words("Wi-Fi at Marguerite's, today!") == ["Wi-Fi", "at", "Marguerite's", ",",
                                                            "today", "!"]


def test_the_export_check_reads_tags_by_their_names():
    """Entity F1 of an export needs the tag names: B-/I- say where an entity starts."""
    check = TASK.output_check(None, 0)
    labels = torch.tensor([[-100, 1, 2, 0, -100]])  # B-X I-X O
    batch = {"labels": labels, "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    ref = torch.nn.functional.one_hot(torch.tensor([[0, 1, 2, 0, 0]]), 3).float()
    cand = torch.nn.functional.one_hot(torch.tensor([[0, 1, 1, 0, 0]]), 3).float()  # B-X B-X
    check.label_names = ["O", "B-X", "I-X"]
    assert check.add(batch, ref, cand) == 1.0
    metric, value, student_value, extra = check.result()
    assert (metric, value, student_value) == ("entity_f1", 0.0, 1.0)
    assert extra["agreement_with_student"] == pytest.approx(2 / 3)


# -- the loss terms per word --------------------------------------------------------------------

def test_the_logit_terms_apply_and_need_one_tokenizer():
    from kdstudio.core.config import default_config
    from kdstudio.core.objective import plain_terms, terms_for, working_terms

    assert [t.name for t in terms_for(TASK)] == ["logit", "hard_label", "hidden"]
    assert [t.name for t in plain_terms(TASK)] == ["hard_label"]  # what prepares the teacher
    assert [t.name for t in working_terms(TASK, same_tokens=False)] == ["hard_label"]
    cfg = default_config(TASK.name)
    assert cfg.data.dataset == "builtin:everyday-entities" and cfg.method.logit_weight == 1.0
    assert TASK.headline(True) == ("entity_f1", True)


def test_logit_term_compares_only_the_tagged_positions():
    from types import SimpleNamespace

    from kdstudio.core.batch import Batch
    from kdstudio.core.losses import logit_distillation_loss

    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    labels = torch.tensor([[-100, 1, -100, 2, -100], [-100, 0, 3, -100, -100]])
    x = SimpleNamespace(s={"logits": s}, t={"logits": t},
                        batch=Batch({}, {}, labels, 10, 2))
    s_out, t_out, mask = TASK.paired_logits(x)
    assert mask.tolist() == (labels != -100).tolist()
    t_moved = t.clone()
    t_moved[labels == -100] = 100.0  # untagged positions (sub-tokens, padding) never count
    loss = logit_distillation_loss(s_out, t_out, mask=mask)
    assert loss == pytest.approx(float(logit_distillation_loss(s, t_moved, mask=mask)))
    assert loss == pytest.approx(float(logit_distillation_loss(s[mask], t[mask])))
    s_lab, y = TASK.labelled_logits(x)
    assert y is labels and s_lab is s


# -- end to end ----------------------------------------------------------------------------------

def regular_rows(n: int = 120, seed: int = 0) -> list[dict]:
    """Sentences a tiny model learns to tag in a few dozen steps (random weights learn the
    built-in corpus's varied entities far more slowly)."""
    import random

    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rnd.choice(["Ana", "Omar", "Lena"]), "went", "to",
                 rnd.choice(["Paris", "Oslo", "Lima"]), "on", rnd.choice(["Monday", "Friday"]), "."]
        tags = ["B-PERSON", "O", "O", "B-PLACE", "O", "B-TIME", "O"]
        if rnd.random() < 0.5:
            words, tags = ["Someone"] + words[1:], ["O"] + tags[1:]
        out.append({"tokens": words, "ner_tags": tags})
    return out


@pytest.fixture(scope="module")
def entity_run(tiny, tmp_path_factory):
    import os

    from kdstudio.core.trainer import run_training

    home = tmp_path_factory.mktemp("kdhome")
    data = _write_jsonl(tmp_path_factory.mktemp("ner") / "regular.jsonl", regular_rows())
    old = os.environ.get("KDSTUDIO_HOME")
    os.environ["KDSTUDIO_HOME"] = str(home)
    try:
        torch.manual_seed(0)
        cfg = tiny_config("token-classification", tiny["bert"], data={"dataset": data},
                          teacher={"prepare_epochs": 2, "prepare_learning_rate": 5e-3},
                          student={"layers": 2},
                          training={"max_steps": 6, "eval_every": 3, "device": "cpu",
                                    "batch_size": 8, "learning_rate": 1e-3, "seed": 1})
        result = run_training(cfg)
    finally:
        if old is None:
            os.environ.pop("KDSTUDIO_HOME", None)
        else:
            os.environ["KDSTUDIO_HOME"] = old
    return result


@pytest.mark.slow
def test_a_short_run_prepares_the_teacher_and_reports_entity_figures(entity_run):
    s = entity_run.summary
    assert s["task"] == "token-classification" and s["headline_metric"] == "entity_f1"
    assert s["label_names"] == ["O", "B-PERSON", "B-PLACE", "B-TIME"]
    for who in ("teacher_metrics", "student_metrics"):
        m = s[who]
        for k in ("entity_f1", "entity_precision", "entity_recall", "token_accuracy"):
            assert 0.0 <= m[k] <= 1.0, (who, k)
    assert 0.0 <= s["student_metrics"]["agreement"] <= 1.0
    # The tiny teacher was fine-tuned first (it had no tagging head): it finds the entities.
    assert s["teacher_metrics"]["entity_f1"] > 0.6
    assert s["student_metrics"]["entity_f1"] > s["student_metrics_before"]["entity_f1"] - 0.05
    losses = [json.loads(x) for x in (entity_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    names = {k for row in losses for k in row.get("losses", {})}
    assert {"logit", "hard_label"} <= names


@pytest.mark.slow
def test_compare_tags_the_words_of_the_input(entity_run):
    from kdstudio.core.compare import Comparer

    cmp = Comparer.from_run(entity_run.run_dir, device="cpu")
    out = cmp.compare("Lena went to Oslo on Friday.")
    for ans in (out.teacher, out.student):
        assert [w for w, _, _ in ans.tags] == ["Lena", "went", "to", "Oslo", "on", "Friday", "."]
        assert all(tag in cmp.student.label_names for _, tag, _ in ans.tags)
        assert all(0.0 < p <= 1.0 for _, _, p in ans.tags)
        assert ans.text
    assert [t for _, t, _ in out.teacher.tags][3] == "B-PLACE" and "Oslo (PLACE)" in out.teacher.text
    assert "tag" in get_task(cmp.task).compare_verdict(out.teacher, out.student)


@pytest.mark.slow
def test_onnx_int8_export_is_checked_on_entity_f1(entity_run):
    pytest.importorskip("onnxruntime")
    from kdstudio.core.export import export_run

    r = export_run(entity_run.run_dir, fmt="onnx", quantize="int8")
    assert r.metric == "entity_f1"
    # The PyTorch student on the run's eval rows, read with its tag names: the run's figure.
    assert r.student_value == pytest.approx(entity_run.summary["student_metrics"]["entity_f1"],
                                            abs=0.02)
    assert 0.0 <= r.value <= 1.0 and 0.0 <= r.extra["agreement_with_student"] <= 1.0
    assert r.extra["agreement_with_student"] > 0.5
