"""Setting a run up: data, teacher (prepared if its task needs it), student, the objective,
batches, optimizer, evaluator; everything built before the first step, in one function.

The order of the random draws here (seeding, derived-student initialisation) is part of what
makes a seeded run repeatable: keep it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch

from kdstudio.core.cached_teacher import is_outline, teacher_outline
from kdstudio.core.compare import PinnedInputs
from kdstudio.core.config import RunConfig
from kdstudio.core.data import BatchOrder, TextData, load_text_data, validation_wanted
from kdstudio.core.device import teacher_dtype
from kdstudio.core.distiller import Distiller
from kdstudio.core.errors import StoppedError
from kdstudio.core.evaluation import EvalSet, Evaluator
from kdstudio.core.events import EventSink, Log, Progress, Stage
from kdstudio.core.lm import (
    GENERATIONS_FILE,
    generate_continuations,
    load_generations,
    prompts_from_texts,
)
from kdstudio.core.loop import Optimizer, run_optimizer
from kdstudio.core.models import (
    check_compatibility,
    load_model,
    require_compatible,
    resolve_model_source,
)
from kdstudio.core.runs import Run
from kdstudio.core.student_prep import derived_student, derived_words
from kdstudio.core.tasks import Task, get_task
from kdstudio.core.teacher_prep import prepared_teacher
from kdstudio.core.weight_checks import check_teacher_weights
from kdstudio.core import teacher_source as use


@dataclass
class RunContext:
    """Where and how a run computes, and how it reports: what every stage needs."""

    device: torch.device
    precision: str
    autocast: Any
    emit: EventSink
    stop: Any
    group: Any = None       # distributed.ProcessGroup of a multi-process run; None: one process


# Setup's parts mirror the config's sections, and take keywords only: twenty-odd fields by
# position were one slip away from the student's tokenizer standing where the teacher's should.

@dataclass(kw_only=True)
class Models:
    """The teacher and the student on the run's device, and how their tokenizers relate."""

    teacher: Any                 # models.LoadedModel as loaded: model, tokenizer, source
    tmodel: torch.nn.Module      # the teacher's model on the device, frozen
    student: torch.nn.Module
    student_tok: Any             # the teacher's own tokenizer when the vocabularies agree
    student_desc: str            # how the run names the student (a name, or how it was derived)
    kept: list[int] | None       # the teacher layers a derived student kept
    same_tok: bool
    initial_state: dict | None   # the student's starting weights, for the plain baseline


@dataclass(kw_only=True)
class Data:
    """The rows a run trains on, and the batches made of them in a seeded order."""

    text: TextData               # the loaded rows, their source and labels (training and eval)
    batch_args: dict             # the task's batch_maker arguments besides the rows
    n_train: int
    make_batch: Any              # loop.MakeBatch: row indices to a Batch
    order: BatchOrder            # dist_share.ShardOrder of it in a multi-process run
    generations: tuple[list[str], list[str]] | None  # sequence-level: (prompts, continuations)


@dataclass(kw_only=True)
class Training:
    """The objective and what steps it: the distiller, its optimizer, how many steps."""

    distiller: Distiller
    opt: Optimizer
    total_steps: int


@dataclass(kw_only=True)
class Evaluation:
    """What measures the student: the evaluator, the metric that heads the figures, the
    pinned inputs whose answers each evaluation shows."""

    evaluator: Evaluator
    headline: str
    pinned: PinnedInputs


@dataclass(kw_only=True)
class Targets:
    """Where the loss reads the teacher's answers from."""

    plan: Any                    # teacher_source.TeacherPlan: live or cache, and why
    cache: Any = None            # the TeacherCache the run reads, if any
    weights: str = "loaded"      # the teacher's weights: TEACHER_LOADED, _LET_GO or _NEVER

    def record(self) -> dict[str, Any]:
        """summary.json's teacher_targets, kept so that a resume does the same, and whether
        the run held the teacher's weights (Compare says what needs them)."""
        out: dict[str, Any] = {"mode": self.plan.mode, "why": self.plan.line,
                               "teacher_weights": self.weights}
        if self.cache is not None:
            out.update(key=self.cache.key, k=self.cache.k)
        return out


# Targets.weights: the run held the teacher's weights throughout; read them once (for its cache
# pass, or to derive the student), then let them go; never read them (a cache covered the run,
# or a server answered).
TEACHER_LOADED, TEACHER_LET_GO, TEACHER_NEVER = "loaded", "let go after its pass", "never loaded"


