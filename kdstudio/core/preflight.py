"""Checks that need no data loaded and no weights: a run makes them before anything slow, and
'kdstudio config --check' makes the same ones.

Each reads only small files: a model folder's config.json (and the names of its weight files),
a data file's header or lines. A fault is refused in well under a second, before the data
loads or a teacher downloads. No torch here.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdstudio.core.catalog import (
    BUILTIN_ALIASES,
    BUILTIN_DATASETS,
    BUILTIN_MODELS,
    FILE_BUILDERS,
)
from kdstudio.core.errors import CompatibilityError, ConfigError, DataError, ModelError
from kdstudio.core.preflight_files import check_data_contents, check_weight_files
from kdstudio.core.preflight_models import check_remote_code, hub_config
from kdstudio.core.tasks import get_task

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
# JSON lines read in full up to this size; beyond it, only the first lines are checked.
FULL_CHECK_BYTES = 64 * 2**20
FIRST_LINES = 10_000


@dataclass
class ModelFacts:
    """What a model's config.json says: enough to check shapes and heads."""

    name: str
    folder: Path | None
    config: dict[str, Any]

    def _first(self, *keys: str) -> int | None:
        for key in keys:
            v = self.config.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        text = self.config.get("text_config")
        if isinstance(text, dict):
            return ModelFacts(self.name, self.folder, text)._first(*keys)
        return None

    @property
    def layers(self) -> int | None:
        return self._first("num_hidden_layers", "n_layer", "num_layers")

    @property
    def hidden(self) -> int | None:
        return self._first("hidden_size", "n_embd", "d_model", "dim")

    @property
    def heads(self) -> int | None:
        return self._first("num_attention_heads", "n_head")

    @property
    def head_dim(self) -> int | None:
        hd = self._first("head_dim")
        if hd:
            return hd
        return self.hidden // self.heads if self.hidden and self.heads else None

    @property
    def architectures(self) -> list[str]:
        a = self.config.get("architectures")
        return [str(x) for x in a] if isinstance(a, list) else []


# -- models ----------------------------------------------------------------------------------

def _looks_local(name: str) -> bool:
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~"))


def read_config_json(folder: Path, role: str) -> dict[str, Any]:
    """A model folder's config.json as a dict; ModelError blames the config when it is not one."""
    path = folder / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"The {role} folder '{folder}' has no config.json, so it is not a "
                         "saved transformers model.",
                         hint="Choose the folder that save_pretrained wrote.") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not text"
        raise ModelError(f"The {role}'s config.json in '{folder}' cannot be read: {why}.",
                         hint="Re-save the model with save_pretrained, or choose another "
                              "folder.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"The {role}'s config.json in '{folder}' is damaged: it is not valid "
                         f"JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).",
                         hint="The model's configuration file is broken, not its tokenizer: "
                              "re-save the model with save_pretrained, or download it "
                              "again.") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ModelError(f"The {role}'s config.json in '{folder}' is not a transformers model "
                         "configuration (it has no 'model_type').",
                         hint="Choose the folder that save_pretrained wrote.")
    return data


