"""The teacher cache in runs: when a run reads it and why, writing it once, reusing it across
runs, resumes and the students of a sweep, and stopping while it is written."""

import threading

import pytest

from kdstudio.core import events as ev
from kdstudio.core.models import load_tokenizer
from kdstudio.core.runs import Run
from kdstudio.core.sweep.queue import run_sweep
from kdstudio.core.sweep.spec import derived
from kdstudio.core.sweep.store import Sweep
from kdstudio.core.teacher_cache import cache_root, list_caches
from kdstudio.core.teacher_source import CACHE, LIVE, NONE, plan_teacher
from kdstudio.core.trainer import resume_training, run_training
from tests.conftest import tiny_config
from tests.core.test_trainer import Recorder


def lm_config(tiny, cache="auto", **sections):
    cfg = tiny_config("causal-lm", tiny["gpt2"], evaluation={"max_samples": 16, "latency_repeats": 1},
                      **{"training": {"max_steps": 3, "eval_every": 0}, **sections})
    cfg.method.hard_label_weight = 0.5
    cfg.teacher.cache = cache
    return cfg


def first_losses(rec):
    return rec.of(ev.Step)[0].losses


def logs(rec):
    return [e.message for e in rec.of(ev.Log)]


# -- the decision, from the config alone -------------------------------------------------------

def test_the_plan_says_live_or_cache_and_why(tiny):
    cfg = lm_config(tiny)
    auto = plan_teacher(cfg)
    assert auto.mode == LIVE and "if one exists" in auto.why and "'always'" in auto.why
    assert plan_teacher(cfg, exists=True).mode == CACHE
    missing = plan_teacher(cfg, exists=False)
    assert missing.mode == LIVE and "no cache for this teacher" in missing.line

    cfg.teacher.cache = "always"
    built = plan_teacher(cfg, exists=False)
    assert built.mode == CACHE and built.build and "one teacher pass" in built.why
    cfg.method.on_policy_share = 0.25
    share = plan_teacher(cfg, exists=True)
    assert share.mode == CACHE and "on-policy share (0.25" in share.line and "stays live" in share.line
    cfg.method.on_policy_share = 1.0
    assert plan_teacher(cfg, exists=True).mode == LIVE

    cfg.method.on_policy_share = 0.0
    cfg.method.hidden_weight = 1.0
    hidden = plan_teacher(cfg, exists=True)
    assert hidden.mode == LIVE and "hidden states" in hidden.why and "'always', but" in hidden.why
    cfg.method.hidden_weight = 0.0
    assert "tokenizers differ" in plan_teacher(cfg, exists=True, same_tokenizer=False).why
    cfg.teacher.cache = "never"
    assert plan_teacher(cfg, exists=True).why == "teacher.cache is 'never'"

    cfg.teacher.cache = "always"
    cfg.method.logit_weight, cfg.method.hard_label_weight = 0.0, 1.0
    assert plan_teacher(cfg, exists=True).mode == NONE
    emb = tiny_config("sentence-embedding", tiny["bert"])
    emb.teacher.cache = "always"
    assert plan_teacher(emb, exists=True).mode == LIVE and "language model" in plan_teacher(emb).why


