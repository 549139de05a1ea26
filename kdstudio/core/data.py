"""Data: built-in corpora, local files and Hub data sets through `datasets`; preview; batching.

Everything the trainer needs is reduced to lists of texts (and class ids): the
data sets this tool is for fit in memory, and plain lists make the batching and
resume logic easy to follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdstudio.core.batch import causal_blocks, collate_blocks, encode  # noqa: F401  (re-exported)
from kdstudio.core.catalog import BUILTIN_DATASETS, FILE_BUILDERS  # noqa: F401  (re-exported)
from kdstudio.core.errors import DataError
from kdstudio.core.preflight_files import LABEL_NAMES, TEXT_NAMES, split_of
from kdstudio.core.runs import resources_dir
from kdstudio.core.splits import VALIDATION_SPLITS, carve_validation
from kdstudio.core.tasks import get_task


@dataclass
class TextData:
    """Train and eval texts (and class ids for classification), with where they came from."""

    train_texts: list[str]
    eval_texts: list[str]
    train_labels: list[int] | None
    eval_labels: list[int] | None
    label_names: list[str] | None
    text_column: str
    label_column: str | None
    source: str
    # Validation rows (training.keep = "best"): what chooses the best student during training,
    # apart from both the training rows and the held-out eval rows. None: no validation.
    val_texts: list[str] | None = None
    val_labels: list[int] | None = None
    val_source: str = ""  # where they came from, in words
    # The data set's own validation splits, when validation rows were asked for (the first
    # is read as the validation rows).
    splits: list[str] = field(default_factory=list)


def validation_wanted(training: Any, multi: bool = False) -> bool:
    """Whether a run sets validation rows apart: it keeps its best student (training.keep)
    and evaluates during training (training.eval_every). A multi-process run keeps its last
    student (its processes would all have to take part in saving and reloading the best)."""
    return training.keep == "best" and training.eval_every > 0 and not multi


@dataclass
class Preview:
    """The first rows of a data set, for the app's preview table."""

    source: str
    columns: list[str]
    rows: list[dict[str, Any]]
    num_rows: int
    splits: list[str]
    text_column: str | None
    label_column: str | None
    label_names: list[str] = field(default_factory=list)


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def describe_source(dataset: str) -> str:
    return dataset


def _load_raw(dataset: str, config_name: str = ""):
    """A DatasetDict for a built-in name, a local file/folder or a Hub id."""
    import datasets

    _quiet_datasets()
    if dataset.startswith("builtin:"):
        name = dataset.split(":", 1)[1]
        if name not in BUILTIN_DATASETS:
            raise DataError(f"There is no built-in data set called '{name}'.",
                            hint=f"Built-in data sets: {', '.join('builtin:' + n for n in BUILTIN_DATASETS)}.")
        path = resources_dir() / BUILTIN_DATASETS[name][0]
        if not path.exists():
            raise DataError(f"The built-in data set file '{path}' is missing from this "
                            "installation.", hint="Reinstall KD Studio.")
        return datasets.load_dataset("json", data_files={"train": str(path)})
    path = Path(dataset).expanduser()
    if path.exists() or dataset.startswith((".", "/", "~")) or path.suffix.lower() in FILE_BUILDERS:
        from kdstudio.core.preflight import check_data_file

        # Missing, unreadable, empty or damaged files are named here, with the line at fault,
        # rather than in the words of the datasets library.
        check_data_file(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_BUILDERS)
            if not files:
                raise DataError(f"The folder '{path}' holds no data files.",
                                hint="Put csv, json, jsonl, txt or parquet files in it.")
            suffixes = {p.suffix.lower() for p in files}
            if len({FILE_BUILDERS[s] for s in suffixes}) > 1:
                raise DataError(f"The folder '{path}' mixes file types ({', '.join(sorted(suffixes))}).",
                                hint="Keep one kind of data file per folder.")
            by_split: dict[str, list[str]] = {}
            for p in files:
                by_split.setdefault(split_of(p.stem), []).append(str(p))
            builder = FILE_BUILDERS[files[0].suffix.lower()]
            data_files = by_split
        else:
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise DataError(f"The data file '{path}' has the extension '{path.suffix}', which "
                                "KD Studio does not read.",
                                hint="Use csv, tsv, json, jsonl, txt or parquet.")
            data_files = {"train": str(path)}
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        try:
            return datasets.load_dataset(builder, data_files=data_files, **kwargs)
        except Exception as exc:
            raise DataError(f"The data file '{path}' could not be read as {builder}: "
                            f"{_short(exc)}", hint="Check that the file is well formed.") from exc
    try:
        return datasets.load_dataset(dataset, config_name or None)
    except Exception as exc:
        from kdstudio.core.hub import explain_failure

        where = f"'{dataset}'" + (f" (config '{config_name}')" if config_name else "")
        # The library's own words name the problem; the hint says what to do about it
        # (how to log in for a gated set, the local-file option for a wrong name...).
        _, hint = explain_failure(exc, dataset, "", "data set")
        raise DataError(f"Could not load the Hub data set {where}: {_short(exc)}",
                        hint=hint) from exc


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


