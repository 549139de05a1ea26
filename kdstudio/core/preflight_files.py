"""Checks that read the start of a file, for the preflight (core/preflight.py): a safetensors
file's header against the file's length, and a data file's splits, header row and first rows
(the text column the run would find, the classes of its label column).

Each reads a few bytes to a few MB, never the weights or a whole large data file. No torch.
"""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path
from typing import Any

from kdstudio.core.catalog import FILE_BUILDERS
from kdstudio.core.errors import DataError, ModelError
from kdstudio.core.tasks import Task, get_task

# The column names a run looks for first (core/data.py detects columns with the same lists).
TEXT_NAMES = ("text", "sentence", "content", "document", "prompt", "question", "review",
              "body", "input", "utterance")
LABEL_NAMES = ("label", "labels", "topic", "category", "class", "target", "intent",
               "sentiment", "stars", "rating")
# A file in a data folder belongs to the first of these splits its name contains, else train.
SPLIT_WORDS = ("validation", "test", "eval", "train")
# Data files up to this size are read whole for their columns and classes; larger ones only
# to this point, and then only what the first rows prove is reported.
ROWS_BYTES = 16 * 2**20
# safetensors refuses headers larger than this.
MAX_HEADER = 100 * 2**20


# -- safetensors -----------------------------------------------------------------------------

def _redownload(role: str) -> str:
    return (f"Copy or download the {role} again (an interrupted download or copy leaves a "
            "short file); for a Hub model, delete it from the Hugging Face cache first, or "
            "choose another folder.")


def check_weight_files(folder: Path, role: str) -> None:
    """Each *.safetensors file in a model folder has a readable header and exactly the length
    its header gives; a sharded model's index names only files that are there."""
    for index in sorted(folder.glob("*.safetensors.index.json")):
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            shards = sorted({str(v) for v in weight_map.values()})
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            raise ModelError(f"The {role}'s weight index '{index}' is damaged: it is not the "
                             "JSON file that save_pretrained writes.",
                             hint=_redownload(role)) from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ModelError(f"The {role} folder '{folder}' lacks {len(missing)} of the "
                             f"{len(shards)} weight files its {index.name} names "
                             f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}).",
                             hint=_redownload(role))
    for path in sorted(folder.glob("*.safetensors")):
        check_safetensors(path, role)


def check_safetensors(path: Path, role: str = "model") -> None:
    """A safetensors file starts with an 8-byte header length, then a JSON header giving each
    tensor's byte range: the file must be exactly as long as the header says."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            n = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
            raw = fh.read(n) if n is not None and n <= min(MAX_HEADER, size - 8) else b""
    except OSError as exc:
        raise ModelError(f"The {role}'s weight file '{path}' cannot be read: {exc.strerror}.",
                         hint="Check its permissions.") from None
    damaged = f"The {role}'s weight file '{path}' is damaged"
    if n is None:
        raise ModelError(f"{damaged}: it has {size} bytes, too few for a safetensors file.",
                         hint=_redownload(role))
    if n > MAX_HEADER or n > size - 8:
        raise ModelError(f"{damaged}: its first 8 bytes give a header of {n:,} bytes, but the "
                         f"file has {size:,} bytes in all, so it is not a whole safetensors "
                         "file.", hint=_redownload(role))
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("not an object")
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not the JSON that names " \
            "each tensor's dtype, shape and byte range"
        raise ModelError(f"{damaged}: its header is not valid ({why}).",
                         hint=_redownload(role)) from None
    expected = 8 + n + max(ends, default=0)
    if size < expected:
        raise ModelError(f"The {role}'s weight file '{path}' is cut short: it has {size:,} "
                         f"bytes, but its header places its {len(ends)} tensors up to byte "
                         f"{expected:,} ({expected - size:,} bytes are missing).",
                         hint=_redownload(role))
    if size > expected:
        raise ModelError(f"{damaged}: it has {size:,} bytes, {size - expected:,} more than its "
                         f"header describes ({expected:,}).", hint=_redownload(role))


# -- data: splits ----------------------------------------------------------------------------

def split_of(stem: str) -> str:
    """The split a file in a data folder belongs to, by its name."""
    return next((s for s in SPLIT_WORDS if s in stem.lower()), "train")


def data_splits(path: Path) -> dict[str, list[Path]]:
    """The splits a local data file or folder gives, each with its files (a file is 'train')."""
    if not path.is_dir():
        return {"train": [path]}
    out: dict[str, list[Path]] = {}
    for p in sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_BUILDERS):
        out.setdefault(split_of(p.stem), []).append(p)
    return out


def check_splits(dc: Any, splits: list[str], source: str) -> None:
    """data.split and data.eval_split name splits the data has (the run's own words)."""
    if dc.split not in splits:
        raise DataError(f"The split '{dc.split}' is not in '{source}'. Its splits are: "
                        f"{', '.join(splits)}.", hint="Set data.split to one of them.")
    if dc.eval_split and dc.eval_split not in splits:
        raise DataError(f"The eval split '{dc.eval_split}' is not in '{source}'. Its splits "
                        f"are: {', '.join(splits)}.",
                        hint="Set data.eval_split to one of them, or leave it empty to hold "
                             "out data.eval_fraction of the training split.")


# -- data: columns and classes ---------------------------------------------------------------

class _Rows:
    """A data file's columns and first rows; ``whole`` when every row was read; ``typed`` when
    values carry their types (JSON, parquet) rather than CSV's text."""

    def __init__(self, columns: list[str], rows: list[dict[str, Any]], whole: bool,
                 typed: bool = True, strings: list[str] | None = None):
        self.columns, self.rows, self.whole, self.typed = columns, rows, whole, typed
        self._strings = strings

    def values(self, column: str) -> list[Any]:
        return [r.get(column) for r in self.rows if r.get(column) not in (None, "")]

    def is_text(self, column: str) -> bool:
        """Whether the run would see a column of strings."""
        if self._strings is not None:
            return column in self._strings
        values = self.values(column)
        if self.typed:
            return bool(values) and all(isinstance(v, str) for v in values)
        return any(not _number_like(v) for v in values)


def _number_like(v: str) -> bool:
    if v.strip().lower() in ("true", "false"):
        return True
    try:
        float(v)
    except ValueError:
        return False
    return True


def read_rows(path: Path) -> _Rows | None:
    """The columns and first rows of a csv, tsv, json, jsonl, txt or parquet file; None when
    it cannot be read as such (the file check names that fault)."""
    kind = FILE_BUILDERS.get(path.suffix.lower())
    try:
        if kind == "parquet":
            return _parquet_rows(path)
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(ROWS_BYTES)
        whole = size <= ROWS_BYTES
        if not whole:
            head = head[:head.rfind(b"\n") + 1]  # whole lines only
        text = head.decode("utf-8-sig", errors="replace")
        if kind == "csv":
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
            rows = [r for r in reader if any((v or "").strip() for v in r.values())]
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): v for k, v in r.items()} for r in rows]
            return _Rows(columns, rows, whole, typed=False)
        if kind == "json":
            stripped = text.lstrip()
            if stripped.startswith("["):
                if not whole:
                    return None
                rows = [r for r in json.loads(text) if isinstance(r, dict)]
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
                rows = [r for r in rows if isinstance(r, dict)]
            columns = list(dict.fromkeys(k for r in rows for k in r))
            return _Rows(columns, rows, whole)
        if kind == "text":
            return _Rows(["text"], [], whole, strings=["text"])
    except (OSError, ValueError, csv.Error):
        return None
    return None


