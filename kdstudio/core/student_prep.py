"""The derived student of a run: today's layer-dropping copy, or one pruned from the teacher.

A pruned student (pruning.py) needs the teacher's importance on the run's training texts.
That pass is measured once per teacher and data set and kept under the KD Studio home
(``importance/<teacher>-<key>/``), like a prepared teacher, so every later run and every
student of a sweep reuses it. A vocabulary cut to the data (encoders) writes a smaller
WordPiece tokenizer that transformers and sentence-transformers load as usual.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from kdstudio.core.dist_control import main_process_does
from kdstudio.core.data import TextData
from kdstudio.core.errors import ConfigError
from kdstudio.core.events import Log, Progress, Stage
from kdstudio.core.models import LoadedModel, count_params, derive_student
from kdstudio.core.preflight import check_layer_choice
from kdstudio.core.importance import Importance, measure_importance
from kdstudio.core.prune_plan import choose_layers, plan_shape
from kdstudio.core.pruning import (
    PruneShape,
    check_student_fields,
    dims_of,
    family_of,
    prune_model,
    uses_pruning,
)
from kdstudio.core.runs import atomic_write_json, home_dir

CALIBRATION_TEXTS = 512   # Minitron finds 1024 samples enough for an LLM; our texts are short
CALIBRATION_BATCH = 16
STAGE = "measure importance"


def derived_words(s: Any) -> str:
    """The stage's words for a derived student (``s``: the config's student section)."""
    if s.target_size > 0:
        return f"pruned from the teacher to about {s.target_size:.0%} of its parameters ({s.shape})"
    if s.layer_indices:
        return f"derived from the teacher (layers {', '.join(map(str, s.layer_indices))})"
    return f"derived from the teacher ({s.layers:g} layers)"


def derived_student(cfg: Any, teacher: LoadedModel, data: TextData, ctx: Any
                    ) -> tuple[torch.nn.Module, Any, list[int], str]:
    """The run's derived student: (model, tokenizer, kept teacher layers, description).

    Without pruning fields this is exactly today's student (derive_student), draws and all.
    """
    s, emit = cfg.student, ctx.emit
    tmodel = teacher.model
    if not uses_pruning(s, tmodel.config):
        d = derive_student(tmodel, layers=s.layers, layer_indices=s.layer_indices,
                           hidden=s.hidden_size, seed=cfg.training.seed)
        for note in d.notes:
            emit(Log(note, "warning" if d.fresh_init else "info"))
        kept = d.kept_layers
        return d.model, teacher.tokenizer, kept, \
            f"{len(kept)}-layer student derived from {cfg.teacher.name}"
    check_student_fields(s, tmodel.config)
    if cfg.teacher.dtype == "int8":
        raise ConfigError("teacher.dtype is 'int8', but a pruned student copies the teacher's "
                          "weights, which 8-bit loading does not keep exactly.",
                          hint="Use teacher.dtype = \"auto\" with a pruned student, or "
                               "student.layer_choice = \"even\" with no width fields.")
    dims = dims_of(tmodel.config)
    token_ids = data_vocabulary(teacher.tokenizer, data.train_texts, cfg.data.max_length) \
        if s.vocabulary == "data" else None
    needs_importance = (s.layer_choice == "importance" or s.attention_heads
                        or s.intermediate_size or s.hidden_size
                        or (s.target_size and s.shape != "layers"))
    imp = teacher_importance(cfg, teacher, data, ctx) if needs_importance else None
    if s.target_size:
        planned = plan_shape(type(tmodel), tmodel.config, s.target_size, s.shape,
                             layer_choice=s.layer_choice,
                             layer_scores=imp.layers if imp is not None else None,
                             vocab_rows=len(token_ids) if token_ids else 0)
        emit(Log(planned.note))
        shape = planned.shape
    else:
        if s.layer_indices:
            check_layer_choice(dims.layers, s.layers, list(s.layer_indices))
            kept = sorted(s.layer_indices)
        else:
            n = check_layer_choice(dims.layers, s.layers, [])
            kept = choose_layers(dims.layers, n, s.layer_choice,
                                 imp.layers if imp is not None else None)
        shape = PruneShape(kept, heads=s.attention_heads, inter=s.intermediate_size,
                           hidden=s.hidden_size)
    if imp is not None and s.layer_choice == "importance" and not s.layer_indices:
        order = ", ".join(f"{i}: {v:.3f}" for i, v in enumerate(imp.layers.tolist()))
        emit(Log(f"Layer importance (block influence) on the training data: {order}."))
    student = prune_model(tmodel, shape, imp, token_ids=token_ids)
    tok = teacher.tokenizer
    if token_ids:
        tok = trimmed_tokenizer(teacher.tokenizer, token_ids)
        emit(Log(vocabulary_note(teacher.tokenizer, tok, data.eval_texts, cfg.data.max_length,
                                 token_ids)))
    fam = family_of(tmodel.config)
    heads, hidden, inter = shape.resolved(dims, fam)
    t_params, s_params = count_params(tmodel), count_params(student)
    emit(Log(f"Student pruned from the teacher: layers {shape.layers} of {dims.layers}, "
             f"{heads} of {dims.heads} heads, {inter} of {dims.inter} MLP neurons, width "
             f"{hidden} of {dims.hidden}"
             + (f", {len(token_ids)} of {dims.vocab} tokens" if token_ids else "")
             + f": {s_params:,} parameters, {s_params / t_params:.0%} of the teacher's "
               "(initialised from its most important parts)."))
    notes = ([f"width {hidden}"] if hidden != dims.hidden else []) + \
        ([f"{len(token_ids):,} of {dims.vocab:,} tokens"] if token_ids else [])
    desc = f"{len(shape.layers)}-layer student pruned from {cfg.teacher.name}" + \
        (f" ({', '.join(notes)})" if notes else "")
    return student, tok, list(shape.layers), desc


# -- importance, measured once and kept -----------------------------------------------------

def importance_key(cfg: Any, teacher: LoadedModel, data: TextData) -> str:
    """Everything that changes the measured importance goes into its key."""
    d, t = cfg.data, cfg.teacher
    parts = {"teacher": t.name, "revision": t.revision, "source": str(teacher.source),
             "dataset": d.dataset, "config": d.config_name, "split": d.split,
             "eval_split": d.eval_split, "eval_fraction": d.eval_fraction,
             "text": data.text_column, "n_train": len(data.train_texts),
             "max_length": d.max_length, "max_train": d.max_train_samples,
             "seed": cfg.training.seed, "texts": CALIBRATION_TEXTS, "version": 1}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    stem = Path(t.name).name.replace("/", "-")[:40]
    return f"{stem}-{digest}"


def importance_dir(cfg: Any, teacher: LoadedModel, data: TextData) -> Path:
    return home_dir() / "importance" / importance_key(cfg, teacher, data)


def calibration_texts(texts: list[str], seed: int, n: int = CALIBRATION_TEXTS) -> list[str]:
    if len(texts) <= n:
        return list(texts)
    return random.Random(seed).sample(list(texts), n)


def teacher_importance(cfg: Any, teacher: LoadedModel, data: TextData, ctx: Any) -> Importance:
    """The teacher's importance on a sample of the training texts: from disk, or measured now
    (progress events; Stop leaves nothing behind) and saved for later runs."""
    folder = importance_dir(cfg, teacher, data)
    group = getattr(ctx, "group", None)
    if group is not None and getattr(group, "multi", False):
        # Several processes: the main one measures (or reads) and saves; the others wait, then
        # read the same file, so every process prunes the same student.
        imp = main_process_does(group, lambda: _importance(cfg, teacher, data, ctx, folder),
                                "Stopped while measuring the teacher's importance.")
        if group.is_main:
            return imp
        return Importance.from_dict(torch.load(folder / "importance.pt", weights_only=True))
    return _importance(cfg, teacher, data, ctx, folder)


def _importance(cfg: Any, teacher: LoadedModel, data: TextData, ctx: Any, folder: Path
                ) -> Importance:
    emit, stop = ctx.emit, ctx.stop
    path = folder / "importance.pt"
    if path.exists():
        info = json.loads((folder / "importance.json").read_text(encoding="utf-8"))
        emit(Log(f"Reusing the teacher's importance measured in {info['seconds']:.1f} s on "
                 f"{info['tokens']:,} tokens ({folder})."))
        return Importance.from_dict(torch.load(path, weights_only=True))
    texts = calibration_texts(data.train_texts, cfg.training.seed)
    emit(Stage(STAGE, f"the teacher on {len(texts)} training texts"))
    tok = teacher.tokenizer
    batches = []
    for i in range(0, len(texts), CALIBRATION_BATCH):
        enc = tok(texts[i:i + CALIBRATION_BATCH], padding=True, truncation=True,
                  max_length=cfg.data.max_length, return_tensors="pt")
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    model = teacher.model.to(ctx.device)
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        emit(Progress(stage=STAGE, current=done, total=total, unit="batches",
                      metrics={"elapsed_s": time.perf_counter() - t0}))

    imp = measure_importance(model, batches, on_batch=progress, stop=stop)
    seconds = time.perf_counter() - t0
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(imp.to_dict(), tmp / "importance.pt")
    atomic_write_json(tmp / "importance.json", {
        "teacher": cfg.teacher.name, "dataset": cfg.data.dataset, "texts": len(texts),
        "tokens": imp.n_tokens, "seconds": round(seconds, 3), "device": str(ctx.device)})
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    emit(Log(f"Measured the teacher's importance in {seconds:.1f} s on {imp.n_tokens:,} tokens; "
             f"saved to {folder} and reused by later runs."))
    return imp


# -- the vocabulary cut to the data ----------------------------------------------------------

def data_vocabulary(tokenizer: Any, texts: list[str], max_length: int) -> list[int]:
    """The token ids the texts use, plus every special and added token, in id order."""
    used: set[int] = set(tokenizer.all_special_ids)
    used.update(tokenizer.added_tokens_decoder.keys())
    for i in range(0, len(texts), 256):
        for ids in tokenizer(texts[i:i + 256], truncation=True, max_length=max_length)["input_ids"]:
            used.update(ids)
    return sorted(used)


def trimmed_tokenizer(tokenizer: Any, token_ids: list[int]) -> Any:
    """The tokenizer keeping only ``token_ids`` (new id = position in the list). WordPiece
    only: it splits kept words exactly as before, and a word it cannot spell becomes [UNK]."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="kdstudio-vocab-") as tmp:
        folder = Path(tmp)
        tokenizer.save_pretrained(folder)
        spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        model = spec.get("model", {})
        if model.get("type") != "WordPiece":
            raise ConfigError(f"student.vocabulary is 'data', but the teacher's tokenizer is "
                              f"{model.get('type', 'unknown')}; only WordPiece vocabularies "
                              "(BERT, MiniLM) are cut to the data.",
                              hint="Set student.vocabulary = \"teacher\" (allowed: teacher, data).")
        inverse = {i: t for t, i in model["vocab"].items()}
        for a in spec.get("added_tokens", []):
            inverse.setdefault(a["id"], a["content"])
        new_id = {old: n for n, old in enumerate(token_ids)}
        model["vocab"] = {inverse[old]: n for n, old in enumerate(token_ids)}
        for a in spec.get("added_tokens", []):
            a["id"] = new_id[a["id"]]
        _remap_post_processor(spec.get("post_processor"), new_id)
        (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False),
                                               encoding="utf-8")
        if (folder / "vocab.txt").exists():
            (folder / "vocab.txt").write_text(
                "".join(inverse[old] + "\n" for old in token_ids), encoding="utf-8")
        new = AutoTokenizer.from_pretrained(folder)
        new.name_or_path = ""  # the temporary folder goes away
    return new


