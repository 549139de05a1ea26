"""Python's cyclic garbage collector, run on the window's thread only, in small steps.

Left to itself, the collector runs on whichever thread happens to allocate: a model-loading
job or the training thread. There it can free a closed page's Qt objects off the GUI thread
(Qt objects must be destroyed on the thread that owns them; a destructor that waits for a
lock the GUI thread holds while it waits for the interpreter's lock never returns). And a full
collection, once torch and transformers are imported (400,000 objects), holds the interpreter's
lock for about 200 ms: the window freezes whichever thread started it.

So the window turns automatic collection off and collects on a timer on its own thread (the
way pyqtgraph's GarbageCollector does), with the generations' usual thresholds; and the
start-up imports are frozen out of every later collection (``freeze_imports``), so that a full
collection only walks what was made since.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QCoreApplication, QObject, QTimer

INTERVAL_MS = 250  # often enough that a young generation stays small between collections


class Collector(QObject):
    """One per application: owns the timer; automatic collection is off while it lives."""

    def __init__(self, app: QCoreApplication):
        super().__init__(app)
        self.setObjectName("kdstudioCollector")
        self.threshold = gc.get_threshold()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        app.aboutToQuit.connect(self.stop)
        self.start()

    def start(self) -> None:
        self.timer.start(INTERVAL_MS)
        gc.disable()

    def check(self) -> None:
        """What automatic collection would have done since the last turn, on this thread."""
        n0, n1, n2 = gc.get_count()
        if n0 <= self.threshold[0]:
            return
        if n1 < self.threshold[1]:
            gc.collect(0)
        elif n2 < self.threshold[2]:
            gc.collect(1)
        else:
            gc.collect(2)

    def stop(self) -> None:
        self.timer.stop()
        gc.enable()


def collect_on_gui_thread() -> Collector | None:
    """Install the application's collector once, or start it again after the application
    stopped it on quitting (None without a QApplication)."""
    app = QCoreApplication.instance()
    if app is None:
        return None
    found = app.findChild(Collector, "kdstudioCollector")
    if found is None:
        return Collector(app)
    found.start()
    return found


def freeze_imports() -> None:
    """Move every object alive now (the modules just imported, their functions and classes)
    out of the collector's reach for good: they live as long as the process, and each full
    collection would otherwise walk all of them again."""
    gc.freeze()
