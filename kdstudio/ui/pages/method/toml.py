"""The "Show as TOML" dialog: the run config as the file `kdstudio run` takes, to save or copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.errors import ConfigError
from kdstudio.ui.dialogs import show_error


class TomlDialog(QDialog):
    """Shows ``ctx.config.to_toml()``; Save... writes it with ``ctx.config.save``."""

    def __init__(self, ctx: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.setObjectName("tomlDialog")
        self.setWindowTitle("Run config as TOML")
        self.setAccessibleName("Run config as TOML")
        self.resize(640, 620)
        self.text = ctx.config.to_toml()

        about = QLabel("This is the whole run, as the file the command line takes: save it and "
                       "run it with <code>kdstudio run my-run.toml</code>, or open it again "
                       "here with File > Open config.")
        about.setWordWrap(True)
        self.problem = QLabel()
        self.problem.setObjectName("tomlProblem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #b3261e;")
        try:
            ctx.config.validate()
            self.problem.hide()
        except ConfigError as exc:
            self.problem.setText(f"As it stands this config would be refused: {exc}")

        self.view = QPlainTextEdit(self.text)
        self.view.setObjectName("tomlText")
        self.view.setAccessibleName("Run config TOML text")
        self.view.setReadOnly(True)
        self.view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.status = QLabel()
        self.status.setObjectName("tomlStatus")

        self.save_button = QPushButton("Save...")
        self.save_button.setObjectName("tomlSaveButton")
        self.save_button.setAccessibleName("Save the run config to a file")
        self.save_button.clicked.connect(self.save)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setObjectName("tomlCopyButton")
        self.copy_button.setAccessibleName("Copy the run config")
        self.copy_button.clicked.connect(self.copy)
        close = QPushButton("Close")
        close.setObjectName("tomlCloseButton")
        close.setAccessibleName("Close")
        close.setDefault(True)
        close.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.save_button)
        buttons.addWidget(close)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(14, 14, 14, 14)
        lay.addWidget(about)
        lay.addWidget(self.problem)
        lay.addWidget(self.view, 1)
        lay.addLayout(buttons)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text)
        self.status.setText("Copied to the clipboard.")

    def save(self) -> None:
        folder = Path(self.ctx.settings["last_folder"] or Path.home())
        name = (self.ctx.config.name or "run").replace("/", "-") + ".toml"
        path, _ = QFileDialog.getSaveFileName(self, "Save run config", str(folder / name),
                                              "Run configs (*.toml)")
        if not path:
            return
        try:
            self.ctx.config.save(path)
        except OSError as exc:
            show_error(self, "Could not save the config",
                       f"'{path}' could not be written ({exc.strerror or exc}). Choose a folder "
                       "you can write to.")
            return
        self.ctx.settings["last_folder"] = str(Path(path).parent)
        self.status.setText(f"Saved to {path}")