@dataclass(kw_only=True)
class Setup:
    """Everything built before the first step, in named parts."""

    task: Task
    models: Models
    data: Data
    targets: Targets
    training: Training
    evaluation: Evaluation


def setup_run(cfg: RunConfig, ctx: RunContext, run: Run | None) -> Setup:
    """Load data and models, check they fit, build the objective, batches and optimizer.
    The order of the random draws here is part of a seeded run's repeatability: keep it."""
    tc, task, emit, stop, device = cfg.training, get_task(cfg.task), ctx.emit, ctx.stop, ctx.device
    int8 = cfg.teacher.dtype == "int8"
    if int8:  # before anything loads
        _check_int8(task, device)
    torch.manual_seed(tc.seed)
    random.seed(tc.seed)

    emit(Stage("load data", cfg.data.dataset))
    multi = ctx.group is not None and ctx.group.multi
    data = load_text_data(cfg.data, task, seed=tc.seed, validation=validation_wanted(tc, multi),
                          validation_cap=cfg.evaluation.max_samples)
    emit(Log(f"Data: {len(data.train_texts)} training and {len(data.eval_texts)} evaluation rows "
             f"from '{data.source}' (text column '{data.text_column}'"
             + (f", label column '{data.label_column}' with {len(data.label_names)} classes)" if data.label_names else ")")))
    check_stop(stop)

    emit(Stage("load teacher", cfg.teacher.name))
    t_source = resolve_model_source(cfg.teacher.name, revision=cfg.teacher.revision, on_event=emit,
                                    stop=stop, role="teacher")
    covered = _covering(cfg, task, t_source, data, ctx, run)
    # A served teacher answers from its server, through the cache, in the steps and the
    # measurements alike: here it is an outline (its config and tokenizer) only.
    served = bool(cfg.teacher.endpoint) and not use.cache_only_blocker(cfg, task)
    outline = covered is not None or served
    weights = TEACHER_NEVER if outline else TEACHER_LOADED
    if outline:  # the cache covers the run, or the server answers: the weights stay unread
        teacher = teacher_outline(t_source, task, trust_remote_code=cfg.teacher.trust_remote_code)
    else:
        teacher = load_model(t_source, task, trust_remote_code=cfg.teacher.trust_remote_code,
                             label_names=data.label_names, role="teacher",
                             int8_device=device if int8 else None)
        check_teacher_weights(teacher.model, cfg.teacher.name)  # NaN weights: refused first
    if cfg.teacher.trust_remote_code:
        emit(Log("teacher.trust_remote_code is on: the teacher's own Python code runs.", "warning"))
    teacher = prepared_teacher(cfg, task, teacher, data, ctx)
    check_stop(stop)

    emit(Stage("load student", cfg.student.name or derived_words(cfg.student)))
    kept: list[int] | None = None
    if cfg.student.name:
        s_source = resolve_model_source(cfg.student.name, revision=cfg.student.revision,
                                        on_event=emit, stop=stop, role="student")
        loaded = load_model(s_source, task, trust_remote_code=cfg.student.trust_remote_code,
                            label_names=data.label_names, role="student")
        student, student_tok = loaded.model.float(), loaded.tokenizer
        student_desc = cfg.student.name
    else:
        # A derived student is made of the teacher's weights: read for that, then let go.
        source = teacher if not outline else load_model(
            t_source, task, trust_remote_code=cfg.teacher.trust_remote_code,
            label_names=data.label_names, role="teacher")
        student, student_tok, kept, student_desc = derived_student(cfg, source, data, ctx)
        del source
        weights = TEACHER_LET_GO if outline else TEACHER_LOADED
    # 8-bit weights were placed on the device as they loaded, and stay 8-bit.
    t_dtype = teacher_dtype(cfg.teacher.dtype, device, ctx.precision)
    tmodel = teacher.model if int8 else teacher.model.to(dtype=t_dtype) if is_outline(
        teacher.model) else teacher.model.to(device=device, dtype=t_dtype)
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
                          vocab_size=comp.vocab_size, chunk=tc.logit_chunk).to(device)
    if tc.gradient_checkpointing:
        if not getattr(student, "supports_gradient_checkpointing", False):
            emit(Log(f"training.gradient_checkpointing is on, but {type(student).__name__} "
                     "does not support it; the student keeps its activations.", "warning"))
        else:
            enable_checkpointing(student)
            emit(Log("Gradient checkpointing: the student's activations are recomputed in the "
                     "backward pass (less memory, about a third more compute)."))
    # The plain-training baseline starts from the very weights the distilled student starts from.
    initial_state = ({k: v.detach().clone() for k, v in student.state_dict().items()}
                     if cfg.evaluation.baseline else None)

    dc, m = cfg.data, cfg.method
    batch_args = dict(student_tok=student_tok, teacher_tok=teacher.tokenizer, same_tok=same_tok,
                      max_length=dc.max_length, pack=dc.pack, device=device)
    generations: tuple[list[str], list[str]] | None = None
    if task.generation_applies and m.sequence_level:
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

    plan, cache = _teacher_targets(cfg, ctx, run, task, teacher, tmodel, same_tok, make_batch,
                                   comp.vocab_size, n_train, covered,
                                   student_params=sum(p.numel() for p in student.parameters()))
    distiller.cache = cache

    group = ctx.group
    world = group.world_size if group is not None else 1
    bs = min(tc.batch_size * world, n_train)
    order: Any = BatchOrder(n_train, bs, tc.seed)
    if world > 1:  # the global micro-batch's order, of which each process takes its slice
        from kdstudio.core.dist_share import ShardOrder

        order = ShardOrder(order, group.rank, world)
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
                          comp.vocab_size, project=distiller.project_embedding,
                          group=group if world > 1 else None)
    headline, _ = task.headline(data.eval_labels is not None)
    if not outline:
        pinned = PinnedInputs(cfg, tmodel, teacher.tokenizer, student, student_tok, data, device)
    else:
        known = (covered.figures.get("pinned") or {}) if covered is not None else {}
        pinned = PinnedInputs(cfg, None, teacher.tokenizer, student, student_tok, data, device,
                              teacher_answers=[known.get(x, SERVED_PINNED if served else
                                                         NOT_LOADED)
                                               for x in cfg.evaluation.pinned_inputs])
    if served and cache is not None:  # its answers and figures at the evaluation positions too
        from kdstudio.core.teacher_serve import served_eval_answers

        use_cached_answers(evaluator, served_eval_answers(cfg, ctx, task, teacher, tmodel,
                                                          evaluator, cache))
    if cache is not None and not cfg.teacher.endpoint and \
            not use.cache_only_blocker(cfg, task):
        if covered is None:  # the teacher's pass is done: its answers there, then let it go
            covered = use.write_eval_answers(cfg, task, evaluator, teacher, tmodel, cache,
                                             dict(zip(pinned.inputs, getattr(
                                                 pinned, "teacher_answers", []))), ctx)
            teacher = teacher_outline(t_source, task,
                                      trust_remote_code=cfg.teacher.trust_remote_code)
            tmodel = teacher.model.to(dtype=t_dtype)
            distiller.teacher = [tmodel]
            evaluator.teacher = tmodel
            weights = TEACHER_LET_GO
            emit(Log("Teacher: its weights are let go after its pass; the steps and the "
                     "measurements read its cached answers and figures."))
        use_cached_answers(evaluator, covered)
    return Setup(
        task=task,
        models=Models(teacher=teacher, tmodel=tmodel, student=student, student_tok=student_tok,
                      student_desc=student_desc, kept=kept, same_tok=same_tok,
                      initial_state=initial_state),
        data=Data(text=data, batch_args=batch_args, n_train=n_train, make_batch=make_batch,
                  order=order, generations=generations),
        targets=Targets(plan=plan, cache=cache, weights=weights),
        training=Training(distiller=distiller, opt=opt, total_steps=total_steps),
        evaluation=Evaluation(evaluator=evaluator, headline=headline, pinned=pinned))


