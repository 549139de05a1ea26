"""The one way of timing: turns, warm-up, medians and spreads of a fake clock, the load flag."""

from __future__ import annotations

import threading

import pytest

from kdstudio.core.timing import (
    Latency,
    Load,
    Session,
    run_figures,
    speedup_text,
    summary_latency,
    time_models,
)


class FakeClock:
    """Each call to a model advances the clock by that model's next duration (seconds)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeProbe:
    def __init__(self, load: Load):
        self.load, self.started = load, False

    def start(self) -> None:
        self.started = True

    def finish(self) -> Load:
        assert self.started
        return self.load


def _models(clock: FakeClock, durations: dict[str, list[float]], order: list[str]):
    def make(name: str):
        it = iter(durations[name])

        def call() -> None:
            order.append(name)
            clock.t += next(it)
        return call
    return {name: make(name) for name in durations}


def test_models_take_turns_warmup_untimed_and_medians_of_the_clock():
    clock, order = FakeClock(), []
    # ms per call: the first (warm-up) call of each is slow and must not count.
    durations = {"teacher": [0.5, 0.010, 0.012, 0.011, 0.030, 0.011],
                 "student": [0.5, 0.004, 0.005, 0.006, 0.004, 0.005]}
    rounds = []
    session = time_models(_models(clock, durations, order), repeats=5, warmup=1, clock=clock,
                          probe=FakeProbe(Load(0.0)), on_round=lambda i, n: rounds.append((i, n)))
    assert order == ["teacher", "student"] * 6  # round-robin, warm-up included
    assert rounds == [(i, 6) for i in range(1, 7)]
    assert session.samples["teacher"] == pytest.approx([10, 12, 11, 30, 11])
    assert session.latency("teacher").median_ms == pytest.approx(11.0)
    assert session.latency("student").median_ms == pytest.approx(5.0)
    t = session.latency("teacher")
    assert t.p10_ms <= t.median_ms <= t.p90_ms and t.p90_ms > 12  # the slow round shows in p90
    assert session.repeats == 5 and session.warmup == 1 and session.device == "cpu"
    assert session.timed_at  # when it was timed


def test_ratio_is_paired_round_by_round_so_a_shared_slow_round_cancels():
    # Round 3 is slow for both (a load spike): the ratio stays 2 in every round.
    s = Session({"teacher": [10.0, 10.0, 40.0, 10.0, 10.0], "student": [5.0, 5.0, 20.0, 5.0, 5.0]})
    r = s.ratio("teacher", "student")
    assert r.value == pytest.approx(2.0) and r.low == pytest.approx(2.0)
    assert r.high == pytest.approx(2.0) and r.faster and not r.slower
    # Overlapping timings: the ratio's spread straddles 1, so neither is faster.
    s = Session({"a": [10.0, 12.0, 9.0, 11.0, 10.0], "b": [11.0, 9.0, 12.0, 10.0, 10.0]})
    r = s.ratio("a", "b")
    assert r.low < 1.0 < r.high and not r.faster and not r.slower


def test_load_flag_and_words_from_a_fake_probe():
    clock = FakeClock()
    busy = time_models(_models(clock, {"m": [0.001] * 3}, []), repeats=2, warmup=1, clock=clock,
                       probe=FakeProbe(Load(cpu_others=0.6)))
    assert busy.load.busy
    assert busy.load.words() == "timed while other programs used 60% of the CPU"
    quiet = Load(cpu_others=0.05)
    assert not quiet.busy and quiet.words() == ""
    assert Load(cpu_others=0.0, gpu_util=0.9).words() == "timed while the GPU was 90% busy"
    assert not Load().busy  # unknown load is not called busy


def test_stop_ends_after_the_first_timed_round():
    clock, order, stop = FakeClock(), [], threading.Event()
    stop.set()
    s = time_models(_models(clock, {"a": [0.001] * 9, "b": [0.001] * 9}, order), repeats=5,
                    warmup=2, clock=clock, probe=FakeProbe(Load()), stop=stop)
    assert s.repeats == 1 and order == ["a", "b"] * 3


def test_session_round_trips_and_run_figures_keep_the_old_keys():
    s = Session({"teacher": [7.0, 8.0, 9.0, 10.0, 11.0], "student": [1.0, 2.0, 3.0, 4.0, 5.0]},
                "cpu", "2024-01-01T00:00:00", 3, Load(0.4, None))
    back = Session.from_dict(s.to_dict())
    assert back.samples == s.samples and back.load.cpu_others == pytest.approx(0.4)
    fig = run_figures(s)
    assert fig["teacher_latency_ms"] == 9.0 and fig["student_latency_ms"] == 3.0
    assert fig["speedup"] == 3.0 and fig["speedup_spread"][0] <= 3.0 <= fig["speedup_spread"][1]
    assert fig["speedup_rounds"] == 5
    lat = summary_latency(fig, "student")
    assert lat.has_spread and lat.load.busy and lat.device == "cpu"
    assert "p10\u2013p90" in lat.text()


def test_an_old_summary_without_a_session_still_gives_its_median():
    old = {"teacher_latency_ms": 81.0, "student_latency_ms": 10.0, "speedup": 8.1}
    lat = summary_latency(old, "teacher")
    assert lat == Latency(81.0) and not lat.has_spread and lat.text() == "81 ms"
    assert summary_latency({}, "teacher") is None
    assert speedup_text(8.1) == "8.10x" and speedup_text(None) == "-"
    assert Session.from_dict({"models": {"a": {"median_ms": 3}}}) is None  # no samples: unreadable


def test_the_machine_probe_reads_a_share_between_zero_and_one():
    from kdstudio.core.timing import MachineLoad

    probe = MachineLoad("cpu")
    probe.start()
    load = probe.finish()
    assert load.cpu_others is not None and 0.0 <= load.cpu_others <= 1.0
    assert load.gpu_util is None  # no GPU timed


def test_fewer_than_five_rounds_show_a_speed_up_but_never_claim_one():
    """The p10 and p90 of 1-4 rounds are those rounds: no spread, so no claim. The test's
    runs use latency_repeats = 1 or 2; their 2x must not read as 'faster'."""
    from kdstudio.core.sweep.figures import TableRow, summary_sentence
    from kdstudio.core.sweep.timed import apply_session
    from kdstudio.core.timing import MIN_SPREAD_ROUNDS

    few = Session({"teacher": [8.0, 8.2], "student": [4.0, 4.1]}, "cpu", "2024-01-01T00:00:00")
    ratio = few.ratio("teacher", "student")
    assert ratio.value == pytest.approx(2.0) and ratio.low > 1.0  # the rounds alone say "faster"
    assert ratio.rounds == 2 < MIN_SPREAD_ROUNDS and not ratio.sure
    assert not ratio.faster and not ratio.slower
    assert not few.latency("student").has_spread
    fig = run_figures(few)
    assert fig["speedup"] == pytest.approx(2.0) and fig["speedup_spread"] is None
    assert fig["speedup_rounds"] == 2
    teacher = TableRow("teacher", "teacher", params=100, size_mb=1.0, latency_ms=8.0,
                       quality_retained=1.0, run_dir="")
    student = TableRow("1 layer", "student", params=50, size_mb=0.5, latency_ms=4.0,
                       quality_retained=0.95, layers=1, params_share=0.5, size_share=0.5,
                       run_dir="/r/1")
    few.samples["/r/1"] = few.samples.pop("student")
    apply_session([teacher, student], few)
    assert student.speed_rounds == 2 and student.speedup_low is None
    text = summary_sentence([teacher, student])
    assert "ran 2.0 times faster in 2 timing rounds, too few to tell from noise" in text
    assert "runs 2.0 times faster" not in text
    # Five rounds and more: the spread decides, as before.
    many = Session({"teacher": [8.0] * 5, "student": [4.0] * 5})
    assert many.ratio("teacher", "student").faster
