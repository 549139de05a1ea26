"""Cyclic garbage is freed on the window's thread, never on a job's or a run's thread."""

import gc
import threading

from kdstudio.ui.collector import Collector, collect_on_gui_thread
from kdstudio.ui.startup import ENGINE_WARM
from tests.ui.conftest import open_window


class _Cycle:
    """A reference cycle that records which thread finally frees it."""

    freed_on: list[str] = []

    def __init__(self):
        self.me = self

    def __del__(self):
        _Cycle.freed_on.append(threading.current_thread().name)


def test_garbage_made_on_a_worker_thread_is_freed_on_the_gui_thread(qtbot):
    w = open_window(qtbot)
    assert not gc.isenabled()
    assert collect_on_gui_thread() is collect_on_gui_thread()  # one per application
    assert len(w.window().findChildren(Collector)) == 0  # owned by the application, not a window
    # The start-up imports are frozen out of collection as they arrive, with whatever garbage
    # is alive at that moment: the cycle below is made once that is over.
    qtbot.waitUntil(ENGINE_WARM.is_set, timeout=120_000)  # started by the window, on its loop
    _Cycle.freed_on.clear()

    kept = []

    def work():
        _Cycle()  # unreachable at once, freed only by the cyclic collector
        # Enough new containers, still alive, that automatic collection would run here.
        kept.append([[i] for i in range(50_000)])

    t = threading.Thread(target=work, name="job-thread")
    t.start()
    t.join()
    assert _Cycle.freed_on == []  # nothing collected on the worker
    qtbot.waitUntil(lambda: bool(_Cycle.freed_on), timeout=5000)
    assert _Cycle.freed_on == [threading.current_thread().name]
    assert len(kept[0]) == 50_000  # alive until now: live objects are never freed


def test_the_collector_hands_back_on_quitting_and_starts_again_with_a_window(qtbot):
    from PySide6.QtWidgets import QApplication

    collector = collect_on_gui_thread()
    QApplication.instance().aboutToQuit.emit()  # what quitting the application does
    assert gc.isenabled() and not collector.timer.isActive()
    open_window(qtbot)
    assert not gc.isenabled() and collector.timer.isActive()
    assert collect_on_gui_thread() is collector