def _string_columns(ds) -> list[str]:
    from datasets import Value

    return [c for c, f in ds.features.items() if isinstance(f, Value) and f.dtype in ("string", "large_string")]


def detect_text_column(ds, requested: str, source: str) -> str:
    columns = list(ds.column_names)
    if requested:
        if requested not in columns:
            raise DataError(f"The text column '{requested}' is not in '{source}'. "
                            f"Its columns are: {', '.join(columns)}.",
                            hint="Set data.text_column to one of them.")
        return requested
    strings = _string_columns(ds)
    for name in TEXT_NAMES:
        for c in strings:
            if c.lower() == name:
                return c
    if not strings:
        raise DataError(f"'{source}' has no text column (columns: {', '.join(columns)}).",
                        hint="Set data.text_column to the column that holds the text.")
    # The column with the longest texts is most likely the text, not a label.
    sample = ds.select(range(min(len(ds), 200)))
    return max(strings, key=lambda c: sum(len(str(v or "")) for v in sample[c]))


def detect_label_column(ds, requested: str, text_column: str, source: str) -> str | None:
    columns = list(ds.column_names)
    if requested:
        if requested not in columns:
            raise DataError(f"The label column '{requested}' is not in '{source}'. "
                            f"Its columns are: {', '.join(columns)}.",
                            hint="Set data.label_column to one of them.")
        return requested
    for name in LABEL_NAMES:
        for c in columns:
            if c.lower() == name and c != text_column:
                return c
    # Otherwise a column of whole numbers or short strings with few distinct values.
    from datasets import ClassLabel, Value

    sample = ds.select(range(min(len(ds), 500)))
    for c, feat in ds.features.items():
        if c == text_column:
            continue
        if isinstance(feat, ClassLabel):
            return c
        if isinstance(feat, Value) and (feat.dtype.startswith("int") or feat.dtype == "string"):
            values = [v for v in sample[c] if v is not None]
            if values and len(set(values)) <= min(50, max(2, len(values) // 5)):
                return c
    return None


def _label_names_and_ids(ds, column: str, source: str) -> tuple[list[str], list[int]]:
    from datasets import ClassLabel

    feat = ds.features[column]
    values = ds[column]
    if isinstance(feat, ClassLabel):
        return list(feat.names), [int(v) for v in values]
    if any(v is None for v in values):
        raise DataError(f"The label column '{column}' of '{source}' has empty cells.",
                        hint="Every row needs a class label.")
    if all(isinstance(v, bool) for v in values):
        values = [int(v) for v in values]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        if any(float(v) != int(v) for v in values):
            ex = next(v for v in values if float(v) != int(v))
            raise DataError(f"The label column '{column}' of '{source}' holds numbers such as "
                            f"{ex}, which are not classes.",
                            hint="Classification needs whole-number or text class labels; pick "
                                 "another column with data.label_column.")
        distinct = sorted({int(v) for v in values})
        names = [str(v) for v in distinct]
        index = {v: i for i, v in enumerate(distinct)}
        ids = [index[int(v)] for v in values]
    elif all(isinstance(v, str) for v in values):
        names = sorted({v for v in values})
        index = {v: i for i, v in enumerate(names)}
        ids = [index[v] for v in values]
    else:
        raise DataError(f"The label column '{column}' of '{source}' mixes kinds of values.",
                        hint="Use one class name or number per row.")
    if len(names) < 2:
        raise DataError(f"The label column '{column}' of '{source}' has only one class "
                        f"({names[0] if names else 'none'}).",
                        hint="Classification needs at least two classes.")
    if len(names) > max(50, len(values) // 2):
        raise DataError(f"The label column '{column}' of '{source}' has {len(names)} distinct "
                        f"values in {len(values)} rows: that looks like free text, not classes.",
                        hint="Set data.label_column to the column with the class labels.")
    return names, ids


def load_text_data(cfg: Any, task: Any, seed: int = 42, *, validation: bool = False,
                   validation_cap: int = 0) -> TextData:
    """Load, detect columns, split and clean the data for a run (cfg is a DataConfig).

    With ``validation`` it also sets validation rows apart (at most ``validation_cap``, 0: no
    cap): the data set's own validation split, else data.validation_fraction of the training
    split, drawn with the seed after the held-out rows, so those stay the same. Without it the
    training rows are exactly those of a run without validation."""
    # The eval rows' limits hold for the validation rows too.
    validation_cap = min([c for c in (validation_cap, cfg.max_eval_samples) if c] or [0])
    data = _load_text_data(cfg, task, seed, validation, validation_cap)
    if data.val_texts is not None or not validation or not data.splits:
        return data
    # The data set's own validation split, read as an eval split would be (the same columns
    # and classes as the training split).
    import dataclasses

    own = dataclasses.replace(cfg, eval_split=data.splits[0])
    val = _load_text_data(own, task, seed, False, 0)
    cap = validation_cap or len(val.eval_texts)
    data.val_texts = val.eval_texts[:cap]
    data.val_labels = val.eval_labels[:cap] if val.eval_labels else None
    data.val_source = f"the split '{data.splits[0]}'"
    return data


def _load_text_data(cfg: Any, task: Any, seed: int, validation: bool,
                    validation_cap: int) -> TextData:
    raw = _load_raw(cfg.dataset, cfg.config_name)
    own_val = [s for s in VALIDATION_SPLITS if s in raw and s not in (cfg.split, cfg.eval_split)]
    # Carve validation rows out of the training split only when the data has none of its own.
    carve = (validation_cap if validation and not own_val and cfg.validation_fraction > 0
             else -1)
    source = cfg.dataset
    if cfg.split not in raw:
        raise DataError(f"The split '{cfg.split}' is not in '{source}'. Its splits are: "
                        f"{', '.join(raw.keys())}.", hint="Set data.split to one of them.")
    train = raw[cfg.split]
    if len(train) == 0:
        raise DataError(f"The split '{cfg.split}' of '{source}' is empty.",
                        hint="Choose a split or file that has rows.")
    if cfg.eval_split:
        if cfg.eval_split not in raw:
            raise DataError(f"The eval split '{cfg.eval_split}' is not in '{source}'. Its splits "
                            f"are: {', '.join(raw.keys())}.",
                            hint="Set data.eval_split to one of them, or leave it empty to hold "
                                 "out data.eval_fraction of the training split.")
        evl = raw[cfg.eval_split]
    else:
        if cfg.eval_fraction <= 0 or len(train) < 4:
            raise DataError(f"'{source}' has no eval split and data.eval_fraction is "
                            f"{cfg.eval_fraction} with {len(train)} rows, so nothing is left "
                            "to measure the student on.",
                            hint="Set data.eval_fraction (e.g. 0.1) or data.eval_split.")
        parts = train.train_test_split(test_size=cfg.eval_fraction, seed=seed, shuffle=True)
        train, evl = parts["train"], parts["test"]
    own = get_task(task).read_examples(train, evl, cfg, source)
    if own is not None:  # the family reads its rows its own way (words and their tags)
        data = _finish(cfg, own.train_texts, own.train_labels, own.eval_texts, own.eval_labels,
                       own.label_names, own.text_column, own.label_column, source, carve, seed)
        data.splits = own_val if validation else []
        return data
    text_col = detect_text_column(train, cfg.text_column, source)
    label_col = None
    label_names = None
    train_labels = eval_labels = None
    task = get_task(task)
    if task.needs_labels:
        label_col = detect_label_column(train, cfg.label_column, text_col, source)
        if label_col is None:
            raise DataError(f"'{source}' has no label column (columns: "
                            f"{', '.join(train.column_names)}); {task.name} needs "
                            "one class label per row.",
                            hint="Set data.label_column to the column with the class labels.")
        if label_col not in evl.column_names:
            raise DataError(f"The eval split of '{source}' has no column '{label_col}'.")
        label_names, train_ids = _label_names_and_ids(train, label_col, source)
        eval_names, eval_ids_raw = _label_names_and_ids(evl, label_col, source) \
            if len(set(evl[label_col])) > 1 else (None, None)
        if eval_names is not None and eval_names != label_names:
            mapping = {i: label_names.index(n) for i, n in enumerate(eval_names) if n in label_names}
            unknown = [n for n in eval_names if n not in label_names]
            if unknown:
                raise DataError(f"The eval split of '{source}' has classes not in the training "
                                f"split: {', '.join(unknown[:5])}.")
            eval_ids_raw = [mapping[i] for i in eval_ids_raw]
        if eval_ids_raw is None:
            eval_ids_raw = [label_names.index(str(v)) if str(v) in label_names else 0
                            for v in evl[label_col]]
        train_labels, eval_labels = train_ids, eval_ids_raw
    elif task.uses_labels:
        # Labels are optional here; when the data has classes they give a real downstream
        # figure (nearest-neighbour topic accuracy) for teacher and student alike.
        label_col = detect_label_column(train, cfg.label_column, text_col, source)
        if label_col is not None and label_col in evl.column_names:
            try:
                label_names, train_labels = _label_names_and_ids(train, label_col, source)
                eval_labels = [label_names.index(str(v)) if str(v) in label_names else -1
                               for v in evl[label_col]]
                if -1 in eval_labels:
                    label_col, label_names, train_labels, eval_labels = None, None, None, None
            except DataError:
                if cfg.label_column:
                    raise
                label_col, label_names, train_labels, eval_labels = None, None, None, None
        else:
            label_col = None
    if text_col not in evl.column_names:
        raise DataError(f"The eval split of '{source}' has no column '{text_col}'.")
    data = _finish(cfg, train[text_col], train_labels, evl[text_col], eval_labels, label_names,
                   text_col, label_col, source, carve, seed)
    data.splits = own_val if validation else []
    return data


def _finish(cfg: Any, train_texts: list[Any], train_labels: list[Any] | None,
            eval_texts: list[Any], eval_labels: list[Any] | None, label_names: list[str] | None,
            text_col: str, label_col: str | None, source: str, carve: int = -1,
            seed: int = 42) -> TextData:
    """Drop empty texts, check enough is left, carve the validation rows (carve >= 0: at
    most that many, 0 no cap), apply the sample limits."""
    train_texts, train_labels = _clean(train_texts, train_labels)
    eval_texts, eval_labels = _clean(eval_texts, eval_labels)
    if not train_texts:
        raise DataError(f"The text column '{text_col}' of '{source}' is empty in the training split.")
    val_texts = val_labels = None
    if carve >= 0:
        train_texts, train_labels, val_texts, val_labels = carve_validation(
            train_texts, train_labels, cfg.validation_fraction, carve, seed)
    if len(eval_texts) < 2:
        raise DataError(f"The eval split of '{source}' has {len(eval_texts)} usable rows; at least "
                        "2 are needed to measure the student.",
                        hint="Raise data.eval_fraction or give a larger eval split.")
    if cfg.max_train_samples:
        train_texts = train_texts[:cfg.max_train_samples]
        train_labels = train_labels[:cfg.max_train_samples] if train_labels else None
    if cfg.max_eval_samples:
        eval_texts = eval_texts[:cfg.max_eval_samples]
        eval_labels = eval_labels[:cfg.max_eval_samples] if eval_labels else None
    data = TextData(train_texts, eval_texts, train_labels, eval_labels, label_names, text_col,
                    label_col, source)
    if val_texts is not None:
        data.val_texts, data.val_labels = val_texts, val_labels
        data.val_source = f"{len(val_texts)} rows set aside from the training split"
    return data


def _clean(texts: list[Any], labels: list[int] | None) -> tuple[list[str], list[int] | None]:
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    return [texts[i].strip() for i in keep], ([labels[i] for i in keep] if labels else None)


def preview(cfg: Any, n: int = 20, task: Any = "") -> Preview:
    """The first n rows and the detected columns, without tokenizing anything."""
    raw = _load_raw(cfg.dataset, cfg.config_name)
    split = cfg.split if cfg.split in raw else next(iter(raw.keys()))
    ds = raw[split]
    if len(ds) == 0:
        raise DataError(f"The split '{split}' of '{cfg.dataset}' is empty.")
    rows = [dict(r) for r in ds.select(range(min(n, len(ds))))]
    if task:  # a family that reads its rows its own way names its columns itself
        head = ds.select(range(min(len(ds), 2000)))
        own = get_task(task).read_examples(head, head, cfg, cfg.dataset)
        if own is not None:
            return Preview(cfg.dataset, list(ds.column_names), rows, len(ds), list(raw.keys()),
                           own.text_column, own.label_column, list(own.label_names or []))
    text_col = detect_text_column(ds, cfg.text_column, cfg.dataset)
    label_col = detect_label_column(ds, cfg.label_column, text_col, cfg.dataset)
    names: list[str] = []
    if label_col and task and get_task(task).needs_labels:
        names, _ = _label_names_and_ids(ds, label_col, cfg.dataset)
    return Preview(cfg.dataset, list(ds.column_names), rows, len(ds), list(raw.keys()),
                   text_col, label_col, names)


# -- batching ----------------------------------------------------------------------------------

class BatchOrder:
    """Which examples go in micro-batch number i: a fresh seeded shuffle each epoch.

    Pure function of (seed, i), so resuming at micro-batch i sees exactly the batches an
    uninterrupted run would have seen.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = max(1, math.ceil(n / batch_size)) if n >= batch_size else 1
        self._cache: tuple[int, list[int]] | None = None

    def indices(self, i: int) -> list[int]:
        epoch, pos = divmod(i, self.per_epoch)
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
            self._cache = (epoch, torch.randperm(self.n, generator=g).tolist())
        perm = self._cache[1]
        chunk = perm[pos * self.batch_size:(pos + 1) * self.batch_size]
        if len(chunk) < self.batch_size and self.n >= self.batch_size:
            chunk = chunk + perm[:self.batch_size - len(chunk)]  # keep batches full
        return chunk