# -- runs ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_cached_run_matches_the_live_teacher_and_later_runs_reuse_its_cache(tiny):
    # A student of another architecture (same tokenizer) starts far from the teacher, and
    # with k = the whole vocabulary the cache differs from the live teacher only by its
    # quantization.
    other = {"student": {"name": str(tiny["llama"])}}
    live = Recorder()
    run_training(lm_config(tiny, "never", **other), live)
    assert cache_root().exists() is False or list_caches() == []
    assert any("Teacher: live (teacher.cache is 'never')" in m for m in logs(live))

    cached = Recorder()
    full_k = lm_config(tiny, "always", **other)
    full_k.teacher.cache_k = 10_000  # more than the vocabulary: all of it
    first = run_training(full_k, cached)
    assert [s.name for s in cached.of(ev.Stage)].count("teacher cache") == 1
    prog = [p for p in cached.of(ev.Progress) if p.stage == "teacher cache"]
    assert prog and prog[-1].current == prog[-1].total
    assert any(m.startswith("Teacher cache written:") for m in logs(cached))
    summary = first.summary["teacher_targets"]
    vocab = len(load_tokenizer(str(tiny["gpt2"])))
    assert summary["mode"] == CACHE and summary["k"] == vocab and len(summary["key"]) == 64
    # Same start, same batches: the plain loss is identical, the logit loss within the
    # quantization of the cached log-probabilities (format 2 codes them in 4 bits above k = 64).
    a, b = first_losses(live), first_losses(cached)
    assert b["hard_label"] == pytest.approx(a["hard_label"], rel=1e-6)
    assert b["logit"] == pytest.approx(a["logit"], rel=0.03) and b["logit"] != a["logit"]

    again = Recorder()
    reuse = lm_config(tiny, "auto", **other)
    reuse.teacher.cache_k = 10_000
    second = run_training(reuse, again)
    assert "teacher cache" not in [s.name for s in again.of(ev.Stage)]
    assert any(m.startswith("Teacher cache found:") for m in logs(again))
    assert second.summary["teacher_targets"]["key"] == summary["key"]
    assert first_losses(again)["logit"] == pytest.approx(b["logit"], rel=1e-6)
    (info,) = list_caches()
    assert info.used_by == [Run(first.run_dir).path.name, Run(second.run_dir).path.name]
    assert info.k == vocab and info.size_bytes > 0 and info.bytes_per_token > 0

    # A changed input (another k, another length) never reads the old cache.
    other_k = lm_config(tiny, "auto", **other)
    other_k.teacher.cache_k = 64
    for changed in (other_k, lm_config(tiny, "auto", data={"max_length": 24})):
        longer = Recorder()
        run_training(changed, longer)
        assert any("no cache for this teacher" in m for m in logs(longer))


@pytest.mark.slow
def test_chunked_and_full_logits_read_the_cache_alike(tiny):
    values = []
    for chunk in (-1, 64):
        rec = Recorder()
        run_training(lm_config(tiny, "always", training={"max_steps": 2, "eval_every": 0,
                                                         "logit_chunk": chunk}), rec)
        values.append([s.losses for s in rec.of(ev.Step)])
    for full, chunked in zip(*values):
        assert chunked["logit"] == pytest.approx(full["logit"], rel=1e-5)
        assert chunked["total"] == pytest.approx(full["total"], rel=1e-5)


@pytest.mark.slow
def test_a_resumed_run_keeps_the_teacher_it_started_with(tiny):
    stop = threading.Event()
    rec = Recorder(stop_at_step=1, stop=stop)
    stopped = run_training(lm_config(tiny, "auto", training={"max_steps": 3, "eval_every": 0,
                                                              "save_every": 1}), rec, stop)
    assert stopped.status == "stopped"
    assert Run(stopped.run_dir).summary()["teacher_targets"]["mode"] == LIVE
    run_training(lm_config(tiny, "always"), Recorder())  # a cache for the same key appears
    assert len(list_caches()) == 1
    resumed = Recorder()
    result = resume_training(stopped.run_dir, resumed)
    assert result.status == "finished"
    assert any("as when this run started" in m for m in logs(resumed))
    assert result.summary["teacher_targets"]["mode"] == LIVE
    assert Run(stopped.run_dir).path.name not in list_caches()[0].used_by


@pytest.mark.slow
def test_a_stopped_cache_pass_is_continued_by_the_next_run(tiny, capsys):
    """A stop during the teacher pass keeps the rows written so far, unpublished; the next
    run continues from them instead of starting over, and its cache holds the same answers
    as one uninterrupted pass. 'kdstudio cache' shows the stopped pass and --all deletes it."""
    import torch

    from kdstudio.cli.commands import main
    from kdstudio.core.teacher_cache import TeacherCache, delete_cache, stopped_passes

    cfg = lm_config(tiny, "always", training={"max_steps": 2, "eval_every": 0,
                                              "batch_size": 4})
    stop = threading.Event()
    rec = Recorder()

    def on_event(e):
        rec(e)
        if isinstance(e, ev.Progress) and e.stage == "teacher cache" and e.current >= 8:
            stop.set()
    result = run_training(cfg, on_event, stop)
    assert result.status == "stopped"
    assert list_caches() == []
    (kept,) = stopped_passes()
    total = rec.of(ev.Progress)[-1].total
    assert 8 <= kept.rows < total
    assert main(["cache"]) == 0
    assert "1 stopped teacher pass" in capsys.readouterr().out

    again = Recorder()
    assert run_training(cfg, again).status == "finished"
    assert any(f"{kept.rows:,} of {total:,} rows were already written" in m for m in logs(again))
    passes = [e for e in again.of(ev.Progress) if e.stage == "teacher cache"]
    assert passes[0].current == kept.rows + 4 and passes[-1].current == total
    assert stopped_passes() == []
    (continued,) = list_caches()
    resumed = TeacherCache(continued.path).get(list(range(total)))

    delete_cache(continued.path)  # one uninterrupted pass, for comparison
    assert run_training(cfg, Recorder()).status == "finished"
    whole = TeacherCache(list_caches()[0].path).get(list(range(total)))
    for name in ("top_ids", "top_logprobs", "tail_logmass", "mask"):
        torch.testing.assert_close(getattr(resumed, name), getattr(whole, name), rtol=0, atol=0)

    # A pass stopped again is listed by 'kdstudio cache' and deleted by --all.
    stop.clear()
    delete_cache(list_caches()[0].path)
    assert run_training(cfg, on_event, stop).status == "stopped"
    assert len(stopped_passes()) == 1
    capsys.readouterr()
    assert main(["cache", "delete", "--all"]) == 0
    assert "stopped teacher pass" in capsys.readouterr().out
    assert stopped_passes() == []


