import json
from collections import Counter

import pytest

from kdstudio.core.config import DataConfig
from kdstudio.core.data import (
    BatchOrder,
    causal_blocks,
    collate_blocks,
    load_text_data,
    preview,
)
from kdstudio.core.errors import DataError
from tests.conftest import CORPUS


def test_builtin_corpus_meets_its_datasheet():
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    texts = [r["text"] for r in rows]
    assert len(texts) >= 1500 and len(set(texts)) == len(texts)
    topics = Counter(r["topic"] for r in rows)
    assert len(topics) >= 6 and min(topics.values()) >= 100
    assert all(4 <= len(t.split()) <= 40 for t in texts)


@pytest.mark.slow
def test_builtin_load_detects_columns_and_splits():
    d = load_text_data(DataConfig(eval_fraction=0.2), "sequence-classification", seed=1)
    assert d.text_column == "text" and d.label_column == "topic"
    assert len(d.label_names) == 10 and "sport" in d.label_names
    assert len(d.train_texts) == 1360 and len(d.eval_texts) == 340
    assert not set(d.train_texts) & set(d.eval_texts)
    assert len(d.train_labels) == len(d.train_texts)
    assert max(d.train_labels) == 9
    # the same seed gives the same split
    again = load_text_data(DataConfig(eval_fraction=0.2), "sequence-classification", seed=1)
    assert again.eval_texts == d.eval_texts


def _write(path, rows, fmt):
    if fmt == "csv":
        path.write_text("review,stars\n" + "".join(f"\"{r['review']}\",{r['stars']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "parquet":
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)


ROWS = [{"review": f"Review number {i} says the soup was {'good' if i % 2 else 'bad'}.",
         "stars": i % 2} for i in range(40)]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json", "parquet"])
def test_local_files(tmp_path, fmt):
    path = tmp_path / f"data.{fmt}"
    _write(path, ROWS, fmt)
    d = load_text_data(DataConfig(dataset=str(path)), "sequence-classification")
    assert d.text_column == "review" and d.label_column == "stars"
    assert d.label_names == ["0", "1"]
    assert len(d.train_texts) + len(d.eval_texts) == 40


def test_txt_file_and_explicit_eval_split(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(f"Line {i} of the text." for i in range(30)) + "\n\n")
    d = load_text_data(DataConfig(dataset=str(path), eval_fraction=0.2), "causal-lm")
    assert d.text_column == "text" and len(d.eval_texts) == 6
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder / "train.jsonl", ROWS[:30], "jsonl")
    _write(folder / "validation.jsonl", ROWS[30:], "jsonl")
    d = load_text_data(DataConfig(dataset=str(folder), eval_split="validation"),
                       "sequence-classification")
    assert len(d.train_texts) == 30 and len(d.eval_texts) == 10


def test_column_overrides(tmp_path):
    path = tmp_path / "d.jsonl"
    _write(path, [{"a": f"some words {i}", "b": f"other words here {i}", "cls": i % 3}
                  for i in range(30)], "jsonl")
    d = load_text_data(DataConfig(dataset=str(path), text_column="a", label_column="cls"),
                       "sequence-classification")
    assert d.text_column == "a" and d.train_texts[0].startswith("some")
    # detection picks the column with the longest texts
    assert load_text_data(DataConfig(dataset=str(path)), "causal-lm").text_column == "b"


def test_bad_data_messages(tmp_path):
    with pytest.raises(DataError, match="'.*missing.csv' does not exist"):
        load_text_data(DataConfig(dataset=str(tmp_path / "missing.csv")), "causal-lm")
    path = tmp_path / "d.jsonl"
    _write(path, [{"text": f"t {i}", "score": i / 7} for i in range(30)], "jsonl")
    with pytest.raises(DataError, match="text column 'body' is not in .*d.jsonl.*text, score"):
        load_text_data(DataConfig(dataset=str(path), text_column="body"), "causal-lm")
    with pytest.raises(DataError, match="label column 'score'.*numbers such as .*not classes"):
        load_text_data(DataConfig(dataset=str(path), label_column="score"), "sequence-classification")
    with pytest.raises(DataError, match="no label column"):
        load_text_data(DataConfig(dataset=str(path)), "sequence-classification")
    with pytest.raises(DataError, match="split 'dev' is not in"):
        load_text_data(DataConfig(dataset=str(path), split="dev"), "causal-lm")
    with pytest.raises(DataError, match="eval split 'valid' is not in"):
        load_text_data(DataConfig(dataset=str(path), eval_split="valid"), "causal-lm")
    one = tmp_path / "one.jsonl"
    _write(one, [{"text": f"t {i}", "label": "x"} for i in range(30)], "jsonl")
    with pytest.raises(DataError, match="only one class"):
        load_text_data(DataConfig(dataset=str(one)), "sequence-classification")
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(DataError, match="empty"):
        load_text_data(DataConfig(dataset=str(empty)), "causal-lm")
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    with pytest.raises(DataError, match="extension '.xlsx'.*csv"):
        load_text_data(DataConfig(dataset=str(odd)), "causal-lm")
    broken = tmp_path / "broken.json"
    broken.write_text("[{\"text\": ")
    with pytest.raises(DataError, match=r"broken.json' is not valid JSON \(line 1, column 11"):
        load_text_data(DataConfig(dataset=str(broken)), "causal-lm")
    with pytest.raises(DataError, match="no built-in data set called 'nope'"):
        load_text_data(DataConfig(dataset="builtin:nope"), "causal-lm")


def test_free_text_labels_are_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    _write(path, [{"text": f"t {i}", "label": f"unique {i}"} for i in range(200)], "jsonl")
    with pytest.raises(DataError, match="looks like free text"):
        load_text_data(DataConfig(dataset=str(path)), "sequence-classification")


def test_preview():
    pv = preview(DataConfig(), n=5, task="sequence-classification")
    assert len(pv.rows) == 5 and pv.num_rows == 1700
    assert pv.text_column == "text" and pv.label_column == "topic"
    assert set(pv.columns) == {"text", "topic"} and len(pv.label_names) == 10


def test_batch_order_is_deterministic_and_covers_each_epoch():
    o = BatchOrder(10, 4, seed=3)
    assert o.per_epoch == 3
    epoch0 = [i for b in range(3) for i in o.indices(b)]
    assert set(epoch0) == set(range(10)) and all(len(o.indices(b)) == 4 for b in range(6))
    assert BatchOrder(10, 4, seed=3).indices(4) == o.indices(4)
    assert o.indices(0) != o.indices(3)  # a new shuffle each epoch


def test_causal_packing(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["gpt2"])
    texts = [f"Sentence number {i} is short." for i in range(40)]
    packed = causal_blocks(tok, texts, 16, pack=True)
    assert all(len(b) == 16 for b in packed[:-1])
    total = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    assert sum(len(b) for b in packed) == total
    unpacked = causal_blocks(tok, texts, 16, pack=False)
    assert len(unpacked) == 40
    batch = collate_blocks(unpacked[:3], tok.pad_token_id)
    assert (batch["labels"] == -100).sum() == (batch["attention_mask"] == 0).sum()
