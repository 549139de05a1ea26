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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import artifacts, checkpoints
from .compare import PinnedInputs
from .config import RunConfig, load_config
from .data import BatchOrder, load_text_data
from .device import (
    _autocast,
    _device_name,
    _memory_mb,
    resolve_device,
    resolve_precision,
    teacher_dtype,
)
from .distill import Batch, Distiller
from .errors import KDStudioError, RunError, StoppedError
from .evaluation import (
    METRIC_LABELS,
    EvalSet,
    Evaluator,
    headline_for,
    quality_retained,
)
from .events import (
    Checkpoint,
    Eval,
    Event,
    EventSink,
    Failed,
    Finished,
    Log,
    Progress,
    Stage,
    Started,
    Step,
    ignore,
)
from .lm import (
    GENERATIONS_FILE,
    generate_continuations,
    load_generations,
    on_policy_batch,
    prompts_from_texts,
    save_generations,
)
from .models import (
    check_compatibility,
    count_params,
    derive_student,
    load_model,
    require_compatible,
    resolve_model_source,
)
from .runs import Run, create_run
from .steps import batch_maker, make_optimizer, optimizer_step, train_baseline
from .teacher_prep import prepare_teacher


@dataclass
class RunResult:
    status: str  # "finished" or "stopped"
    run_dir: Path
    summary: dict[str, Any]


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
    # The plain-training baseline starts from the very weights the distilled student starts from.
    initial_state = ({k: v.detach().clone() for k, v in student.state_dict().items()}
                     if cfg.evaluation.baseline else None)

    # -- batches -------------------------------------------------------------------------------
    dc, m = cfg.data, cfg.method
    batch_args = dict(student_tok=student_tok, teacher_tok=teacher.tokenizer, same_tok=same_tok,
                      max_length=dc.max_length, pack=dc.pack, device=device)
    generations: tuple[list[str], list[str]] | None = None
    if task == "causal-lm" and m.sequence_level:
        generations = _teacher_continuations(cfg, tmodel, teacher.tokenizer, data.train_texts,
                                             device, autocast, emit, stop, current_run())
        prompts, continuations = generations
        texts = [p + c for p, c in zip(prompts, continuations)]
        emit(Stage("tokenize", f"{len(texts)} texts written by the teacher"))
        n_train, make_batch = batch_maker(task, texts, None, prompt_chars=[len(p) for p in prompts],
                                          source="the teacher's continuations", **batch_args)
    else:
        emit(Stage("tokenize", f"{len(data.train_texts)} texts"))
        n_train, make_batch = batch_maker(task, data.train_texts, data.train_labels,
                                          source=f"'{data.source}'", **batch_args)

    def maybe_on_policy(batch: Batch, micro: int) -> Batch:
        """GKD's lambda: this share of the batches is replaced by the student's own samples.
        The draw depends only on the seed and the micro-batch number, so a resumed run makes
        the same choices as an uninterrupted one."""
        share = m.on_policy_share
        if share <= 0 or (share < 1 and random.Random(tc.seed * 1_000_003 + micro).random() >= share):
            return batch
        return on_policy_batch(student, student_tok, None if same_tok else teacher.tokenizer,
                               batch, cfg.generation, dc.max_length, device,
                               seed=tc.seed + micro, autocast=autocast)

    bs = min(tc.batch_size, n_train)
    order = BatchOrder(n_train, bs, tc.seed)
    if tc.max_steps:
        total_steps = tc.max_steps
    else:
        total_steps = max(1, math.ceil(tc.epochs * order.per_epoch / tc.grad_accum_steps))
    optimizer, scheduler, scaler = make_optimizer(distiller, tc, total_steps, device, precision)

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
        if generations is not None:
            save_generations(run.path / GENERATIONS_FILE, *generations)
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
        first = micro
        res = optimizer_step(distiller, (maybe_on_policy(make_batch(order.indices(first + i)), first + i)
                                         for i in range(accum)),
                             accum, optimizer, scheduler, scaler, tc.max_grad_norm, autocast)
        micro += accum
        step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        elapsed = time.perf_counter() - t_start
        done = step - start_step
        emit(Step(step=step, total_steps=total_steps, losses=res.losses, lr=res.lr,
                  samples_per_s=res.samples / dt, tokens_per_s=res.tokens / dt,
                  memory_mb=_memory_mb(device),
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
    duration = round(time.perf_counter() - t_start, 2)
    extra: dict[str, Any] = {}
    if initial_state is not None:
        extra = _baseline(cfg, student, initial_state, tmodel, data, batch_args, total_steps,
                          device, precision, autocast, evaluator, headline, teacher_metrics, after,
                          emit, stop)
    summary = run.update_summary(
        status="finished", steps=step, student_metrics=after,
        quality_retained=quality_retained(headline, teacher_metrics, after),
        duration_s=duration, **perf, **extra)
    artifacts.write_model_card(run, summary)
    emit(Finished(status="finished", run_dir=str(run.path), summary=summary))
    return RunResult("finished", run.path, summary)


def _teacher_continuations(cfg: RunConfig, teacher: Any, tok: Any, train_texts: list[str],
                           device: torch.device, autocast: Any, emit: EventSink, stop: Any,
                           run: Run | None) -> tuple[list[str], list[str]]:
    """Sequence-level distillation's data: the teacher continues the start of each text.
    Written once per run (and reused on resume, or from generation.reuse)."""
    g = cfg.generation
    if run is not None and (run.path / GENERATIONS_FILE).exists():
        prompts, conts = load_generations(run.path)
        emit(Log(f"Reusing the {len(prompts)} teacher continuations saved with this run."))
        return prompts, conts
    if g.reuse:
        prompts, conts = load_generations(g.reuse)
        emit(Log(f"Training on {len(prompts)} teacher continuations from '{g.reuse}'."))
        return prompts, conts
    texts = train_texts[:g.max_prompts] if g.max_prompts else train_texts
    prompts = prompts_from_texts(tok, texts, g.prompt_tokens)
    emit(Stage("generate", f"the teacher continues {len(prompts)} prompts"))
    conts = generate_continuations(
        teacher, tok, prompts, g, device, seed=cfg.training.seed, autocast=autocast, stop=stop,
        on_progress=lambda done, total: emit(Progress("generate", done, total, "texts")))
    emit(Log(f"The teacher wrote {len(conts)} continuations, for example: "
             f"\"{prompts[0]}[{conts[0].strip()[:80]}]\""))
    return prompts, conts


def _baseline(cfg: RunConfig, student: Any, initial_state: dict, tmodel: Any, data: Any,
              batch_args: dict, total_steps: int, device: torch.device, precision: str,
              autocast: Any, evaluator: Evaluator, headline: str, teacher_metrics: dict,
              after: dict, emit: EventSink, stop: Any) -> dict[str, Any]:
    emit(Stage("baseline", f"the same student, {total_steps} steps of plain training"))
    n, make = batch_maker(cfg.task, data.train_texts, data.train_labels,
                          source=f"'{data.source}'", **batch_args)
    result = train_baseline(cfg, student, initial_state, tmodel, n, make, total_steps,
                            device=device, precision=precision, autocast=autocast,
                            evaluate=evaluator.student_metrics, emit=emit, stop=stop)
    if result is None:
        return {}
    metrics = result.pop("metrics")
    result["quality_retained"] = quality_retained(headline, teacher_metrics, metrics)
    label = METRIC_LABELS.get(headline, headline)
    emit(Log(f"Plain training without a teacher, same student and steps: {label} "
             f"{metrics.get(headline, float('nan')):.4g}, against {after.get(headline, float('nan')):.4g} "
             "with distillation."))
    return {"baseline_metrics": metrics, "baseline": result}


def _check_stop(stop: Any) -> None:
    if stop.is_set():
        raise StoppedError("Stopped before training began.")


def _save_checkpoint(run: Run, distiller: Distiller, optimizer: Any, scheduler: Any, scaler: Any,
                     step: int, micro: int, tc: Any, emit: EventSink) -> None:
    path = checkpoints.save(run.checkpoints_dir, step, distiller, optimizer, scheduler, scaler,
                            keep=tc.keep_checkpoints)
    emit(Checkpoint(step=step, path=str(path)))
