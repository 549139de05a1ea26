"""A served teacher on the Models page: the server's address (teacher.endpoint) and a button
that checks it serves the teacher's name, off the GUI thread. The API key is never typed
here: it comes from the KDSTUDIO_TEACHER_API_KEY environment variable."""

from __future__ import annotations

import os
from typing import Any

from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout

from kdstudio.ui.jobs import LatestJob
from kdstudio.ui.widgets.binding import Binder
from kdstudio.ui.widgets.common import fit_placeholder

API_KEY_ENV = "KDSTUDIO_TEACHER_API_KEY"  # core/teacher_serve.py's; the engine loads lazily


class ServedTeacherBox(QGroupBox):
    """teacher.endpoint, with a connection test."""

    def __init__(self, ctx: Any, parent: Any = None):
        super().__init__("Served teacher (optional)", parent)
        self.setObjectName("servedTeacherBox")
        self.ctx = ctx
        self._test = LatestJob(ctx.jobs)
        self.binder = Binder(ctx)
        self.address = QLineEdit()
        fit_placeholder(self.address, "http://HOST:8000/v1 - empty: the teacher runs here")
        self.binder.bind(self.address, "teacher", "endpoint", self.address.editingFinished,
                         lambda: self.address.text().strip(), self.address.setText,
                         label="Served teacher address", name="servedEndpointEdit")
        self.test_button = QPushButton("Test connection")
        self.test_button.setObjectName("servedTestButton")
        self.test_button.setAccessibleName("Test the served teacher connection")
        self.test_button.clicked.connect(self.test_connection)
        self.status = QLabel()
        self.status.setObjectName("servedStatus")
        self.status.setWordWrap(True)
        note = QLabel("A vLLM or SGLang server that serves the teacher's name above writes its "
                      "answers into the teacher cache once; the teacher then need not fit here. "
                      f"The API key is read from the {API_KEY_ENV} environment variable ("
                      + ("set" if os.environ.get(API_KEY_ENV) else "not set") + ").")
        note.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.address, 1)
        row.addWidget(self.test_button)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.status)
        lay.addWidget(note)
        self.binder.refresh()
        ctx.config_replaced.connect(self.binder.refresh)
        ctx.config_changed.connect(lambda section: section == "teacher" and self.binder.refresh())

    def test_connection(self) -> None:
        endpoint = self.address.text().strip()
        model = self.ctx.config.teacher.name
        if not endpoint:
            self.status.setText("Give the server's address first, e.g. http://127.0.0.1:8000/v1.")
            return
        self.test_button.setEnabled(False)
        self.status.setText(f"Asking {endpoint} for '{model}'...")

        def job() -> str:
            from kdstudio.core.teacher_serve import TeacherServer

            with TeacherServer(endpoint, model, timeout=10, retries=1) as server:
                info = server.connect()
                tokens = server.tokenize("Hello there")
            length = f", up to {info.max_model_len:,} tokens" if info.max_model_len else ""
            route = "with" if tokens is not None else "without"
            return (f"Connected: the server serves '{model}' ({info.protocol} protocol{length}), "
                    f"{route} a tokenize route for the tokenizer check.")

        self._test.submit(job, self._tested, self._failed)

    def _tested(self, text: str) -> None:
        self.test_button.setEnabled(True)
        self.status.setText(text)

    def _failed(self, exc: BaseException) -> None:
        self.test_button.setEnabled(True)
        self.status.setText(f"Not connected: {exc}")