def _remap_post_processor(pp: Any, new_id: dict[int, int]) -> None:
    if not isinstance(pp, dict):
        return
    for special in (pp.get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special.get("ids", [])]
    for key in ("cls", "sep"):  # BertProcessing: [token, id]
        if isinstance(pp.get(key), list) and len(pp[key]) == 2:
            pp[key][1] = new_id[pp[key][1]]
    for sub in pp.get("processors", []) or []:
        _remap_post_processor(sub, new_id)


def vocabulary_note(teacher_tok: Any, student_tok: Any, eval_texts: list[str],
                    max_length: int, token_ids: list[int] | None = None) -> str:
    """How many held-out tokens the cut vocabulary reads differently: as [UNK], or as other
    pieces of the kept vocabulary (a word the data never used, split another way)."""
    changed, unknown, total = unknown_share(teacher_tok, student_tok, eval_texts, max_length,
                                            token_ids)
    pct = (lambda n: n / total if total else 0.0)
    return (f"Vocabulary cut to the training data: {len(student_tok):,} of {len(teacher_tok):,} "
            f"tokens. Of the {total:,} held-out tokens, {unknown:,} ({pct(unknown):.2%}) become "
            f"unknown and {changed:,} ({pct(changed):.2%}) belong to words the student splits "
            "differently from the teacher.")


