"""run_training(config, on_event, stop): the one training loop.

Read it top to bottom: set up (device, data, teacher, student, compatibility), measure
the starting point, then nanoGPT's order inside each step: learning rate, accumulate
micro-batches, clip, step, log, evaluate, checkpoint. It reports only through events.
"""

from __future__ import annotations

import math
import random
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from . import artifacts, checkpoints
from .compare import PinnedInputs
from .config import RunConfig, load_config
from .data import BatchOrder, causal_blocks, collate_blocks, encode, load_text_data
from .distill import Batch, Distiller
from .errors import ConfigError, KDStudioError, RunError, StoppedError
from .evaluation import EvalSet, Evaluator, headline_for, quality_retained
from .events import Checkpoint, Eval, Event, EventSink, Failed, Finished, Log, Stage, Started, Step, ignore
from .models import (check_compatibility, count_params, derive_student, load_model,
                     require_compatible, resolve_model_source)
from .runs import Run, create_run
from .teacher_prep import prepare_teacher


@dataclass
class RunResult:
    status: str  # "finished" or "stopped"
    run_dir: Path
    summary: dict[str, Any]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"training.device is '{name}'; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device is '{name}', but no CUDA GPU is available here.",
                          hint="Use 'auto' or 'cpu'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"training.device is '{name}', but there are only "
                          f"{torch.cuda.device_count()} GPU(s).")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("training.device is 'mps', but Apple's Metal backend is not available.",
                          hint="Use 'auto' or 'cpu'.")
    return dev


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("training.precision is 'fp16', which the CPU does not run.",
                          hint="Use 'fp32' or 'bf16' on the CPU.")
    return name


def teacher_dtype(name: str, device: torch.device, precision: str) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return partial(torch.autocast, device_type=device.type, dtype=dtype)


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
    except ImportError:  # Windows
        return 0.0


def run_training(config: RunConfig, on_event: EventSink | None = None, stop: Any = None, *,
                 resume: str | Path | None = None) -> RunResult:
    """Distill config.teacher into a student; returns when finished or stopped.

    ``stop`` is anything with ``is_set()`` (a threading.Event); it is checked every step and
    leaves a checkpoint behind. ``resume`` is a run folder to continue from its latest checkpoint.
    Errors are reported as a Failed event and then raised.
    """
    on_event = on_event or ignore
    stop = stop or threading.Event()
    run: Run | None = None
    pending: list[Event] = []  # events from before the run folder exists

    def emit(event: Event) -> None:
        if run is not None:
            run.append_event(event.to_dict())
        else:
            pending.append(event)
        on_event(event)

    def open_run(r: Run) -> None:
        nonlocal run
        run = r
        for e in pending:
            r.append_event(e.to_dict())
        pending.clear()

    try:
        if resume is not None:
            r = Run(Path(resume))
            if not r.config_path.exists():
                raise RunError(f"'{resume}' is not a run folder (it has no config.toml).")
            config = load_config(r.config_path)
            if r.latest_checkpoint() is None:
                raise RunError(f"The run '{r.path.name}' has no checkpoint to resume from.",
                               hint="Start it again with 'kdstudio run'.")
            open_run(r)
            r.update_summary(status="running", pid=__import__("os").getpid())
        else:
            config.validate()
        return _train(config, emit, stop, open_run, lambda: run)
    except StoppedError as exc:
        if run is not None:
            run.update_summary(status="stopped")
        emit(Finished(status="stopped", run_dir=str(run.path) if run else "", summary={"message": exc.message}))
        return RunResult("stopped", run.path if run else Path(), run.summary() if run else {})
    except KDStudioError as exc:
        _fail(emit, run, type(exc).__name__, exc.title, str(exc))
        raise
    except torch.cuda.OutOfMemoryError:
        _fail(emit, run, "OutOfMemoryError", "Out of GPU memory",
              "The GPU ran out of memory. Lower training.batch_size (and raise "
              "training.grad_accum_steps to keep the effective batch), lower data.max_length, "
              "or hold the teacher in half precision (teacher.dtype).")
        raise
    except Exception as exc:
        _fail(emit, run, type(exc).__name__, "Unexpected error",
              f"The run stopped on an unexpected error: {type(exc).__name__}: {exc}")
        raise