NOT_LOADED = "(the teacher is not loaded in a run that reads its cache)"
# A served teacher is not asked for generations; the Compare page loads it for those.
SERVED_PINNED = "(the served teacher is not asked for answers to the pinned inputs)"


def _covering(cfg: RunConfig, task: Task, t_source: str, data: Any, ctx: RunContext,
              run: Run | None = None) -> Any:
    """teacher_source.Covered when the teacher caches cover the whole run (training and the
    evaluation's positions), so its weights need not load; else None."""
    if cfg.teacher.endpoint or use.cache_only_blocker(cfg, task) or cfg.teacher.cache == "never":
        return None
    recorded = (run.summary().get("teacher_targets") or {}) if run is not None else {}
    if recorded.get("mode") == use.LIVE:  # a resumed run keeps the live teacher it started with
        return None
    multi = ctx.group is not None and ctx.group.multi
    if multi:  # every process must take the same path; one process is the case measured
        return None
    dtype = teacher_dtype(cfg.teacher.dtype, ctx.device, ctx.precision)
    covered = use.covering_before_load(cfg, task, t_source, data, dtype)
    if covered is not None:
        ctx.emit(Log(f"Teacher: not loaded; its cached answers cover this run's training and "
                     f"evaluation (top {covered.cache.k}), and its figures come from the pass "
                     "that wrote them."))
    return covered


