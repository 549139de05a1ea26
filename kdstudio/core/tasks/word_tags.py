"""Word/tag data: rows of words each with a tag (named-entity tagging, CoNLL form).

Read from a data set's rows: a column of words (a list per row, or space-separated words in
one string, as a CSV cell holds them) and a column of tags, one per word (names such as
"B-PLACE", numbers, or a Hub data set's ClassLabel sequence). Each row becomes its words
joined by single spaces (so every text stays a plain string for the rest of the engine) and
a list of tag ids, one per word. Tokenizing aligns the word tags to sub-word tokens: the
first token of each word carries the word's tag, every other position -100 (not scored).
Below the data loader, which calls read_word_tags through the task's read_examples hook.
"""

from __future__ import annotations

import re
from typing import Any

from kdstudio.core.errors import DataError, ModelError

WORD_NAMES = ("tokens", "words", "token", "word")
TAG_NAMES = ("ner_tags", "tags", "ner", "labels", "label", "entities", "tag")
OUTSIDE = ("O", "0")  # the tag of a word outside every entity
_PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")
# Words, numbers (with inner hyphens or apostrophes: "Wi-Fi", "it'll") and single marks.
_WORD = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")


def split_words(text: str) -> list[str]:
    """A sentence cut into words the way the built-in tagged corpus is: punctuation apart."""
    return _WORD.findall(text)


def scheme_tags(names: list[str]) -> list[str]:
    """Each tag name as seqeval reads it: BIO-style names stay; a name without a prefix is an
    IO tag (a run of the same tag is one entity), "O" and "0" are outside."""
    out = []
    for n in names:
        n = str(n)
        out.append("O" if n in OUTSIDE else n if n.startswith(_PREFIXES) else "I-" + n)
    return out


def entity_spans(words: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """(entity words, entity type) of a tagged sentence, as seqeval's scoring finds them."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [(" ".join(words[a:b + 1]), kind) for kind, a, b in get_entities(scheme_tags(tags))]


# -- reading rows ---------------------------------------------------------------------------------

def _is_sequence(feat: Any) -> bool:
    """A feature holding a list per row (datasets' List / Sequence, or a plain [feature])."""
    return isinstance(feat, list) or type(feat).__name__ in ("List", "Sequence", "LargeList")


def _inner(feat: Any) -> Any:
    return feat[0] if isinstance(feat, list) else getattr(feat, "feature", None)


def _pick(ds: Any, requested: str, names: tuple[str, ...], avoid: str, what: str, key: str,
          source: str) -> str:
    columns = list(ds.column_names)
    if requested:
        if requested not in columns:
            raise DataError(f"The {what} column '{requested}' is not in '{source}'. Its columns "
                            f"are: {', '.join(columns)}.", hint=f"Set data.{key} to one of them.")
        return requested
    for name in names:
        for c in columns:
            if c.lower() == name and c != avoid:
                return c
    # Else the first column of lists, then of strings (a CSV's space-separated cells).
    for want_seq in (True, False):
        for c, feat in ds.features.items():
            if c != avoid and _is_sequence(feat) == want_seq and (
                    want_seq or getattr(feat, "dtype", "") in ("string", "large_string")):
                return c
    raise DataError(f"'{source}' has no {what} column (columns: {', '.join(columns)}).",
                    hint=f"Token classification reads a column of words and a column of tags, "
                         f"one tag per word; set data.{key} to the {what} column.")


def tag_columns(ds: Any, cfg: Any, source: str) -> tuple[str, str]:
    """(words column, tags column) of a split: data.text_column / data.label_column when set,
    else detected by name (tokens, ner_tags...) or kind (lists, then strings)."""
    words = _pick(ds, cfg.text_column, WORD_NAMES, "", "words", "text_column", source)
    tags = _pick(ds, cfg.label_column, TAG_NAMES, words, "tags", "label_column", source)
    if tags == words:
        raise DataError(f"data.text_column and data.label_column both name '{words}' in "
                        f"'{source}'.", hint="The words and their tags must be two columns.")
    return words, tags


def _as_list(value: Any, column: str, row: int, source: str) -> list[Any]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)):
        return list(value)
    raise DataError(f"Row {row} of '{source}' holds {type(value).__name__} in the column "
                    f"'{column}', not a list.",
                    hint="Give a list per row (JSON: [\"Paris\", \"is\"...]) or space-separated "
                         "words/tags in one string (CSV).")