def _fail(emit: EventSink, run: Run | None, kind: str, title: str, message: str) -> None:
    if run is not None:
        run.update_summary(status="failed", error=message)
    emit(Failed(error_type=kind, title=title, message=message,
                run_dir=str(run.path) if run else ""))


def _train(cfg: RunConfig, emit: EventSink, stop: Any, open_run: Any, current_run: Any) -> RunResult:
    tc, task = cfg.training, cfg.task
    device = resolve_device(tc.device)
    precision = resolve_precision(tc.precision, device)
    autocast = _autocast(device, precision)
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)

    # -- data and models -----------------------------------------------------------------------
    emit(Stage("load data", cfg.data.dataset))
    data = load_text_data(cfg.data, task, seed=tc.seed)
    emit(Log(f"Data: {len(data.train_texts)} training and {len(data.eval_texts)} evaluation rows "
             f"from '{data.source}' (text column '{data.text_column}'"
             + (f", label column '{data.label_column}' with {len(data.label_names)} classes)" if data.label_names else ")")))
    _check_stop(stop)

    emit(Stage("load teacher", cfg.teacher.name))
    t_source = resolve_model_source(cfg.teacher.name, revision=cfg.teacher.revision, on_event=emit,
                                    stop=stop, role="teacher")
    teacher = load_model(t_source, task, trust_remote_code=cfg.teacher.trust_remote_code,
                         label_names=data.label_names, role="teacher")
    if cfg.teacher.trust_remote_code:
        emit(Log("teacher.trust_remote_code is on: the teacher's own Python code runs.", "warning"))
    if task == "sequence-classification":
        if cfg.teacher.prepare == "always" or (cfg.teacher.prepare == "auto" and teacher.new_head):
            emit(Stage("prepare teacher", "fine-tuning the teacher on the labelled data"))
            folder = prepare_teacher(cfg, teacher, data, device, autocast, emit, stop)
            teacher = load_model(str(folder), task, label_names=data.label_names, role="teacher")
        elif teacher.new_head:
            emit(Log("The teacher has no trained head for these classes and teacher.prepare is "
                     "'never': its predictions are random, so the student learns little.", "warning"))
    _check_stop(stop)

    emit(Stage("load student", cfg.student.name or f"derived from the teacher ({cfg.student.layers:g} layers)"))
    kept: list[int] | None = None
    if cfg.student.name:
        s_source = resolve_model_source(cfg.student.name, revision=cfg.student.revision,
                                        on_event=emit, stop=stop, role="student")
        loaded = load_model(s_source, task, trust_remote_code=cfg.student.trust_remote_code,
                            label_names=data.label_names, role="student")
        student, student_tok = loaded.model.float(), loaded.tokenizer
        student_desc = cfg.student.name
    else:
        derived = derive_student(teacher.model, layers=cfg.student.layers,
                                 layer_indices=cfg.student.layer_indices,
                                 hidden=cfg.student.hidden_size, seed=tc.seed)
        for note in derived.notes:
            emit(Log(note, "warning" if derived.fresh_init else "info"))
        student, student_tok, kept = derived.model, teacher.tokenizer, derived.kept_layers
        student_desc = f"{len(kept)}-layer student derived from {cfg.teacher.name}"
    tmodel = teacher.model.to(device=device, dtype=teacher_dtype(cfg.teacher.dtype, device, precision))
    tmodel.eval()
    tmodel.requires_grad_(False)
    student.to(device)
    student.train()

    comp = check_compatibility(task, cfg.method, tmodel, student, teacher.tokenizer, student_tok)
    require_compatible(comp)
    for note in comp.notes:
        emit(Log(note))
    same_tok = comp.same_vocab
    if same_tok:
        student_tok = teacher.tokenizer
    distiller = Distiller(task, cfg.method, tmodel, student, kept_layers=kept,
                          vocab_size=comp.vocab_size).to(device)

    # -- batches -------------------------------------------------------------------------------
    emit(Stage("tokenize", f"{len(data.train_texts)} texts"))
    dc = cfg.data
    if task == "causal-lm":
        blocks = causal_blocks(student_tok, data.train_texts, dc.max_length, dc.pack)
        if not blocks:
            raise KDStudioError(f"After tokenizing, '{data.source}' gives no training sequences "
                                "of two or more tokens.")
        n_train = len(blocks)

        def make_batch(idx: list[int]) -> Batch:
            b = collate_blocks([blocks[i] for i in idx], student_tok.pad_token_id)
            b = {k: v.to(device) for k, v in b.items()}
            return Batch(b, b, None, int(b["attention_mask"].sum()), len(idx))
    else:
        n_train = len(data.train_texts)

        def make_batch(idx: list[int]) -> Batch:
            texts = [data.train_texts[i] for i in idx]
            s = {k: v.to(device) for k, v in encode(student_tok, texts, dc.max_length).items()}
            t = s if same_tok else {k: v.to(device) for k, v in encode(teacher.tokenizer, texts, dc.max_length).items()}
            labels = (torch.tensor([data.train_labels[i] for i in idx], device=device)
                      if data.train_labels is not None else None)
            return Batch(s, t, labels, int(s["attention_mask"].sum()), len(idx))

    bs = min(tc.batch_size, n_train)
    order = BatchOrder(n_train, bs, tc.seed)
    if tc.max_steps:
        total_steps = tc.max_steps
    else:
        total_steps = max(1, math.ceil(tc.epochs * order.per_epoch / tc.grad_accum_steps))

    # -- optimizer and schedule ---------------------------------------------------------------
    from transformers import get_scheduler

    decay, no_decay = [], []
    for name, p in distiller.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=tc.learning_rate, fused=device.type == "cuda")
    scheduler = get_scheduler(tc.scheduler, optimizer,
                              num_warmup_steps=int(tc.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    evaluator = Evaluator(task, EvalSet(task, data.eval_texts, data.eval_labels,
                                        max_samples=cfg.evaluation.max_samples,
                                        max_length=dc.max_length, pack=dc.pack,
                                        batch_size=cfg.evaluation.batch_size),
                          tmodel, teacher.tokenizer, student_tok, device, autocast, comp.vocab_size,
                          project=distiller.project_embedding)
    headline, _ = headline_for(task, data.eval_labels is not None)
    pinned = PinnedInputs(cfg, tmodel, teacher.tokenizer, student, student_tok, data, device)

    # -- the run folder, or the checkpoint we resume from ---------------------------------------
    run = current_run()
    start_step = 0
    if run is None:
        name = cfg.name or f"{task}-{Path(str(cfg.teacher.name)).name}"
        run = create_run(cfg.to_toml(), name=name, task=task, teacher=cfg.teacher.name,
                         student=student_desc)
        open_run(run)
    else:
        cp = run.latest_checkpoint()
        start_step = checkpoints.load(cp, distiller, optimizer, scheduler, scaler)
        emit(Log(f"Resumed from {cp.name}."))
    t_params, s_params = count_params(tmodel), count_params(student)
    run.update_summary(status="running", device=str(device), precision=precision,
                       teacher_params=t_params, student_params=s_params, kept_layers=kept,
                       total_steps=total_steps, headline_metric=headline,
                       label_names=data.label_names, teacher_source=teacher.source)
    emit(Started(run_dir=str(run.path), task=task, device=_device_name(device), precision=precision,
                 teacher=cfg.teacher.name, student=student_desc, teacher_params=t_params,
                 student_params=s_params, total_steps=total_steps, start_step=start_step,
                 train_samples=n_train, eval_samples=len(evaluator.eval_set.texts)))

    # -- where we start from -------------------------------------------------------------------
    emit(Stage("evaluate", "teacher and student before distillation"))
    teacher_metrics = evaluator.teacher_metrics()
    if start_step == 0:
        before = evaluator.student_metrics(student)
        run.update_summary(teacher_metrics=teacher_metrics, student_metrics_before=before)
        emit(Eval(step=0, metrics=before, teacher_metrics=teacher_metrics, samples=pinned()))
    _check_stop(stop)

    # -- the loop ------------------------------------------------------------------------------
    accum = tc.grad_accum_steps
    micro = start_step * accum
    step = start_step
    t_start = time.perf_counter()
    stopped = False
    last_saved = start_step
    while step < total_steps:
        if stop.is_set():
            stopped = True
            break
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        samples = tokens = 0
        for _ in range(accum):
            batch = make_batch(order.indices(micro))
            micro += 1
            with autocast():
                loss, parts = distiller(batch)
            # Dividing by accum makes the summed gradients an average over the micro-batches.
            scaler.scale(loss / accum).backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v / accum
            samples += batch.size
            tokens += batch.tokens
        if tc.max_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(distiller.trainable_parameters(), tc.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        elapsed = time.perf_counter() - t_start
        done = step - start_step
        emit(Step(step=step, total_steps=total_steps, losses=sums, lr=lr,
                  samples_per_s=samples / dt, tokens_per_s=tokens / dt, memory_mb=_memory_mb(device),
                  elapsed_s=elapsed, eta_s=elapsed / done * (total_steps - step)))
        if tc.eval_every and step % tc.eval_every == 0 and step < total_steps:
            emit(Eval(step=step, metrics=evaluator.student_metrics(student), samples=pinned()))
        if tc.save_every and step % tc.save_every == 0 and step < total_steps:
            _save_checkpoint(run, distiller, optimizer, scheduler, scaler, step, micro, tc, emit)
            last_saved = step

    # -- the end: checkpoint, final measurement, the student folder, the card -------------------
    if step > last_saved or not run.checkpoints():
        _save_checkpoint(run, distiller, optimizer, scheduler, scaler, step, micro, tc, emit)
    emit(Stage("save student", str(run.student_dir)))
    artifacts.save_student(run.student_dir, student, student_tok, task, t_source)
    if stopped:
        summary = run.update_summary(status="stopped", steps=step)
        emit(Finished(status="stopped", run_dir=str(run.path), summary=summary))
        return RunResult("stopped", run.path, summary)

    emit(Stage("evaluate", "final measurement of teacher and student"))
    after = evaluator.student_metrics(student)
    emit(Eval(step=step, metrics=after, teacher_metrics=teacher_metrics, samples=pinned()))
    perf = artifacts.measure(evaluator, tmodel, student, teacher.tokenizer, student_tok,
                             t_source, run.student_dir, cfg.evaluation.latency_repeats)
    summary = run.update_summary(
        status="finished", steps=step, student_metrics=after,
        quality_retained=quality_retained(headline, teacher_metrics, after),
        duration_s=round(time.perf_counter() - t_start, 2), **perf)
    artifacts.write_model_card(run, summary)
    emit(Finished(status="finished", run_dir=str(run.path), summary=summary))
    return RunResult("finished", run.path, summary)


def _check_stop(stop: Any) -> None:
    if stop.is_set():
        raise StoppedError("Stopped before training began.")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return str(device)


def _save_checkpoint(run: Run, distiller: Distiller, optimizer: Any, scheduler: Any, scaler: Any,
                     step: int, micro: int, tc: Any, emit: EventSink) -> None:
    path = checkpoints.save(run.checkpoints_dir, step, distiller, optimizer, scheduler, scaler,
                            keep=tc.keep_checkpoints)
    emit(Checkpoint(step=step, path=str(path)))
