"""A distillation run: run_training (a new run) and resume_training (an existing one).

Read it top to bottom: setup_run (device, data, teacher, student, compatibility, objective,
batches, optimizer), measure the starting point, then the steps through loop.train_steps
(nanoGPT's order: learning rate, accumulate micro-batches, clip, step) with logging,
evaluation and checkpoints after each, then the final measurement. It reports only through
events.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdstudio.core import artifacts, checkpoints
from kdstudio.core.compare import PinnedInputs
from kdstudio.core.config import RunConfig, load_config
from kdstudio.core.data import BatchOrder, load_text_data
from kdstudio.core.device import (
    autocast_for,
    device_label,
    peak_memory_mb,
    resolve_device,
    resolve_precision,
    teacher_dtype,
)
from kdstudio.core.distiller import Distiller
from kdstudio.core.errors import KDStudioError, RunError, StoppedError
from kdstudio.core.evaluation import (
    METRIC_LABELS,
    EvalSet,
    Evaluator,
    quality_retained,
)
from kdstudio.core.events import (
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
from kdstudio.core.lm import (
    GENERATIONS_FILE,
    generate_continuations,
    load_generations,
    on_policy_batch,
    prompts_from_texts,
    save_generations,
)
from kdstudio.core.loop import (
    Optimizer,
    StepResult,
    run_optimizer,
    train_baseline,
    train_steps,
)
from kdstudio.core.models import (
    check_compatibility,
    count_params,
    derive_student,
    load_model,
    require_compatible,
    resolve_model_source,
)
from kdstudio.core.objective import Batch
from kdstudio.core.runs import Run, create_run
from kdstudio.core.tasks import Task, get_task


@dataclass
class RunResult:
    status: str  # "finished" or "stopped"
    run_dir: Path
    summary: dict[str, Any]


def run_training(config: RunConfig, on_event: EventSink | None = None, stop: Any = None, *,
                 resume: str | Path | None = None) -> RunResult:
    """Distill config.teacher into a student; returns when finished or stopped.

    ``stop`` is anything with ``is_set()`` (a threading.Event); it is checked every step and
    leaves a checkpoint behind. ``resume`` (a run folder) continues that run instead, as
    resume_training does. Errors are reported as a Failed event and then raised.
    """
    if resume is not None:
        return resume_training(resume, on_event, stop)
    return _guarded(lambda r: config.validate(), on_event, stop)


def resume_training(run_dir: str | Path, on_event: EventSink | None = None,
                    stop: Any = None) -> RunResult:
    """Continue a stopped or interrupted run from its latest checkpoint, in its own folder."""
    def open_existing(runs: "_RunHolder") -> RunConfig:
        r = Run(Path(run_dir))
        if not r.config_path.exists():
            raise RunError(f"'{run_dir}' is not a run folder (it has no config.toml).")
        config = load_config(r.config_path)
        if r.latest_checkpoint() is None:
            raise RunError(f"The run '{r.path.name}' has no checkpoint to resume from.",
                           hint="Start it again with 'kdstudio run'.")
        runs.open(r)
        r.update_summary(status="running", pid=os.getpid())
        return config
    return _guarded(open_existing, on_event, stop)


class _RunHolder:
    """The run folder once it exists; events from before it are kept and written then."""

    def __init__(self, on_event: EventSink):
        self.run: Run | None = None
        self.pending: list[Event] = []
        self.on_event = on_event

    def emit(self, event: Event) -> None:
        if self.run is not None:
            self.run.append_event(event.to_dict())
        else:
            self.pending.append(event)
        self.on_event(event)

    def open(self, run: Run) -> None:
        self.run = run
        for e in self.pending:
            run.append_event(e.to_dict())
        self.pending.clear()


def _guarded(start: Any, on_event: EventSink | None, stop: Any) -> RunResult:
    """Run start (which returns the config) then the training, turning errors into events."""
    holder = _RunHolder(on_event or ignore)
    stop = stop or threading.Event()
    emit = holder.emit
    try:
        config = start(holder)
        return _train(config, emit, stop, holder)
    except StoppedError as exc:
        run = holder.run
        if run is not None:
            run.update_summary(status="stopped")
        emit(Finished(status="stopped", run_dir=str(run.path) if run else "", summary={"message": exc.message}))
        return RunResult("stopped", run.path if run else Path(), run.summary() if run else {})
    except KDStudioError as exc:
        _fail(emit, holder.run, type(exc).__name__, exc.title, str(exc))
        raise
    except torch.cuda.OutOfMemoryError:
        _fail(emit, holder.run, "OutOfMemoryError", "Out of GPU memory",
              "The GPU ran out of memory. Lower training.batch_size (and raise "
              "training.grad_accum_steps to keep the effective batch), lower data.max_length, "
              "or hold the teacher in half precision (teacher.dtype).")
        raise
    except Exception as exc:
        _fail(emit, holder.run, type(exc).__name__, "Unexpected error",
              f"The run stopped on an unexpected error: {type(exc).__name__}: {exc}")
        raise


def _fail(emit: EventSink, run: Run | None, kind: str, title: str, message: str) -> None:
    if run is not None:
        run.update_summary(status="failed", error=message)
    emit(Failed(error_type=kind, title=title, message=message,
                run_dir=str(run.path) if run else ""))


@dataclass
class RunContext:
    """Where and how a run computes, and how it reports: what every stage needs."""

    device: torch.device
    precision: str
    autocast: Any
    emit: EventSink
    stop: Any


@dataclass
class Setup:
    """Everything built before the first step: data, models, objective, batches, optimizer."""

    task: Task
    data: Any
    teacher: Any            # LoadedModel (model, tokenizer, source)
    tmodel: torch.nn.Module
    student: torch.nn.Module
    student_tok: Any
    student_desc: str
    kept: list[int] | None
    same_tok: bool
    distiller: Distiller
    batch_args: dict
    n_train: int
    make_batch: Any
    order: BatchOrder
    total_steps: int
    opt: Optimizer
    evaluator: Evaluator
    headline: str
    pinned: PinnedInputs
    generations: tuple[list[str], list[str]] | None
    initial_state: dict | None


def setup_run(cfg: RunConfig, ctx: RunContext, run: Run | None) -> Setup:
    """Load data and models, check they fit, build the objective, batches and optimizer.

    The order of the random draws here (seeding, derived-student initialisation) is part of
    what makes a seeded run repeatable: keep it.
    """
    tc, task, emit, stop, device = cfg.training, get_task(cfg.task), ctx.emit, ctx.stop, ctx.device
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)

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
    teacher = task.prepare_teacher(cfg, teacher, data, ctx)
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
    tmodel = teacher.model.to(device=device, dtype=teacher_dtype(cfg.teacher.dtype, device, ctx.precision))
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

    dc, m = cfg.data, cfg.method
    batch_args = dict(student_tok=student_tok, teacher_tok=teacher.tokenizer, same_tok=same_tok,
                      max_length=dc.max_length, pack=dc.pack, device=device)
    generations: tuple[list[str], list[str]] | None = None
    if task.generative and m.sequence_level:
        generations = _teacher_continuations(cfg, tmodel, teacher.tokenizer, data.train_texts,
                                             device, ctx.autocast, emit, stop, run)
        prompts, continuations = generations
        texts = [p + c for p, c in zip(prompts, continuations)]
        emit(Stage("tokenize", f"{len(texts)} texts written by the teacher"))
        n_train, make_batch = task.batch_maker(texts, None, prompt_chars=[len(p) for p in prompts],
                                               source="the teacher's continuations", **batch_args)
    else:
        emit(Stage("tokenize", f"{len(data.train_texts)} texts"))
        n_train, make_batch = task.batch_maker(data.train_texts, data.train_labels,
                                               source=f"'{data.source}'", **batch_args)

    bs = min(tc.batch_size, n_train)
    order = BatchOrder(n_train, bs, tc.seed)
    if tc.max_steps:
        total_steps = tc.max_steps
    else:
        total_steps = max(1, math.ceil(tc.epochs * order.per_epoch / tc.grad_accum_steps))
    optimizer, scheduler, scaler = run_optimizer(distiller, tc, total_steps, device, ctx.precision)
    opt = Optimizer(optimizer, scheduler, scaler, tc.max_grad_norm, ctx.autocast)

    evaluator = Evaluator(task, EvalSet(task, data.eval_texts, data.eval_labels,
                                        max_samples=cfg.evaluation.max_samples,
                                        max_length=dc.max_length, pack=dc.pack,
                                        batch_size=cfg.evaluation.batch_size),
                          tmodel, teacher.tokenizer, student_tok, device, ctx.autocast,
                          comp.vocab_size, project=distiller.project_embedding)
    headline, _ = task.headline(data.eval_labels is not None)
    pinned = PinnedInputs(cfg, tmodel, teacher.tokenizer, student, student_tok, data, device)
    return Setup(task, data, teacher, tmodel, student, student_tok, student_desc, kept, same_tok,
                 distiller, batch_args, n_train, make_batch, order, total_steps, opt, evaluator,
                 headline, pinned, generations, initial_state)


def _train(cfg: RunConfig, emit: EventSink, stop: Any, runs: _RunHolder) -> RunResult:
    tc = cfg.training
    device = resolve_device(tc.device)
    precision = resolve_precision(tc.precision, device)
    ctx = RunContext(device, precision, autocast_for(device, precision), emit, stop)
    su = setup_run(cfg, ctx, runs.run)
    task, student, distiller, evaluator = su.task, su.student, su.distiller, su.evaluator
    t_source = su.teacher.source

    def maybe_on_policy(batch: Batch, micro: int) -> Batch:
        """GKD's lambda: this share of the batches is replaced by the student's own samples.
        The draw depends only on the seed and the micro-batch number, so a resumed run makes
        the same choices as an uninterrupted one."""
        share = cfg.method.on_policy_share
        if share <= 0 or (share < 1 and random.Random(tc.seed * 1_000_003 + micro).random() >= share):
            return batch
        return on_policy_batch(student, su.student_tok,
                               None if su.same_tok else su.teacher.tokenizer, batch,
                               cfg.generation, cfg.data.max_length, device,
                               seed=tc.seed + micro, autocast=ctx.autocast)

    # -- the run folder, or the checkpoint we resume from ---------------------------------------
    run = runs.run
    start_step = 0
    if run is None:
        name = cfg.name or f"{task.name}-{Path(str(cfg.teacher.name)).name}"
        run = create_run(cfg.to_toml(), name=name, task=task.name, teacher=cfg.teacher.name,
                         student=su.student_desc)
        runs.open(run)
        if su.generations is not None:
            save_generations(run.path / GENERATIONS_FILE, *su.generations)
    else:
        cp = run.latest_checkpoint()
        start_step = checkpoints.load(cp, distiller, su.opt.optimizer, su.opt.scheduler,
                                      su.opt.scaler)
        emit(Log(f"Resumed from {cp.name}."))
    t_params, s_params = count_params(su.tmodel), count_params(student)
    total_steps = su.total_steps
    run.update_summary(status="running", device=str(device), precision=precision,
                       teacher_params=t_params, student_params=s_params, kept_layers=su.kept,
                       total_steps=total_steps, headline_metric=su.headline,
                       label_names=su.data.label_names, teacher_source=t_source)
    emit(Started(run_dir=str(run.path), task=task.name, device=device_label(device),
                 precision=precision, teacher=cfg.teacher.name, student=su.student_desc,
                 teacher_params=t_params, student_params=s_params, total_steps=total_steps,
                 start_step=start_step, train_samples=su.n_train,
                 eval_samples=len(evaluator.eval_set.texts)))

    # -- where we start from -------------------------------------------------------------------
    emit(Stage("evaluate", "teacher and student before distillation"))
    teacher_metrics = evaluator.teacher_metrics()
    if start_step == 0:
        before = evaluator.student_metrics(student)
        run.update_summary(teacher_metrics=teacher_metrics, student_metrics_before=before)
        emit(Eval(step=0, metrics=before, teacher_metrics=teacher_metrics, samples=su.pinned()))
    _check_stop(stop)

    # -- the loop: lr, accumulate, clip, step (train_steps), then log, evaluate, checkpoint ------
    accum = tc.grad_accum_steps
    t_start = time.perf_counter()
    last_saved = start_step

    def after_step(r: StepResult) -> None:
        nonlocal last_saved
        step = r.step
        elapsed = time.perf_counter() - t_start
        emit(Step(step=step, total_steps=total_steps, losses=r.losses, lr=r.lr,
                  samples_per_s=r.samples / r.seconds, tokens_per_s=r.tokens / r.seconds,
                  memory_mb=peak_memory_mb(device), elapsed_s=elapsed,
                  eta_s=elapsed / (step - start_step) * (total_steps - step)))
        if tc.eval_every and step % tc.eval_every == 0 and step < total_steps:
            emit(Eval(step=step, metrics=evaluator.student_metrics(student), samples=su.pinned()))
        if tc.save_every and step % tc.save_every == 0 and step < total_steps:
            _save_checkpoint(run, distiller, su.opt, step, tc, emit)
            last_saved = step

    step, stopped = train_steps(
        distiller, lambda i: maybe_on_policy(su.make_batch(su.order.indices(i)), i), su.opt,
        start_step=start_step, total_steps=total_steps, accum=accum, stop=stop,
        on_step=after_step)

    # -- the end: checkpoint, final measurement, the student folder, the card -------------------
    if step > last_saved or not run.checkpoints():
        _save_checkpoint(run, distiller, su.opt, step, tc, emit)
    emit(Stage("save student", str(run.student_dir)))
    artifacts.save_student(run.student_dir, student, su.student_tok, task, t_source)
    if stopped:
        summary = run.update_summary(status="stopped", steps=step)
        emit(Finished(status="stopped", run_dir=str(run.path), summary=summary))
        return RunResult("stopped", run.path, summary)

    emit(Stage("evaluate", "final measurement of teacher and student"))
    after = evaluator.student_metrics(student)
    emit(Eval(step=step, metrics=after, teacher_metrics=teacher_metrics, samples=su.pinned()))
    perf = artifacts.measure(evaluator, su.tmodel, student, su.teacher.tokenizer, su.student_tok,
                             t_source, run.student_dir, cfg.evaluation.latency_repeats)
    duration = round(time.perf_counter() - t_start, 2)
    extra: dict[str, Any] = {}
    if su.initial_state is not None:
        extra = _baseline(cfg, su, ctx, teacher_metrics, after)
    summary = run.update_summary(
        status="finished", steps=step, student_metrics=after,
        quality_retained=quality_retained(su.headline, teacher_metrics, after),
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


def _baseline(cfg: RunConfig, su: Setup, ctx: RunContext, teacher_metrics: dict,
              after: dict) -> dict[str, Any]:
    total_steps, emit = su.total_steps, ctx.emit
    emit(Stage("baseline", f"the same student, {total_steps} steps of plain training"))
    n, make = su.task.batch_maker(su.data.train_texts, su.data.train_labels,
                                  source=f"'{su.data.source}'", **su.batch_args)
    result = train_baseline(cfg, su.task, su.student, su.initial_state, su.tmodel, n, make,
                            total_steps, device=ctx.device, precision=ctx.precision,
                            autocast=ctx.autocast, evaluate=su.evaluator.student_metrics,
                            emit=emit, stop=ctx.stop)
    if result is None:
        return {}
    metrics = result.pop("metrics")
    result["quality_retained"] = quality_retained(su.headline, teacher_metrics, metrics)
    label = METRIC_LABELS.get(su.headline, su.headline)
    emit(Log(f"Plain training without a teacher, same student and steps: {label} "
             f"{metrics.get(su.headline, float('nan')):.4g}, against {after.get(su.headline, float('nan')):.4g} "
             "with distillation."))
    return {"baseline_metrics": metrics, "baseline": result}


def _check_stop(stop: Any) -> None:
    if stop.is_set():
        raise StoppedError("Stopped before training began.")


def _save_checkpoint(run: Run, distiller: Distiller, opt: Optimizer, step: int, tc: Any,
                     emit: EventSink) -> None:
    path = checkpoints.save(run.checkpoints_dir, step, distiller, opt.optimizer, opt.scheduler,
                            opt.scaler, keep=tc.keep_checkpoints)
    emit(Checkpoint(step=step, path=str(path)))
