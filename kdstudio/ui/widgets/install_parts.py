"""Parts of KD Studio that an environment may lack (the ONNX export), installed from the app.

The installers and the frozen app ship the export extra; an environment made by hand with
`pip install kdstudio` may not have it. Rather than tell a non-coder to run pip in an environment
they never made, the app offers to install the missing parts into its own environment, with
pip in a QProcess (the window stays responsive), a progress bar and pip's own lines underneath.
What the extra holds is read from KD Studio's package metadata, so pyproject.toml stays the one
place that names it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
from dataclasses import dataclass

from PySide6.QtCore import QProcess, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

# The export extra, should the package metadata be out of reach (a source checkout on sys.path).
EXPORT_FALLBACK = ("onnx>=1.23", "onnxruntime>=1.32", "onnxscript>=0.7")
# What each part is for, in the app's words.
PART_WORDS = {"onnx": "the ONNX file format", "onnxruntime": "ONNX Runtime, which runs and "
              "checks the exported model", "onnxscript": "PyTorch's ONNX exporter"}


@dataclass(frozen=True)
class Part:
    requirement: str   # as pip takes it: "onnxruntime>=1.32"
    module: str        # as Python imports it: "onnxruntime"


def extra_parts(extra: str = "export") -> list[Part]:
    """The requirements of one of KD Studio's extras, from its installed metadata."""
    try:
        requires = importlib.metadata.requires("kdstudio") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    marker = re.compile(r""";\s*extra\s*==\s*["']%s["']\s*$""" % re.escape(extra))
    found = [marker.split(r)[0].strip() for r in requires if marker.search(r)]
    if not found and extra == "export":
        found = list(EXPORT_FALLBACK)
    return [Part(r, re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].replace("-", "_")) for r in found]


def missing_parts(extra: str = "export") -> list[Part]:
    importlib.invalidate_caches()  # see what a pip run in this process just installed
    return [p for p in extra_parts(extra) if importlib.util.find_spec(p.module) is None]


def pip_command(parts: list[Part]) -> list[str] | None:
    """pip for this very environment, or None where there is none (the frozen app)."""
    if getattr(sys, "frozen", False) or importlib.util.find_spec("pip") is None:
        return None
    return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
            "--progress-bar", "off", *[p.requirement for p in parts]]


# pip's lines, in the order an install goes through them, and how far along each one is.
STAGES = (("Collecting ", "Finding"), ("Downloading ", "Downloading"),
          ("Installing collected packages", "Installing"), ("Successfully installed", "Done"))


def progress_of(line: str, parts: list[Part], seen: set[str]) -> tuple[int, str] | None:
    """(percent, words) for one line of pip's output, or None for a line that moves nothing.

    Finding and downloading each part fill the first 80%, split evenly between the parts;
    installing is 90%, success 100%. Lines about dependencies count too, but never past 80%.
    """
    line = line.strip()
    for prefix, words in STAGES:
        if not line.startswith(prefix):
            continue
        if words == "Installing":
            return 90, "Installing the downloaded parts"
        if words == "Done":
            return 100, "Installed"
        name = line[len(prefix):].split()[0] if line[len(prefix):].split() else ""
        seen.add(f"{words}:{name}")
        share = 80 / max(1, 2 * len(parts))
        return min(80, int(len(seen) * share)), f"{words} {name}"
    return None


class InstallPartsDialog(QDialog):
    """Asks, then installs the missing parts of an extra with pip, showing its progress."""

    installed = Signal()

    def __init__(self, what: str, parts: list[Part], parent: QWidget | None = None,
                 command: list[str] | None = None):
        super().__init__(parent)
        self.setObjectName("installPartsDialog")
        self.setWindowTitle("Install the missing parts")
        self.parts = parts
        self.command = command if command is not None else pip_command(parts)
        self._seen: set[str] = set()
        names = ", ".join(f"<b>{p.module}</b> ({PART_WORDS.get(p.module, 'a Python package')})"
                          for p in parts)
        self.text = QLabel()
        self.text.setObjectName("installPartsText")
        self.text.setWordWrap(True)
        if self.command is None:
            self.text.setText(f"{what} needs parts that this copy of KD Studio does not have: "
                              f"{names}. This copy cannot add them itself; install KD Studio with "
                              "its installer (install.sh or install.ps1), which includes them.")
        else:
            self.text.setText(f"{what} needs parts that are not installed yet: {names}. "
                              "Install them now into KD Studio's own environment? It downloads "
                              "about 60 MB and takes a minute or two; nothing else changes.")
        self.status = QLabel("")
        self.status.setObjectName("installPartsStatus")
        self.bar = QProgressBar()
        self.bar.setObjectName("installPartsProgress")
        self.bar.setRange(0, 100)
        self.bar.hide()
        self.log = QPlainTextEdit()
        self.log.setObjectName("installPartsLog")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setPlaceholderText("What the installer says appears here.")
        self.log.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.install_button = QPushButton("Install")
        self.install_button.setObjectName("installPartsButton")
        self.install_button.setEnabled(self.command is not None)
        self.install_button.setVisible(self.command is not None)
        self.buttons.addButton(self.install_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.install_button.clicked.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        for w in (self.text, self.bar, self.status, self.log, self.buttons):
            lay.addWidget(w)
        self.process: QProcess | None = None
        self.resize(560, self.sizeHint().height())

    def start(self) -> None:
        if self.command is None or self.process is not None:
            return
        self.install_button.setEnabled(False)
        self.bar.show()
        self.log.show()
        self.bar.setValue(0)
        self.status.setText("Starting the installer...")
        proc = self.process = QProcess(self)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.readyReadStandardOutput.connect(self._read)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._error)
        proc.start(self.command[0], self.command[1:])

    def _read(self) -> None:
        data = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        for line in data.splitlines():
            if not line.strip():
                continue
            self.log.appendPlainText(line.rstrip())
            moved = progress_of(line, self.parts, self._seen)
            if moved is not None:
                percent, words = moved
                self.bar.setValue(max(self.bar.value(), percent))
                self.status.setText(words + ("..." if percent < 100 else "."))

    def _finished(self, code: int, _status: object = None) -> None:
        self.process = None
        importlib.invalidate_caches()
        still = [p.module for p in self.parts if importlib.util.find_spec(p.module) is None]
        if code == 0 and not still:
            self.bar.setValue(100)
            self.status.setText("Installed. You can go on.")
            self.installed.emit()
            self.accept()
            return
        last = next((ln for ln in reversed(self.log.toPlainText().splitlines())
                     if ln.strip().startswith("ERROR")), "")
        missing = f" ({', '.join(still)} still missing)" if still else ""
        self.status.setText(f"Installing failed{missing}. {last[:300]} Nothing that was already "
                            "installed changed; you can try again, for example once the network "
                            "is back.".replace("  ", " "))
        self.install_button.setEnabled(True)

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.process = None
            self.status.setText(f"The installer could not start ({self.command[0]}).")
            self.install_button.setEnabled(True)