def _rows(ds: Any, wcol: str, tcol: str, source: str, split: str) -> tuple[list[list[str]], list[list[Any]]]:
    all_words, all_tags = [], []
    for i, (w, t) in enumerate(zip(ds[wcol], ds[tcol]), start=1):
        words = [str(x) for x in _as_list(w, wcol, i, source)]
        tags = _as_list(t, tcol, i, source)
        where = f"Row {i} of the {split} split of '{source}'"
        if len(words) != len(tags):
            start = " ".join(words[:6])
            raise DataError(f"{where} ('{start}...') has {len(words)} words in '{wcol}' but "
                            f"{len(tags)} tags in '{tcol}'.",
                            hint="Give exactly one tag per word.")
        for k, word in enumerate(words):
            if not word.strip() or word != word.strip() or len(word.split()) > 1:
                raise DataError(f"{where} has the word {word!r} (word {k + 1}) in '{wcol}', which "
                                "is empty or holds spaces.",
                                hint="Give each word as its own item, without spaces.")
        if any(x is None or isinstance(x, (float, bool)) for x in tags):
            bad = next(x for x in tags if x is None or isinstance(x, (float, bool)))
            raise DataError(f"{where} has the tag {bad!r} in '{tcol}'.",
                            hint="Tags are names (O, B-PLACE...) or whole numbers.")
        if words:
            all_words.append(words)
            all_tags.append(tags)
    return all_words, all_tags


def _class_names(feat: Any) -> list[str] | None:
    from datasets import ClassLabel

    inner = _inner(feat) if _is_sequence(feat) else None
    return list(inner.names) if isinstance(inner, ClassLabel) else None


def _tag_names(values: list[Any], known: list[str] | None) -> tuple[list[str], dict[Any, int]]:
    """Tag names and the id of each value: a ClassLabel's names, else the distinct values
    ("O" first, then sorted; numbers in numeric order)."""
    if known is not None:
        return known, {i: i for i in range(len(known))}
    distinct = set(values)
    if all(isinstance(v, int) for v in distinct):
        order = sorted(distinct)
    else:
        order = sorted({str(v) for v in distinct}, key=lambda n: (n not in OUTSIDE, n))
        distinct = set(order)
    ids = {v: i for i, v in enumerate(order)}
    return [str(v) for v in order], ids


def read_word_tags(train: Any, evl: Any, cfg: Any, source: str) -> dict[str, Any]:
    """Train and eval rows of words and tags: texts (the words joined by single spaces), tag
    ids per word, the tag names and the two columns, for tasks.base.Examples."""
    wcol, tcol = tag_columns(train, cfg, source)
    for c in (wcol, tcol):
        if c not in evl.column_names:
            raise DataError(f"The eval split of '{source}' has no column '{c}'.")
    tr_words, tr_tags = _rows(train, wcol, tcol, source, "training")
    ev_words, ev_tags = _rows(evl, wcol, tcol, source, "eval")
    if not tr_words:
        raise DataError(f"The column '{wcol}' of '{source}' holds no words in the training split.")
    known = _class_names(train.features[tcol])
    flat = [t for row in tr_tags + ev_tags for t in row]
    if known is None:
        flat = [t if isinstance(t, int) else str(t) for t in flat]
    names, ids = _tag_names(flat, known)
    if known is not None and any(not (0 <= t < len(names)) for t in flat):
        raise DataError(f"The tags column '{tcol}' of '{source}' holds ids outside its "
                        f"{len(names)} tag names.")
    if len(names) < 2:
        raise DataError(f"The tags column '{tcol}' of '{source}' has only one tag "
                        f"({names[0] if names else 'none'}).",
                        hint="Token classification needs at least two tags (e.g. O and B-PLACE).")
    norm = (lambda t: t) if known is not None else (lambda t: t if isinstance(t, int) else str(t))
    to_ids = lambda rows: [[ids[norm(t)] for t in row] for row in rows]  # noqa: E731
    return dict(train_texts=[" ".join(w) for w in tr_words], train_labels=to_ids(tr_tags),
                eval_texts=[" ".join(w) for w in ev_words], eval_labels=to_ids(ev_tags),
                label_names=names, text_column=wcol, label_column=tcol)


# -- tokens ---------------------------------------------------------------------------------------

def encode_words(tokenizer: Any, word_lists: list[list[str]], max_length: int,
                 tags: list[list[int]] | None = None) -> tuple[dict, list[list[int | None]]]:
    """Tokenize rows of words (padded, truncated to max_length); with tags, add "labels": the
    word's tag at its first token, -100 elsewhere. Returns (the encoding as a dict of tensors,
    each row's word index per token)."""
    import torch

    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"The tokenizer '{type(tokenizer).__name__}' is a slow (pure Python) "
                         "tokenizer, which cannot say which word each token comes from, so word "
                         "tags cannot be put on tokens.",
                         hint="Use a model that ships a fast tokenizer (tokenizer.json).")
    enc = tokenizer(word_lists, is_split_into_words=True, padding=True, truncation=True,
                    max_length=max_length, return_tensors="pt")
    word_ids = [enc.word_ids(r) for r in range(len(word_lists))]
    out = dict(enc)
    if tags is not None:
        labels = torch.full_like(enc["input_ids"], -100)
        for r, ids in enumerate(word_ids):
            prev = None
            for pos, w in enumerate(ids):
                if w is not None and w != prev:
                    labels[r, pos] = tags[r][w]
                prev = w
        out["labels"] = labels
    return out, word_ids


def words_of(text: str) -> list[str]:
    """A row's words back from its text (read_word_tags joined them by single spaces)."""
    return text.split(" ")
