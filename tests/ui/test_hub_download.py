"""A Hub teacher downloaded through the window, against the tiny Hub on 127.0.0.1: the
progress bar counts megabytes, Cancel in the middle of the weights answers at once and leaves
a sound cache, and pressing Load again finishes the download."""

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from tests.core.test_hub_server import (  # noqa: F401  (hub is a fixture)
    REPO,
    assert_cache_sound,
    hub,
    wait_downloads_ended,
)
from tests.ui.conftest import open_window

WAIT = 60000


def test_cancel_a_hub_download_from_the_app_and_continue_it(qtbot, hub):  # noqa: F811
    w = open_window(qtbot, "models", demo=True)
    page = w.pages["models"]
    qtbot.waitUntil(lambda: page.ready, timeout=WAIT)
    chooser = page.teacher_chooser
    before = w.ctx.config.teacher.name
    chooser.mode_buttons["hub"].click()
    chooser.hub_edit.setText(REPO)
    hub.pause_in = "model.safetensors"
    qtbot.mouseClick(chooser.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(hub.paused.is_set, timeout=WAIT)
    qtbot.waitUntil(lambda: "MB" in chooser.progress.format(), timeout=WAIT)
    assert chooser.progress_box.isVisible() and chooser.is_busy()
    qtbot.mouseClick(chooser.cancel_button, Qt.MouseButton.LeftButton)
    assert not chooser.is_busy() and chooser.status.text() == "Cancelled."
    assert w.ctx.config.teacher.name == before  # nothing chosen until a model loads
    hub.pause_in = None
    hub.resume.set()
    wait_downloads_ended()
    assert_cache_sound(hub.cache)
    assert not list(hub.cache.rglob("snapshots/*/model.safetensors"))
    assert not [b for b in chooser.findChildren(QMessageBox) if b.isVisible()]

    with qtbot.waitSignal(chooser.inspected, timeout=WAIT):
        qtbot.mouseClick(chooser.load_button, Qt.MouseButton.LeftButton)
    assert w.ctx.config.teacher.name == REPO and w.isVisible()
    assert_cache_sound(hub.cache)