def _parquet_rows(path: Path) -> _Rows | None:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    strings = [f.name for f in schema if str(f.type) in ("string", "large_string")]
    whole = path.stat().st_size <= ROWS_BYTES
    rows = pf.read().to_pylist() if whole else []
    return _Rows(list(schema.names), rows, whole, strings=strings)


def text_column(rows: _Rows, requested: str) -> str | None:
    """The text column a run would choose (core/data.detect_text_column), or None for none."""
    if requested:
        return requested if requested in rows.columns else None
    texts = [c for c in rows.columns if rows.is_text(c)]
    return next((c for name in TEXT_NAMES for c in texts if c.lower() == name),
                texts[0] if texts else None)


def check_data_contents(dc: Any, task: Any, path: Path | None) -> None:
    """From a local data source's file names, header row and first rows: the splits that
    data.split and data.eval_split name, a text column (when it is left to detection), and at
    least two classes in the label column a run would use."""
    if path is None:
        if dc.dataset.startswith("builtin:"):
            check_splits(dc, ["train"], dc.dataset)
        return  # a Hub data set: its splits are known when it loads
    splits = data_splits(path)
    if not splits:
        return  # an empty folder: the file check names it
    check_splits(dc, list(splits), str(path))
    task = get_task(task)
    if type(task).read_examples is not Task.read_examples:
        return  # the family reads its rows its own way (e.g. words and their tags)
    for f in splits[dc.split]:
        rows = read_rows(f)
        if rows is None or not rows.columns:
            continue
        text = text_column(rows, dc.text_column)
        if text is None and not dc.text_column and rows.whole:
            raise DataError(f"The data file '{f}' has no column of text: its columns "
                            f"({', '.join(rows.columns)}) hold only numbers or nothing.",
                            hint="Use a file with a column of texts, or set data.text_column "
                                 "to the column that holds them.")
        if task.needs_labels or (task.uses_labels and dc.label_column):
            _check_classes(dc, task, f, rows, text)


def _check_classes(dc: Any, task: Any, path: Path, rows: _Rows, text: str | None) -> None:
    label = dc.label_column or next(
        (c for name in LABEL_NAMES for c in rows.columns if c.lower() == name and c != text),
        None)
    if label is None:
        if task.needs_labels and all(c == text for c in rows.columns):
            raise DataError(f"The data file '{path}' has only the text column "
                            f"('{text}'); {task.name} needs one class label per row.",
                            hint="Use a csv, jsonl or parquet file with a label column beside "
                                 "the text, and name it in data.label_column.")
        return
    if label not in rows.columns or not rows.whole:
        return
    values = rows.values(label)
    if not values or any(isinstance(v, (list, dict, float)) for v in values):
        return  # empty cells, per-token labels or numbers that are not classes: the run says
    classes = {str(v).strip() if isinstance(v, str) else v for v in values}
    if len(classes) == 1:
        raise DataError(f"The label column '{label}' of '{path}' has only one class "
                        f"({next(iter(classes))!r}) in its {len(values)} rows, so there is "
                        "nothing to tell apart.",
                        hint=f"{task.name} needs at least two classes: add rows of other "
                             "classes, or set data.label_column to the column that holds "
                             "them.")
