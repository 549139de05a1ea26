"""teacher.cache = 'auto': the cache only where it pays (time or memory), decided from what is
known before the steps, and said in the run's own sentence about its teacher; the default k's
byte budget."""

from kdstudio.core import events as ev
from kdstudio.core.runs import Run
from kdstudio.core.sweep.spec import derived
from kdstudio.core.sweep.store import Sweep
from kdstudio.core.teacher_cache.records import record_bytes
from kdstudio.core.teacher_source import (
    CACHE,
    K_BYTES,
    LIVE,
    cache_pays,
    k_within_budget,
    plan_teacher,
)
from kdstudio.core.trainer import run_training
from tests.core.test_teacher_cache_runs import lm_config, logs
from tests.core.test_trainer import Recorder

SIZES = dict(teacher_params=2e6, student_params=1e6, vocab=2048)


def test_the_default_k_fits_the_byte_budget():
    assert k_within_budget(2048) == 128 and record_bytes(2048, 128) <= 300
    assert k_within_budget(151_936) == 64 and record_bytes(151_936, 64) <= 200
    assert record_bytes(151_936, 128) > K_BYTES  # the next rung would not fit
    assert k_within_budget(40) == 40  # never more than the vocabulary


def test_a_pass_pays_when_many_passes_read_it():
    ok, why = cache_pays(readers=4, epochs=2, k=128, **SIZES)
    # share = 2 / (2 + 3) = 40%; saved = 40% x (8 - 1) / 8 = 35%
    assert ok and "read back 8 times (4 students x 2 epochs)" in why and "35%" in why


def test_one_reader_of_one_epoch_runs_live():
    ok, why = cache_pays(readers=1, epochs=1, k=128, **SIZES)
    assert not ok and "answer each training row 1 times" in why


def test_a_nearly_dense_k_never_pays_in_time():
    ok, why = cache_pays(readers=4, epochs=5, k=1024, **SIZES)
    assert not ok and "top-1024 of a 2,048-token vocabulary" in why


def test_a_small_teacher_beside_a_large_student_runs_live():
    ok, why = cache_pays(readers=4, epochs=5, k=64, teacher_params=1e6, student_params=4e6,
                         vocab=2048)
    # share = 1 / 13 = 8%: even every pass saved would not reach AUTO_SAVING
    assert not ok and "only 8% of a live step" in why


def test_a_teacher_that_does_not_fit_beside_the_student_is_cached():
    ok, why = cache_pays(readers=1, epochs=1, k=1024, fits_beside=False, **SIZES)
    assert ok and "does not fit beside the student" in why


def test_the_plan_says_the_choice_in_its_sentence(tiny):
    cfg = lm_config(tiny, "auto")
    yes = plan_teacher(cfg, exists=False, pays=cache_pays(readers=4, epochs=2, k=128, **SIZES))
    assert yes.mode == CACHE and yes.build and yes.line.startswith(
        "Teacher: cache (teacher.cache is 'auto' and one teacher pass read back 8 times")
    no = plan_teacher(cfg, exists=False, pays=cache_pays(readers=1, epochs=1, k=128, **SIZES))
    assert no.mode == LIVE and "no cache for this teacher" in no.line and "not pay" in no.line
    # A cache already on disk is read: its pass is paid.
    assert plan_teacher(cfg, exists=True, pays=(False, "x")).mode == CACHE
    # 'always' and 'never' are the user's word, whatever auto would weigh.
    cfg.teacher.cache = "never"
    assert plan_teacher(cfg, exists=False, pays=(True, "x")).mode == LIVE


def test_a_sweep_counts_its_students_as_readers(tiny):
    base = lm_config(tiny, "auto", training={"max_steps": 2, "eval_every": 0})
    sweep = Sweep.new(base, derived(1, 2), teacher_layers=4)
    cfgs = [sweep.config_for(e) for e in sweep.entries]
    assert [c.teacher.cache for c in cfgs] == ["auto", "auto"]
    assert [c.teacher.cache_readers for c in cfgs] == [2, 2]


def test_auto_writes_the_cache_when_its_readers_pay_for_it(tiny):
    many = Recorder()
    cfg = lm_config(tiny, "auto")
    cfg.teacher.cache_k, cfg.teacher.cache_readers = 16, 20
    result = run_training(cfg, many)
    assert "teacher cache" in [s.name for s in many.of(ev.Stage)]
    assert Run(result.run_dir).summary()["teacher_targets"]["mode"] == CACHE
    assert any(m.startswith("Teacher: cache (teacher.cache is 'auto' and one teacher pass read "
                            "back") for m in logs(many))

    one = Recorder()
    cfg = lm_config(tiny, "auto", data={"max_length": 24})  # another key: no cache on disk
    cfg.teacher.cache_k = 16
    result = run_training(cfg, one)
    assert "teacher cache" not in [s.name for s in one.of(ev.Stage)]
    assert Run(result.run_dir).summary()["teacher_targets"]["mode"] == LIVE
    assert any(m.startswith("Teacher: live (no cache for this teacher, data and length yet, and "
                            "with teacher.cache 'auto' writing one would not pay") for m in logs(one))
