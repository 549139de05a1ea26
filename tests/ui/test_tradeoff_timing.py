"""'Time again' on the Tradeoff page: a finished tiny sweep timed together, off the GUI
thread, with progress; the chart's speeds then all come from that one session."""

import pytest
from PySide6.QtCore import Qt

from kdstudio.core.sweep.queue import Sweep, derived, run_sweep
from kdstudio.core.timing import Session
from tests.core.test_sweep import Recorder, base_config
from tests.ui.conftest import open_window

pytestmark = pytest.mark.slow  # trains a tiny student and opens the app

WAIT = 120000
SEPARATE = "The speeds come from separate runs"


def test_time_again_times_the_teacher_and_students_together_with_progress(qtbot, tiny):
    sweep = Sweep.new(base_config(tiny, max_steps=1), derived(1), teacher_layers=4)
    sweep.save()
    assert run_sweep(sweep, Recorder()).status == "finished"
    sweep.set_timing({})  # as a sweep from before timing sessions: each run timed itself
    run_dir = sweep.entries[0].run_dir

    w = open_window(qtbot)
    page = w.pages["tradeoff"]
    qtbot.waitUntil(lambda: len(page.results.rows) == 2, timeout=WAIT)
    w.show_page("tradeoff")
    bar = page.timing
    assert SEPARATE in page.results.summary.text()
    assert bar.label.text() == "Speeds come from each run's own timing."
    assert bar.button.isEnabled() and not bar.progress.isVisible()

    rounds = []
    progress = bar._progress
    bar._progress = lambda e: (rounds.append((e.current, e.total)), progress(e))
    with qtbot.waitSignal(bar.timed, timeout=WAIT) as timed:
        qtbot.mouseClick(bar.button, Qt.MouseButton.LeftButton)
        assert bar.progress.isVisible() and not bar.button.isEnabled()  # the GUI stays live
    session = timed.args[0]
    assert isinstance(session, Session) and session.names == ["teacher", run_dir]
    assert rounds == [(i, 4) for i in range(1, 5)]  # 3 warm-up rounds and 1 timed (repeats=1)
    assert not bar.progress.isVisible() and bar.button.isEnabled()
    assert bar.label.text().startswith("Timed together on cpu at ")

    qtbot.waitUntil(lambda: all(r.timed_together for r in page.results.rows), timeout=WAIT)
    assert "All speeds were timed together, in turns" in page.results.summary.text()
    assert SEPARATE not in page.results.summary.text()
    kept = Session.from_dict(Sweep.load(sweep.folder).timing)  # as saved: ms to 4 decimals
    assert kept.names == session.names and kept.repeats == session.repeats
    assert page.results.rows[1].latency_ms == kept.latency(run_dir).median_ms