def model_facts(name: str, *, revision: str = "", role: str = "model") -> ModelFacts | None:
    """The config of a built-in model or local folder, checked to be a model (config.json
    readable, weights present and whole). A Hub id gives its config.json when it can be fetched
    alone (a few kB, never the weights); offline and not cached, missing or gated, it is
    refused now; None when it cannot be fetched otherwise (the download reports that later)."""
    if not name or not name.strip():
        raise ModelError(f"No {role} model was given.",
                         hint="Give a built-in name (e.g. everyday-gpt), a Hub id or a folder.")
    key = BUILTIN_ALIASES.get(name, name)
    folder: Path | None = None
    if key in BUILTIN_MODELS:
        finder, hub_id, _ = BUILTIN_MODELS[key]
        folder = finder()
        if folder is None:
            if not hub_id:
                raise ModelError(f"The built-in {role} model '{key}' is missing from this "
                                 "installation.", hint="Reinstall KD Studio.")
            return _hub_facts(hub_id, revision, role)
    elif _looks_local(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise ModelError(f"The {role} folder '{folder}' does not exist or is not a folder.",
                             hint="Give a folder written by save_pretrained (with config.json), "
                                  f"a Hub id such as 'gpt2', or a built-in model "
                                  f"({', '.join(BUILTIN_MODELS)}).")
    else:
        return _hub_facts(name, revision, role)
    config = read_config_json(folder, role)
    if not any(any(folder.glob(p)) for p in WEIGHT_PATTERNS):
        raise ModelError(f"The {role} folder '{folder}' has a config.json but no weights "
                         "(model.safetensors).",
                         hint="Choose the folder that save_pretrained wrote; it holds the "
                              "config.json and the weights side by side.")
    check_weight_files(folder, role)  # each safetensors header against its file's length
    return ModelFacts(name, folder, config)


def _hub_facts(repo_id: str, revision: str, role: str) -> ModelFacts | None:
    import re

    if re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", repo_id) is None:
        raise ModelError(f"'{repo_id}' is neither a built-in model, an existing folder, nor a "
                         "valid Hugging Face Hub id.",
                         hint=f"Built-in models: {', '.join(BUILTIN_MODELS)}. Hub ids look like "
                              "'owner/name'.")
    data = hub_config(repo_id, revision, role)
    return ModelFacts(repo_id, None, data) if data is not None else None


def untrained_head_error(task: Any, name: str, architecture: str) -> CompatibilityError:
    """A teacher whose checkpoint has no trained head for a task that needs one."""
    task = get_task(task)
    return CompatibilityError(
        f"The teacher '{name}' is {architecture or 'a model'} without a trained "
        f"{task.head_words} head, so as a {task.name} "
        "teacher it would answer from random weights and the run would report meaningless "
        "figures.",
        hint=task.untrained_head_hint)


def check_teacher_head(task: Any, facts: ModelFacts | None) -> None:
    """A teacher must hold its family's trained head when the family names the classes that
    do (task.trained_head_classes: a causal-lm's language-model head; its checkpoint says
    which class saved it). Classification teachers without a head are prepared instead."""
    task = get_task(task)
    if facts is None or not task.trained_head_classes or not facts.architectures:
        return
    if not any(a.endswith(task.trained_head_classes) for a in facts.architectures):
        raise untrained_head_error(task, facts.name, f"a {facts.architectures[0]}")


def check_layer_choice(n_teacher: int, layers: float, layer_indices: list[int]) -> int:
    """How many layers a derived student keeps; ConfigError when the choice does not fit."""
    if layer_indices:
        bad = [i for i in layer_indices if i >= n_teacher]
        if bad:
            raise ConfigError(f"student.layer_indices names layer(s) {bad}, but the teacher has "
                              f"only {n_teacher} layers (0 to {n_teacher - 1}).",
                              hint=f"Use layer numbers from 0 to {n_teacher - 1}.")
        return len(layer_indices)
    k = int(layers) if layers >= 1 else max(1, round(layers * n_teacher))
    if k > n_teacher:
        raise ConfigError(f"student.layers is {k}, but the teacher has only {n_teacher} layers.",
                          hint=f"Choose 1 to {n_teacher} layers, or a fraction such as 0.5.")
    return k


def check_student_shape(cfg: Any, teacher: ModelFacts | None) -> None:
    """A derived student's layers and width, from the teacher's config alone."""
    s = cfg.student
    if s.name or teacher is None:
        return
    if teacher.layers:
        check_layer_choice(teacher.layers, s.layers, list(s.layer_indices))
    hd, width = teacher.head_dim, teacher.hidden
    if s.hidden_size and width and s.hidden_size != width and hd and s.hidden_size % hd:
        valid = [hd * i for i in range(1, width // hd + 1)]
        raise ConfigError(f"student.hidden_size is {s.hidden_size}; it must be a multiple of the "
                          f"attention head size {hd} (the teacher's width {width} over its "
                          f"{teacher.heads} heads).",
                          hint=f"Valid widths: {', '.join(map(str, valid))}.")
    if (s.attention_heads or s.intermediate_size or s.hidden_size or s.target_size
            or s.vocabulary != "teacher"):
        from kdstudio.core.pruning import check_student_fields  # torch only for pruned students

        check_student_fields(s, teacher.config)


# -- data ------------------------------------------------------------------------------------

def local_data_path(dataset: str) -> Path | None:
    """The file or folder a data source names, or None for a built-in or Hub data set."""
    if dataset.startswith("builtin:"):
        return None
    path = Path(dataset).expanduser()
    if path.exists() or dataset.startswith((".", "/", "~")) or path.suffix.lower() in FILE_BUILDERS:
        return path
    return None


def check_data_file(path: Path, columns: tuple[str, ...] = ()) -> None:
    """A local data file (or each in a folder) exists, is readable, is not empty, parses at the
    first damaged line, and has the named columns."""
    if not path.exists():
        raise DataError(f"The data file '{path}' does not exist.",
                        hint="Check the path, or choose a file with the file dialog.")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_BUILDERS)
        if not files:
            raise DataError(f"The folder '{path}' holds no data files.",
                            hint="Put csv, json, jsonl, txt or parquet files in it.")
        for f in files:
            _check_one_file(f, columns)
        return
    if path.suffix.lower() not in FILE_BUILDERS:
        raise DataError(f"The data file '{path}' has the extension '{path.suffix}', which "
                        "KD Studio does not read.", hint="Use csv, tsv, json, jsonl, txt or parquet.")
    _check_one_file(path, columns)


def _check_one_file(path: Path, columns: tuple[str, ...]) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(min(size, FULL_CHECK_BYTES))
    except OSError as exc:
        raise DataError(f"The data file '{path}' cannot be read: {exc.strerror}.",
                        hint="Check its permissions.") from None
    if not head.strip():
        raise DataError(f"The data file '{path}' is empty.",
                        hint="Choose a file with rows of text in it.")
    kind = FILE_BUILDERS[path.suffix.lower()]
    if kind == "parquet":
        return _check_parquet(path, columns)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if size > FULL_CHECK_BYTES and exc.start > len(head) - 4:
            text = head[:exc.start].decode("utf-8")  # a character cut at the read limit
        else:
            line = head[:exc.start].count(b"\n") + 1
            raise DataError(f"The data file '{path}' is not UTF-8 text (line {line}).",
                            hint="Save it as UTF-8, or check that it is the right file.") from None
    if kind == "csv":
        _check_csv(path, text, "\t" if path.suffix.lower() == ".tsv" else ",", columns)
    elif kind == "json":
        _check_json(path, text, size > FULL_CHECK_BYTES, columns)
    elif kind == "text" and columns and set(columns) - {"text"}:
        missing = sorted(set(columns) - {"text"})
        raise DataError(f"The text file '{path}' has one column, 'text'; the config names "
                        f"{', '.join(repr(c) for c in missing)}.",
                        hint="Clear data.text_column and data.label_column, or use a csv/jsonl "
                             "file with those columns.")


def _missing(path: Path, have: list[str], columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in have]
    if missing:
        raise DataError(f"The data file '{path}' has no column "
                        f"{' or '.join(repr(c) for c in missing)} (its columns: "
                        f"{', '.join(have) or 'none'}).",
                        hint="Fix data.text_column / data.label_column, or leave them empty to "
                             "detect them.")


def _check_csv(path: Path, text: str, delimiter: str, columns: tuple[str, ...]) -> None:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader, None)
        first = next((row for row in reader if any(c.strip() for c in row)), None)
    except csv.Error as exc:
        raise DataError(f"The data file '{path}' is not a well-formed CSV (line "
                        f"{reader.line_num}): {exc}.") from None
    if not header or not any(h.strip() for h in header):
        raise DataError(f"The data file '{path}' is empty.",
                        hint="Choose a file with a header line and rows of text.")
    if first is None:
        raise DataError(f"The data file '{path}' is empty: it has a header line "
                        f"({', '.join(header)}) but no rows.",
                        hint="Add rows under the header, or choose another file.")
    _missing(path, [h.strip() for h in header], columns)


def _check_json(path: Path, text: str, cut: bool, columns: tuple[str, ...]) -> None:
    stripped = text.lstrip()
    if stripped.startswith("[") and not cut:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"The data file '{path}' is not valid JSON (line {exc.lineno}, "
                            f"column {exc.colno}: {exc.msg}).",
                            hint="Fix that line, or write one JSON object per line (jsonl).") from None
        if not rows:
            raise DataError(f"The data file '{path}' is empty: it holds an empty list.")
        first = rows[0]
    else:
        lines = text.splitlines()
        if cut:
            lines = lines[:FIRST_LINES]
        first = None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"Line {n} of the data file '{path}' is not valid JSON "
                                f"(column {exc.colno}: {exc.msg}).",
                                hint="Each line must be one JSON object, e.g. "
                                     '{"text": "...", "label": "..."}.') from None
            if not isinstance(row, dict):
                raise DataError(f"Line {n} of the data file '{path}' is not a JSON object "
                                "with named fields.",
                                hint='Write each row as {"text": "...", "label": "..."}.')
            first = row if first is None else first
    if isinstance(first, dict):
        _missing(path, list(first), columns)