@pytest.mark.slow
def test_the_students_of_a_sweep_share_one_teacher_pass(tiny, capsys):
    # 'always': two 2-step students of a tiny teacher would not pay for a pass under 'auto'
    # (test_cache_choice.py tests that decision).
    base = lm_config(tiny, "always", training={"max_steps": 2, "eval_every": 0})
    sweep = Sweep.new(base, derived(1, 2), teacher_layers=4)
    rec = Recorder()
    assert run_sweep(sweep, rec).status == "finished"
    assert [s.name for s in rec.of(ev.Stage)].count("teacher cache") == 1
    (info,) = list_caches()
    assert len(info.used_by) == 2
    assert {Run(e.run_dir).summary()["teacher_targets"]["mode"] for e in sweep.entries} == {CACHE}

    # The command line lists it, with the runs that read it, and deletes it by key.
    from kdstudio.cli.commands import main

    capsys.readouterr()
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert info.key[:12] in out and "1 cache(s)" in out
    assert main(["cache", "delete", "nope"]) == 2
    assert "none does" in capsys.readouterr().out
    assert main(["cache", "delete", info.key[:8]]) == 0
    assert list_caches() == [] and "1 cache(s) deleted" in capsys.readouterr().out


# -- out of memory --------------------------------------------------------------------------------

@pytest.mark.slow
def test_out_of_memory_in_a_step_keeps_a_checkpoint_and_says_what_to_change(tiny, monkeypatch):
    import torch

    from kdstudio.core.distiller import Distiller
    from kdstudio.core.errors import OutOfMemory

    real, calls = Distiller.forward, []

    def forward(self, batch):
        calls.append(1)
        if len(calls) == 3:  # the third step
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, batch)
    monkeypatch.setattr(Distiller, "forward", forward)
    cfg = lm_config(tiny, "never", training={"max_steps": 4, "eval_every": 0, "save_every": 0})
    cfg.training.batch_size = 8
    rec = Recorder()
    with pytest.raises(OutOfMemory) as err:
        run_training(cfg, rec)
    text = str(err.value)
    assert "ran out of memory at step 3" in text
    assert "teacher cache" in text and "training.batch_size = 4" in text
    assert "training.grad_accum_steps = 2" in text and "kdstudio resume" in text
    (failed,) = rec.of(ev.Failed)
    assert failed.title == "Out of memory"
    run = Run(failed.run_dir)
    assert run.summary()["status"] == "failed" and "step 2" in run.summary()["error"]
    assert run.latest_checkpoint().name == "step-000002"
    monkeypatch.setattr(Distiller, "forward", real)
    resumed = Recorder()
    assert resume_training(run.path, resumed).status == "finished"
    assert resumed.of(ev.Started)[0].start_step == 2


def test_an_8_bit_teacher_is_refused_where_bitsandbytes_cannot_run(tiny):
    from kdstudio.core.errors import ConfigError
    from kdstudio.core.plan.memory import _teacher_bytes

    cfg = lm_config(tiny, "never")
    cfg.teacher.dtype = "int8"
    assert _teacher_bytes(cfg, "cuda") == 1
    rec = Recorder()
    with pytest.raises(ConfigError, match="CUDA GPU only, and this run's device is cpu") as err:
        run_training(cfg, rec)
    assert "bfloat16" in str(err.value)
    assert not [s for s in rec.of(ev.Stage) if s.name == "load data"]  # refused before loading


