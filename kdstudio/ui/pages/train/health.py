"""The Train page's run-health panel: each alarm of the run (core/health.py) in plain words.

Every ``Health`` event becomes one entry: what was seen, what to change, and a button that
asks the window to show the setting that changes it (``setting_requested(key)``, a config key
such as "method.balance"). The panel is hidden while the run has no alarm.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from kdstudio.ui.widgets.binding import config_field

STYLE = {  # (background, border, text) of an entry
    "warning": ("#fff4d6", "#e0b44c", "#5c3d00"),
    "error": ("#fde7e6", "#d9534f", "#7a1712"),
}
SYMBOL = {"warning": "\u26a0", "error": "\u2716"}


def setting_for(setting: str, config: Any) -> str:
    """The key whose control changes ``setting`` in this config: a run counted in epochs
    (training.max_steps = 0) trains for fewer steps through its epochs."""
    training = getattr(config, "training", None)
    if setting == "training.max_steps" and getattr(training, "max_steps", None) == 0:
        return "training.epochs"
    return setting


def setting_words(setting: str) -> str:
    """A config key in words: "training.learning_rate" -> "learning rate"."""
    return setting.rsplit(".", 1)[-1].replace("_", " ")


def setting_tip(setting: str) -> str:
    """The setting's help text from the config (empty for a key this version lacks)."""
    section, _, key = setting.rpartition(".")
    try:
        return config_field(section, key).metadata.get("help", "")
    except (KeyError, StopIteration, AttributeError):
        return ""


class HealthEntry(QFrame):
    """One alarm: its message, its advice and (when it names a setting) a button to it."""

    def __init__(self, event: Any, on_open: Any, parent: QWidget | None = None,
                 setting: str | None = None):
        super().__init__(parent)
        setting = event.setting if setting is None else setting
        self.alarm, self.setting = event.alarm, setting
        level = event.level if event.level in STYLE else "warning"
        self.level = level
        self.setObjectName(f"healthEntry_{event.alarm}")
        background, border, text = STYLE[level]
        self.setStyleSheet(f"QFrame#{self.objectName()} {{ background: {background}; "
                           f"border: 1px solid {border}; border-radius: 4px; }}"
                           f"QFrame#{self.objectName()} QLabel {{ color: {text}; }}")
        symbol = QLabel(SYMBOL[level])
        symbol.setObjectName("healthSymbol")
        symbol.setStyleSheet("font-size: 14pt;")
        symbol.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignHCenter)
        symbol.setAccessibleName("Error" if level == "error" else "Warning")
        self.message = QLabel(f"<b>Step {event.step}:</b> {_html(event.message)}")
        self.message.setObjectName("healthMessage")
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.RichText)
        self.advice = QLabel(f"<b>What to do:</b> {_html(event.advice)}")
        self.advice.setObjectName("healthAdvice")
        self.advice.setWordWrap(True)
        self.advice.setTextFormat(Qt.TextFormat.RichText)
        self.advice.setVisible(bool(event.advice))
        text_col = QVBoxLayout()
        text_col.setSpacing(3)
        text_col.addWidget(self.message)
        text_col.addWidget(self.advice)
        self.button: QPushButton | None = None
        if setting:
            self.button = QPushButton(f"Show the {setting_words(setting)} setting")
            self.button.setObjectName(f"healthSettingButton_{event.alarm}")
            self.button.setAccessibleName(f"Show the setting {setting}")
            tip = setting_tip(setting)
            self.button.setToolTip(f"Open the page with {setting} and put the cursor on it."
                                   + (f"\n\n{tip}" if tip else ""))
            self.button.setCursor(Qt.CursorShape.PointingHandCursor)
            self.button.clicked.connect(lambda: on_open(setting))
            row = QHBoxLayout()
            row.setContentsMargins(0, 2, 0, 0)
            row.addStretch(1)
            row.addWidget(self.button)
            text_col.addLayout(row)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.setSpacing(8)
        lay.addWidget(symbol, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(text_col, 1)


class HealthPanel(QWidget):
    """The run's alarms, newest last; ``setting_requested(key)`` when a setting's button is
    pressed. ``clear()`` when another run starts or is shown."""

    setting_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None, config: Any = None):
        super().__init__(parent)
        # config() is the run's config: which control changes a setting can depend on it.
        self.config = config or (lambda: None)
        self.setObjectName("healthPanel")
        self.setAccessibleName("Run health")
        self.entries: dict[str, HealthEntry] = {}
        self.title = QLabel()
        self.title.setObjectName("healthTitle")
        self.title.setStyleSheet("font-weight: bold;")
        self.lay = QVBoxLayout(self)
        self.lay.setContentsMargins(0, 0, 0, 0)
        self.lay.setSpacing(4)
        self.lay.addWidget(self.title)
        self.setVisible(False)

    def add(self, event: Any) -> None:
        """Show one Health event (an alarm already shown is not repeated)."""
        if event.alarm in self.entries:
            return
        entry = HealthEntry(event, self.setting_requested.emit,
                            setting=setting_for(event.setting, self.config()))
        self.entries[event.alarm] = entry
        self.lay.addWidget(entry)
        self._retitle()
        self.setVisible(True)

    def clear(self) -> None:
        for entry in self.entries.values():
            self.lay.removeWidget(entry)
            entry.deleteLater()
        self.entries.clear()
        self.setVisible(False)

    def messages(self) -> list[str]:
        return [e.message.text() for e in self.entries.values()]

    def _retitle(self) -> None:
        n = len(self.entries)
        stops = any(e.level == "error" for e in self.entries.values())
        self.title.setText(("The run had to stop: " if stops else "Run health: ")
                           + ("one problem found" if n == 1 else f"{n} problems found"))


def _html(text: str) -> str:
    return html.escape(text, quote=False)
