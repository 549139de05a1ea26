"""The Models page's served teacher: the address goes into teacher.endpoint, and the
connection test asks a local server (tests/serve_server.py) off the GUI thread."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QLineEdit, QPushButton

from tests.serve_server import FakeServe
from tests.ui.conftest import open_window

pytestmark = pytest.mark.slow


def test_address_is_the_config_and_the_test_button_connects(qtbot, tmp_path):
    w = open_window(qtbot, "models", demo=True)
    page = w.pages["models"]
    qtbot.waitUntil(lambda: page.ready, timeout=60000)
    edit = page.findChild(QLineEdit, "servedEndpointEdit")
    button = page.findChild(QPushButton, "servedTestButton")
    status = page.findChild(QLabel, "servedStatus")
    with FakeServe(name="everyday-gpt") as server:
        w.ctx.set_value("teacher", "name", "everyday-gpt")
        edit.setText(server.endpoint)
        edit.editingFinished.emit()
        assert w.ctx.config.teacher.endpoint == server.endpoint
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: status.text().startswith("Connected"), timeout=20000)
        assert "'everyday-gpt' (vllm protocol, up to 128 tokens)" in status.text()
        page.grab().save(str(tmp_path / "models-served.png"))
        w.ctx.set_value("teacher", "name", "gpt-9000")
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: status.text().startswith("Not connected"), timeout=20000)
        assert "does not serve the model 'gpt-9000'" in status.text()
        w.ctx.set_value("teacher", "name", "everyday-gpt")
