"""Opening the main window in a test, and closing it only once nothing is left running."""

from kdstudio.ui.main_window import MainWindow

SETTLE_MS = 120000


def settle(qtbot, w: MainWindow) -> None:
    """Stop any run and let every background answer arrive before pytest-qt closes the window:
    a job or timer calling back into a deleted window would fail a later, unrelated test."""
    if w.training.is_running():
        w.training.stop()
        qtbot.waitUntil(lambda: not w.training.is_running(), timeout=SETTLE_MS)
    train = w.pages["train"]
    qtbot.waitUntil(lambda: w.pages["models"].is_idle() and not train._estimate_timer.isActive()
                    and w.jobs.active() == 0, timeout=SETTLE_MS)


def open_window(qtbot, page: str | None = None, **kwargs) -> MainWindow:
    """A shown MainWindow(**kwargs), settled before it closes; optionally on one page."""
    w = MainWindow(**kwargs)
    qtbot.addWidget(w, before_close_func=lambda win: settle(qtbot, win))
    w.show()
    if page:
        w.show_page(page)
    return w
