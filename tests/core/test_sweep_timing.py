"""A sweep's one timing session: the chart's speeds from it, the headline within its spread,
and a real tiny sweep timing its teacher and students together at the end."""

from __future__ import annotations

import json

import pytest

from kdstudio.core import events as ev
from kdstudio.core.sweep.figures import summary_sentence, sweep_table
from kdstudio.core.sweep.queue import run_sweep
from kdstudio.core.sweep.spec import derived
from kdstudio.core.sweep.store import Sweep
from kdstudio.core.sweep.timed import int8_key, needs_timing
from kdstudio.core.timing import Load, Session
from tests.core.test_sweep import Recorder, base_config, fake_int8_sweep, int8_base

SEPARATE = "The speeds come from separate runs"


def _session(sweep: Sweep, load: Load | None = None) -> Session:
    one, two = (e.run_dir for e in sweep.entries)
    # Rounds in which the machine slowed everything alike (round 3): ratios stay steady.
    return Session({"teacher": [20.0, 21.0, 60.0, 20.0, 22.0],
                    one: [4.0, 4.2, 12.0, 4.0, 4.4],
                    int8_key(one): [2.0, 2.1, 6.0, 2.0, 2.2],
                    two: [15.0, 26.0, 45.0, 16.0, 18.0]}, "cpu", "2026-11-30T10:00:00", 3,
                   load or Load(0.05))


def test_the_sweeps_session_gives_every_latency_and_speed_up_on_the_chart():
    sweep = fake_int8_sweep(int8_base())
    before = sweep_table(Sweep.load(sweep.folder))
    assert not any(r.timed_together for r in before)
    assert SEPARATE in summary_sentence(before)  # the runs timed themselves, apart

    sweep.set_timing(_session(sweep).to_dict())
    saved = Sweep.load(sweep.folder)
    assert Session.from_dict(saved.timing).samples == _session(sweep).samples  # kept on disk
    teacher, one, one8, two, two8 = sweep_table(saved)
    assert teacher.latency_ms == pytest.approx(21.0)  # the session's, not the runs' 16 ms
    assert one.latency_ms == pytest.approx(4.2) and one.timed_together
    assert one.speedup == pytest.approx(21.0 / 4.2) and one.speedup_low > 4.5
    assert one.latency_p10 <= one.latency_ms <= one.latency_p90
    assert one8.timed_together and one8.latency_ms == pytest.approx(2.1)
    # An int8 export the session did not time keeps its export's ratio, on the session's
    # student latency (8 ms in the run, 18 here, times 2/5).
    assert not two8.timed_together and two8.latency_ms == pytest.approx(18.0 * 2 / 5)
    assert not needs_timing(saved)  # fake runs have no student folder to time


def test_the_headline_claims_no_speed_difference_within_the_spread():
    sweep = fake_int8_sweep(int8_base(), with_exports=False)
    sweep.set_timing(_session(sweep).to_dict())
    rows = sweep_table(Sweep.load(sweep.folder))
    two = next(r for r in rows if r.label == "2 layers")
    # 21 ms against 18 is 1.17 times faster, but the ratio round by round runs from 0.97
    # to 1.33: within its spread, so no speed difference is claimed.
    assert two.speedup == pytest.approx(21.0 / 18.0) and two.speedup_low < 1.0 < two.speedup_high
    text = summary_sentence([rows[0], two])
    assert "runs about as fast, within the spread of its timings" in text
    assert "times faster" not in text and "times slower" not in text
    assert text.endswith("All speeds were timed together, in turns.")
    one = next(r for r in rows if r.label == "1 layer")
    assert "runs 5.0 times faster" in summary_sentence([rows[0], one])


def test_a_session_under_load_says_so_in_the_headline():
    sweep = fake_int8_sweep(int8_base(), with_exports=False)
    sweep.set_timing(_session(sweep, Load(cpu_others=0.6)).to_dict())
    text = summary_sentence(sweep_table(Sweep.load(sweep.folder)))
    assert text.endswith("All speeds were timed together, in turns, timed while other "
                         "programs used 60% of the CPU.")


@pytest.mark.slow
def test_a_tiny_sweep_times_its_teacher_and_students_together_at_the_end(tiny):
    sweep = Sweep.new(base_config(tiny, max_steps=1), derived(1, 2), teacher_layers=4)
    sweep.save()
    rec = Recorder()
    assert run_sweep(sweep, rec).status == "finished"
    saved = json.loads((sweep.folder / "sweep.json").read_text())
    session = Session.from_dict(saved["timing"])
    runs = [e.run_dir for e in sweep.entries]
    assert session.names == ["teacher", *runs]  # every finished student, with the teacher
    assert session.repeats == 1 and session.device == "cpu" and session.timed_at
    assert 0.0 <= session.load.cpu_others <= 1.0
    rounds = [p for p in rec.of(ev.Progress) if p.unit == "rounds"]
    assert [p.current for p in rounds] == [1, 2, 3, 4] and rounds[-1].total == 4  # 3 warm-up
    rows = sweep_table(Sweep.load(sweep.folder))
    assert all(r.timed_together for r in rows[1:])
    assert not needs_timing(Sweep.load(sweep.folder))
    # Nothing new to time: a second call leaves the session as it was.
    rec2 = Recorder()
    assert run_sweep(Sweep.load(sweep.folder), rec2).status == "finished"
    assert not [p for p in rec2.of(ev.Progress) if p.unit == "rounds"]