def unknown_share(teacher_tok: Any, student_tok: Any, texts: list[str], max_length: int,
                  token_ids: list[int] | None = None) -> tuple[int, int, int]:
    """(teacher tokens in words read differently, of those in words read as [UNK], teacher
    tokens) over the texts. ``token_ids`` maps the student's ids back to the teacher's."""
    back = token_ids or list(range(len(student_tok)))
    unk_s = student_tok.unk_token_id
    changed = unknown = total = 0
    for i in range(0, len(texts), 256):
        chunk = texts[i:i + 256]
        kw = dict(truncation=True, max_length=max_length, add_special_tokens=False)
        t_enc, s_enc = teacher_tok(chunk, **kw), student_tok(chunk, **kw)
        for n in range(len(chunk)):
            t_ids, s_ids = t_enc["input_ids"][n], s_enc["input_ids"][n]
            total += len(t_ids)
            words: dict[Any, list[list[int]]] = {}
            for ids, enc, k in ((t_ids, t_enc, 0), (s_ids, s_enc, 1)):
                for pos, w in enumerate(enc.word_ids(n)):
                    words.setdefault(w, [[], []])[k].append(ids[pos])
            for t_pieces, s_pieces in words.values():
                if t_pieces != [back[x] for x in s_pieces]:
                    changed += len(t_pieces)
                    if unk_s in s_pieces:
                        unknown += len(t_pieces)
    return changed, unknown, total


__all__ = ["CALIBRATION_TEXTS", "data_vocabulary", "derived_student", "derived_words",
           "importance_dir", "teacher_importance", "trimmed_tokenizer", "unknown_share"]