def use_cached_answers(evaluator: Evaluator, covered: Any) -> None:
    """The evaluator measures the student against the teacher's cached answers and takes the
    teacher's figures from the pass that wrote them."""
    from kdstudio.core.cached_teacher import CachedAnswers

    evaluator.teacher_answers = CachedAnswers(covered.answers, evaluator.teacher_batches,
                                              evaluator.eval_set.batch_size)
    evaluator._teacher_metrics = dict(covered.figures["metrics"])
    evaluator.teacher_figures = covered.figures


def _teacher_targets(cfg: RunConfig, ctx: RunContext, run: Run | None, task: Task, teacher: Any,
                     tmodel: Any, same_tok: bool, make_batch: Any, vocab_size: int,
                     n_train: int, covered: Any = None, student_params: int = 0
                     ) -> tuple[Any, Any]:
    """Live teacher or teacher cache (found, or written now by one teacher pass), and why.
    A resumed run keeps what it started with."""
    from kdstudio.core.teacher_cache.store import TeacherCache, find_cache

    if covered is not None:
        plan = use.TeacherPlan(use.CACHE, f"reads the teacher's top-{covered.cache.k} answers "
                                          "saved on disk; its weights are not loaded")
        ctx.emit(Log(f"Teacher cache found: {use.cache_summary(covered.cache)}."))
        ctx.emit(Log(plan.line))
        return plan, covered.cache
    rows = getattr(make_batch, "cache_rows", None)
    recorded = (run.summary().get("teacher_targets") or {}) if run is not None else {}
    plan = use.plan_teacher(cfg, exists=True, same_tokenizer=same_tok and rows is not None)
    if cfg.teacher.endpoint and plan.mode != use.NONE:  # served: always through the cache
        from kdstudio.core.teacher_serve import served_targets

        return served_targets(cfg, ctx, teacher.tokenizer, make_batch,
                              vocab_size or len(teacher.tokenizer), n_train, plan)
    if plan.mode != use.CACHE:  # live or unused whatever is on disk
        ctx.emit(Log(plan.line))
        return plan, None
    if recorded.get("mode") == use.LIVE:
        plan = use.TeacherPlan(use.LIVE, "as when this run started: a resumed run keeps its "
                                         "teacher's answers the same")
        ctx.emit(Log(plan.line))
        return plan, None
    vocab = vocab_size or tmodel.get_output_embeddings().weight.shape[0]
    if cfg.teacher.cache_k:
        k = min(int(cfg.teacher.cache_k), vocab)
    else:
        k, kept = use.choose_k(tmodel, task, make_batch, n_train, vocab, cfg.method.temperature,
                               batch_size=cfg.training.batch_size, autocast=ctx.autocast)
        ctx.emit(Log(f"Teacher cache: k = {k}, the smallest that keeps 90% of the teacher's "
                     f"probability at temperature {cfg.method.temperature:g} (it keeps "
                     f"{100 * kept:.0f}% on the first batch)."
                     if kept >= use.K_COVERAGE or k == vocab else
                     f"Teacher cache: k = {k} keeps {100 * kept:.0f}% of the teacher's "
                     f"probability at temperature {cfg.method.temperature:g}; the rest is "
                     f"kept as one remaining mass (the default k stops at {use.K_BYTES} bytes "
                     "per position; set teacher.cache_k to keep more)."))
    parts = use.key_parts(cfg, teacher.source, teacher.tokenizer, rows,
                          next(tmodel.parameters()).dtype, k)
    cache = find_cache(parts)
    group = ctx.group
    if group is not None and group.multi:
        # The main process decides, and writes a missing cache once; the others wait, then read it.
        cache = find_cache(parts) if group.broadcast(cache is not None) else None
    pays = None
    if cfg.teacher.cache == "auto" and cache is None:  # weighed now the models, k, rows are known
        tc = cfg.training
        epochs = tc.max_steps * tc.batch_size * tc.grad_accum_steps / max(n_train, 1) \
            if tc.max_steps else tc.epochs
        t_bytes = sum(p.numel() * p.element_size() for p in tmodel.parameters())
        # Loaded, the teacher fits; but with less free GPU memory left than its own weights,
        # its activations at every step crowd the student's, and a cached run lets it go.
        # Several processes must decide alike, so only sizes decide there.
        fits = ctx.device.type != "cuda" or (ctx.group is not None and ctx.group.multi) or \
            torch.cuda.mem_get_info(ctx.device)[0] >= t_bytes
        pays = use.cache_pays(readers=cfg.teacher.cache_readers, epochs=epochs,
                              teacher_params=sum(p.numel() for p in tmodel.parameters()),
                              student_params=student_params, k=k, vocab=vocab,
                              fits_beside=fits)
    plan = use.plan_teacher(cfg, exists=cache is not None, pays=pays)
    if recorded.get("mode") == use.CACHE and plan.mode != use.CACHE:
        plan = use.TeacherPlan(use.CACHE, "as when this run started: a resumed run keeps "
                                          "reading the teacher cache", build=True,
                               live_share=plan.live_share)
    if plan.mode != use.CACHE:
        ctx.emit(Log(plan.line))
        return plan, None
    multi = group is not None and group.multi
    if cache is None and multi and not group.is_main:
        # The main process writes it, then says whether it finished or was stopped.
        if group.broadcast(None) == "stopped":
            raise StoppedError("Stopped while the teacher cache was being written.")
        cache = find_cache(parts)
        if cache is None:
            from kdstudio.core.errors import RunError

            raise RunError(f"Process {group.rank} cannot find the teacher cache the main process "
                           "wrote.", hint="Every machine must see the same KD Studio home "
                                          "(KDSTUDIO_HOME on a shared file system).")
    elif cache is None:
        ctx.emit(Stage("teacher cache", f"one teacher pass writes its top-{k} answers for "
                                        f"{n_train} training rows"))
        try:
            path = use.write_cache(parts, rows, make_batch, tmodel, task, vocab,
                                   batch_size=max(1, cfg.training.batch_size),
                                   autocast=ctx.autocast, emit=ctx.emit, stop=ctx.stop)
        except StoppedError:
            if multi:  # the other processes wait for the cache: they stop too
                group.broadcast("stopped")
            raise
        cache = TeacherCache(path)
        ctx.emit(Log(f"Teacher cache written: {use.cache_summary(cache)}."))
        if multi:
            group.broadcast("written")
    else:
        ctx.emit(Log(f"Teacher cache found: {use.cache_summary(cache)}."))
    ctx.emit(Log(plan.line))
    return plan, cache


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