def test_k_is_chosen_by_how_much_of_the_teachers_probability_it_keeps(tiny):
    import torch

    from kdstudio.core.models import load_model
    from kdstudio.core.tasks import get_task
    from kdstudio.core.teacher_source import K_COVERAGE, choose_k, k_within_budget

    task = get_task("causal-lm")
    loaded = load_model(str(tiny["gpt2"]), task, role="teacher")
    tok, model = loaded.tokenizer, loaded.model.eval()
    n, make = task.batch_maker(["The kettle boiled while we talked about the weather."] * 8,
                               None, student_tok=tok, teacher_tok=tok, same_tok=True,
                               max_length=32, pack=True, device=torch.device("cpu"))
    vocab = len(tok)
    import contextlib

    # An untrained model is nearly flat: no k short of the vocabulary keeps 90%, so k stops
    # at the byte budget, short of the vocabulary.
    k, kept = choose_k(model, task, make, n, vocab, 1.0, batch_size=4, autocast=contextlib.nullcontext)
    assert k == k_within_budget(vocab) < vocab and kept < K_COVERAGE
    # A sharp teacher (its head scaled up) is covered by the smallest k.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(60.0)
    k, kept = choose_k(model, task, make, n, vocab, 1.0, batch_size=4, autocast=contextlib.nullcontext)
    assert k == 64 and kept >= K_COVERAGE
    # A higher temperature flattens it again, and needs a larger k.
    k_hot, _ = choose_k(model, task, make, n, vocab, 8.0, batch_size=4, autocast=contextlib.nullcontext)
    assert k_hot > 64


@pytest.mark.slow
def test_gradient_checkpointing_changes_memory_not_the_numbers(tiny):
    runs = []
    for on in (False, True):
        rec = Recorder()
        cfg = lm_config(tiny, "never", training={"max_steps": 2, "eval_every": 0,
                                                 "gradient_checkpointing": on})
        run_training(cfg, rec)
        runs.append(rec)
    assert not any("Gradient checkpointing" in m for m in logs(runs[0]))
    assert any("Gradient checkpointing: the student's activations are recomputed" in m
               for m in logs(runs[1]))
    for plain, ckpt in zip(*(r.of(ev.Step) for r in runs)):
        assert ckpt.losses["total"] == pytest.approx(plain.losses["total"], rel=1e-5)


class _GroupOf2:
    """One process of a 2-process group, without the others: the main process's broadcasts
    are kept, a follower's answers are scripted; the other collectives are its own."""

    multi, world_size, fsdp = True, 2, False

    def __init__(self, rank, answers=()):
        self.rank, self.is_main = rank, rank == 0
        self.said, self.answers = [], list(answers)

    def broadcast(self, obj):
        if self.is_main:
            self.said.append(obj)
            return obj
        return self.answers.pop(0)

    def barrier(self):
        pass


@pytest.mark.parametrize("rank", [0, 1])
def test_a_stop_while_the_main_process_writes_the_cache_stops_every_process(tiny, rank):
    """Several processes: the main one writes the cache while the others wait for it. A stop
    during the pass (Ctrl-C or the launch's stop file, which the main process polls in the
    pass) tells the waiting processes so; they stop too instead of waiting for a cache that
    never comes. Nothing is written."""
    import torch

    from kdstudio.core.device import autocast_for
    from kdstudio.core.errors import StoppedError
    from kdstudio.core.setup import RunContext, setup_run

    stop = threading.Event()
    rec = Recorder()

    def on_event(e):
        rec(e)
        if isinstance(e, ev.Progress) and e.stage == "teacher cache":
            stop.set()
    # A follower hears: no cache on disk yet; then, after the main process's pass: stopped.
    group = _GroupOf2(rank, answers=[False, "stopped"])
    cpu = torch.device("cpu")
    ctx = RunContext(cpu, "fp32", autocast_for(cpu, "fp32"), on_event, stop, group)
    with pytest.raises(StoppedError, match="teacher cache"):
        setup_run(lm_config(tiny, "always"), ctx, None)
    passes = [s for s in rec.of(ev.Stage) if s.name == "teacher cache"]
    if rank == 0:
        assert group.said == [False, "stopped"] and len(passes) == 1
    else:
        assert group.answers == [] and passes == []
    assert list_caches() == []
