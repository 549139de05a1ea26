"""The "prepare teacher" stage: fine-tune a teacher on labelled data before it can teach a task.

Task-specific distillation needs a teacher that is good at the task. A base model has
no trained classification head, so this stage fine-tunes it (ordinary supervised
training), saves the result under the KD Studio home and reuses it for any later run
with the same teacher, data and settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from kdstudio.core.dist_control import main_process_does
from kdstudio.core.data import BatchOrder, TextData
from kdstudio.core.errors import StoppedError
from kdstudio.core.evaluation import EvalSet, Evaluator
from kdstudio.core.events import Log, Progress
from kdstudio.core.models import LoadedModel
from kdstudio.core.runs import atomic_write_json, home_dir
from kdstudio.core.tasks import Task, get_task


def prepared_teacher(cfg: Any, task: Task, teacher: LoadedModel, data: TextData, ctx: Any) -> LoadedModel:
    """A teacher that is good at the task: the one given, unless its task head is new (or
    teacher.prepare is 'always'), then the one fine-tuned here (teacher.prepare)."""
    from kdstudio.core.events import Stage
    from kdstudio.core.models import load_model

    if not task.has_task_head:
        return teacher
    mode = cfg.teacher.prepare
    if mode == "always" or (mode == "auto" and teacher.new_head):
        ctx.emit(Stage("prepare teacher", "fine-tuning the teacher on the labelled data"))
        folder = prepare_teacher(cfg, teacher, data, ctx)
        return load_model(str(folder), task, label_names=data.label_names, role="teacher")
    if teacher.new_head:
        ctx.emit(Log("The teacher has no trained head for these classes and teacher.prepare "
                     "is 'never': its predictions are random, so the student learns little.",
                     "warning"))
    return teacher


def prepared_key(cfg: Any, data: TextData) -> str:
    """Everything that changes the prepared teacher goes into its cache key."""
    d, t = cfg.data, cfg.teacher
    parts = {
        "teacher": t.name, "revision": t.revision, "dataset": d.dataset, "config": d.config_name,
        "split": d.split, "eval_split": d.eval_split, "eval_fraction": d.eval_fraction,
        "text": data.text_column, "label": data.label_column, "labels": data.label_names,
        "max_length": d.max_length, "max_train": d.max_train_samples, "epochs": t.prepare_epochs,
        "lr": t.prepare_learning_rate, "seed": cfg.training.seed, "batch": cfg.training.batch_size,
        "n_train": len(data.train_texts),
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    stem = Path(t.name).name.replace("/", "-")[:40]
    return f"{stem}-{digest}"


def prepared_dir(cfg: Any, data: TextData) -> Path:
    return home_dir() / "teachers" / prepared_key(cfg, data)


def prepare_teacher(cfg: Any, teacher: LoadedModel, data: TextData, ctx: Any) -> Path:
    """Fine-tune the teacher's head and body on the training split; returns the saved folder.

    ``ctx`` carries the run's device, autocast, emit and stop. The fine-tuning is ordinary
    supervised training through the one training loop (train_steps) with the plain loss.
    """
    emit = ctx.emit
    folder = prepared_dir(cfg, data)
    info_path = folder / "prepared.json"
    # Several processes: the main one decides, prepares and saves; the others wait, then load.
    group = getattr(ctx, "group", None)
    multi = group is not None and group.multi
    if multi and not group.broadcast(info_path.exists()):
        done = main_process_does(group, lambda: _prepare(cfg, teacher, data, ctx, folder),
                                 "Stopped while preparing the teacher; nothing was saved.")
        if group.is_main:
            return done
        if not info_path.exists():
            from kdstudio.core.errors import RunError

            raise RunError(f"Process {group.rank} cannot find the teacher the main process "
                           f"prepared in {folder}.",
                           hint="Every machine must see the same KD Studio home "
                                "(KDSTUDIO_HOME on a shared file system).")
    if info_path.exists():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        emit(Log(f"Reusing the prepared teacher in {folder} "
                 f"({_headline_words(cfg, data, info['metrics'])})."))
        emit(Progress(stage="prepare teacher", current=1, total=1, metrics=info["metrics"]))
        return folder
    return _prepare(cfg, teacher, data, ctx, folder)


def _prepare(cfg: Any, teacher: LoadedModel, data: TextData, ctx: Any, folder: Path) -> Path:
    from kdstudio.core.distiller import Distiller
    from kdstudio.core.loop import Optimizer, make_optimizer, train_steps
    from kdstudio.core.objective import plain_method

    emit, device = ctx.emit, ctx.device
    task = get_task(cfg.task)
    model = teacher.model.float().to(device)
    model.train()
    tok, tc, max_len = teacher.tokenizer, cfg.training, cfg.data.max_length
    bs = min(tc.batch_size, len(data.train_texts))
    order = BatchOrder(len(data.train_texts), bs, tc.seed + 1)
    total = max(1, math.ceil(cfg.teacher.prepare_epochs * order.per_epoch))
    # The model trains as the "student" of a plain objective; no teacher term reads it.
    trainee = Distiller(task, plain_method(cfg.method, task), model, model)
    optimizer, scheduler, scaler = make_optimizer(
        trainee, lr=cfg.teacher.prepare_learning_rate, weight_decay=0.01, scheduler="linear",
        warmup_steps=int(0.1 * total), total_steps=total, device=device, precision="fp32",
        decay_norms=True)
    _, make = task.batch_maker(data.train_texts, data.train_labels, student_tok=tok,
                               teacher_tok=tok, same_tok=True, max_length=max_len, pack=False,
                               device=device)
    t0 = time.perf_counter()
    _, stopped = train_steps(
        trainee, lambda i: make(order.indices(i)),
        Optimizer(optimizer, scheduler, scaler, 1.0, ctx.autocast), start_step=0,
        total_steps=total, accum=1, stop=ctx.stop,
        on_step=lambda r: emit(Progress(stage="prepare teacher", current=r.step, total=total,
                                        unit="steps", metrics={"loss": r.losses["total"],
                                                               "elapsed_s": time.perf_counter() - t0})))
    if stopped:
        raise StoppedError("Stopped while preparing the teacher; nothing was saved.")
    model.eval()
    ev = Evaluator(task, EvalSet(task, data.eval_texts, data.eval_labels,
                                 max_samples=cfg.evaluation.max_samples, max_length=max_len,
                                 pack=False, batch_size=cfg.evaluation.batch_size),
                   model, tok, tok, device, ctx.autocast)
    metrics = ev.teacher_metrics()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    atomic_write_json(tmp / "prepared.json", {
        "teacher": cfg.teacher.name, "dataset": cfg.data.dataset, "steps": total,
        "labels": data.label_names, "metrics": metrics,
        "seconds": round(time.perf_counter() - t0, 1)})
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    emit(Log(f"Prepared teacher: {total} fine-tuning steps, {_headline_words(cfg, data, metrics)}; "
             f"saved to {folder} and reused by later runs."))
    emit(Progress(stage="prepare teacher", current=total, total=total, metrics=metrics))
    return folder


def _headline_words(cfg: Any, data: TextData, metrics: dict[str, float]) -> str:
    """'eval accuracy 91.2%': the task's headline figure of the prepared teacher."""
    from kdstudio.core.metrics import PERCENT_METRICS

    name, _ = get_task(cfg.task).headline(data.eval_labels is not None)
    value = metrics.get(name, 0.0)
    shown = f"{value:.1%}" if name in PERCENT_METRICS else f"{value:.3f}"
    return f"eval {name.replace('_', ' ')} {shown}"