def _check_int8(task: Task, device: torch.device) -> None:
    from kdstudio.core.device import int8_problem
    from kdstudio.core.errors import ConfigError

    problem = int8_problem(device)
    if problem:
        raise ConfigError(f"teacher.dtype is 'int8', but {problem}.",
                          hint="Use 'bfloat16' (half the memory of float32, on any GPU) or "
                               "'auto'.")
    if task.has_task_head:
        raise ConfigError(f"teacher.dtype 'int8' is for teachers used as they are, but a "
                          f"{task.name} teacher may be fine-tuned first, which 8-bit weights "
                          "cannot be.", hint="Use 'bfloat16' for this task.")


def enable_checkpointing(model: Any) -> None:
    """Recompute the model's activations in the backward pass (transformers 5 names it
    activation checkpointing; earlier versions, gradient checkpointing)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def check_stop(stop: Any) -> None:
    """Raise StoppedError when a stop was asked for. In a multi-process run ``stop`` is a
    dist_control.SetupStop: its ``agree()`` is the stop every process agrees on (a collective,
    made by every process at the same points), so a stop file written during setup ends
    every process here, not only the main one."""
    agree = getattr(stop, "agree", None)
    if agree() if agree is not None else stop.is_set():
        raise StoppedError("Stopped before training began.")