def _check_parquet(path: Path, columns: tuple[str, ...]) -> None:
    try:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:
        raise DataError(f"The data file '{path}' is not a readable parquet file: {exc}.") from None
    if rows == 0:
        raise DataError(f"The data file '{path}' is empty: it has no rows.")
    _missing(path, list(schema.names), columns)


def check_data(dc: Any) -> None:
    """The data source of a config: built-in names exist, local files pass check_data_file.
    Hub data sets are checked when they load."""
    if dc.dataset.startswith("builtin:"):
        name = dc.dataset.split(":", 1)[1]
        if name not in BUILTIN_DATASETS:
            raise DataError(f"There is no built-in data set called '{name}'.",
                            hint=f"Built-in data sets: "
                                 f"{', '.join('builtin:' + n for n in BUILTIN_DATASETS)}.")
        return
    path = local_data_path(dc.dataset)
    if path is not None:
        check_data_file(path, tuple(c for c in (dc.text_column, dc.label_column) if c))


# -- the whole config ------------------------------------------------------------------------

def preflight(cfg: Any) -> None:
    """Every check a config allows before loading anything heavy; raises the engine's errors."""
    teacher = model_facts(cfg.teacher.name, revision=cfg.teacher.revision, role="teacher")
    check_remote_code(teacher, cfg.teacher.trust_remote_code, "teacher")
    check_teacher_head(cfg.task, teacher)
    if cfg.student.name:
        check_remote_code(model_facts(cfg.student.name, revision=cfg.student.revision,
                                      role="student"), cfg.student.trust_remote_code, "student")
    check_student_shape(cfg, teacher)
    check_data(cfg.data)
    check_data_contents(cfg.data, cfg.task, local_data_path(cfg.data.dataset))
