"""The Method page: the task family, how the student learns (presets), and advanced settings.

Basic choices are a few plain presets that set the loss weights; the temperature and the
logit loss sit next to them; language models add sequence-level, on-policy and
cross-tokenizer distillation; every task can train a plain-training baseline beside the
student; every other knob is folded under Advanced settings. Switching the task applies that
task's method defaults, so the config stays valid.
"""

from __future__ import annotations

import dataclasses
import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.config import MethodConfig, default_config
from kdstudio.core.errors import ConfigError
from kdstudio.core.tasks import all_tasks, get_task
from kdstudio.ui.context import AppContext
from kdstudio.ui.pages.base import Page
from kdstudio.ui.pages.method.advanced import AdvancedSettings
from kdstudio.ui.pages.method.lm import BaselineBox, LanguageModelMethods
from kdstudio.ui.pages.method.text import (
    CAUTION,
    EMBEDDING_LOSS_TEXT,
    LOGIT_LOSS_TEXT,
    NO_LOGITS,
    PRESETS,
    TEMPERATURE,
    WHY,
    custom_text,
    matching_preset,
    presets_of,
)
from kdstudio.ui.pages.method.toml import TomlDialog
from kdstudio.ui.widgets.binding import Binder

MAX_PRESETS = max((len(p) for p in PRESETS.values()), default=0)


class MethodPage(Page):
    title = "Method"

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(ctx, "method", parent)
        self.toml_dialog: TomlDialog | None = None

        lay = self.page_layout("How the student learns", scroll="methodScroll", spacing=12)
        lay.addWidget(self._task_group())
        row = QHBoxLayout()
        row.setSpacing(16)
        row.addWidget(self._method_group(), 1)
        row.addWidget(self._explain_group(), 1)
        lay.addLayout(row)
        lay.addWidget(self._settings_group())
        self.lm = LanguageModelMethods(ctx)
        lay.addWidget(self.lm)
        self.baseline = BaselineBox(ctx)
        lay.addWidget(self.baseline)
        self.advanced = AdvancedSettings(ctx)
        lay.addWidget(self.advanced)
        lay.addStretch(1)

        bottom = QHBoxLayout()
        self.validity = QLabel()
        self.validity.setObjectName("methodValidity")
        self.validity.setWordWrap(True)
        self.toml_button = QPushButton("Show as TOML...")
        self.toml_button.setObjectName("showTomlButton")
        self.toml_button.setAccessibleName("Show the run config as TOML")
        self.toml_button.setToolTip("See the whole run as the config file the command line "
                                    "takes ('kdstudio run'), and save or copy it.")
        self.toml_button.clicked.connect(self.show_toml)
        bottom.addWidget(self.validity, 1)
        bottom.addWidget(self.toml_button, 0, Qt.AlignmentFlag.AlignTop)

        self.outer.setContentsMargins(0, 0, 0, 8)
        bottom.setContentsMargins(16, 0, 16, 0)
        self.outer.addLayout(bottom)

        ctx.config_replaced.connect(self.refresh)
        ctx.config_changed.connect(self._config_changed)
        self.refresh()

    # -- construction ----------------------------------------------------------------------
    def _task_group(self) -> QGroupBox:
        box = QGroupBox("What kind of model: the task")
        box.setObjectName("taskGroup")
        grid = QGridLayout(box)
        grid.setHorizontalSpacing(20)
        self.task_group = QButtonGroup(self)
        self.task_buttons: dict[str, QRadioButton] = {}
        for col, task in enumerate(all_tasks()):
            b = QRadioButton(task.title)
            b.setObjectName(f"task_{task.name}")
            b.setAccessibleName(f"Task: {task.title}")
            b.setToolTip(task.description)
            b.setStyleSheet("font-weight: bold;")
            b.toggled.connect(lambda on, t=task.name: on and self._task_chosen(t))
            self.task_group.addButton(b)
            self.task_buttons[task.name] = b
            text = QLabel(task.description)
            text.setWordWrap(True)
            text.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            grid.addWidget(b, 0, col)
            grid.addWidget(text, 1, col)
            grid.setColumnStretch(col, 1)
        return box

    def _method_group(self) -> QGroupBox:
        box = QGroupBox("Method: what the student imitates")
        box.setObjectName("presetGroup")
        lay = QVBoxLayout(box)
        self.preset_group = QButtonGroup(self)
        self.preset_buttons: list[QRadioButton] = []
        self.preset_labels: list[QLabel] = []
        for i in range(MAX_PRESETS):  # relabelled for each task
            b = QRadioButton()
            b.setObjectName(f"preset_{i}")
            b.setAccessibleName(f"Method preset {i + 1}")  # renamed for each task's presets
            b.toggled.connect(lambda on, i=i: on and self._preset_chosen(i))
            summary = QLabel()
            summary.setWordWrap(True)
            summary.setContentsMargins(22, 0, 0, 6)
            summary.setStyleSheet("color: palette(placeholder-text);")
            self.preset_group.addButton(b)
            self.preset_buttons.append(b)
            self.preset_labels.append(summary)
            lay.addWidget(b)
            lay.addWidget(summary)
        self.custom_button = QRadioButton("Custom weights (see Advanced settings)")
        self.custom_button.setObjectName("preset_custom")
        self.custom_button.setAccessibleName("Method: custom weights")
        self.custom_button.setToolTip("Shown when the loss weights match none of the presets.")
        self.preset_group.addButton(self.custom_button)
        lay.addWidget(self.custom_button)
        lay.addStretch(1)
        return box

    def _explain_group(self) -> QGroupBox:
        box = QGroupBox("What this means")
        box.setObjectName("explainGroup")
        lay = QVBoxLayout(box)
        self.explain = QLabel()
        self.explain.setObjectName("methodExplanation")
        self.explain.setWordWrap(True)
        self.explain.setTextFormat(Qt.TextFormat.RichText)
        self.explain.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        why = QLabel(WHY)
        why.setObjectName("methodWhy")
        why.setWordWrap(True)
        caution = QLabel(CAUTION)
        caution.setWordWrap(True)
        caution.setStyleSheet("color: palette(placeholder-text);")
        lay.addWidget(self.explain)
        lay.addStretch(1)
        lay.addWidget(why)
        lay.addWidget(caution)
        return box

    def _settings_group(self) -> QGroupBox:
        box = QGroupBox("Settings")
        box.setObjectName("basicSettingsGroup")
        form = QFormLayout(box)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.binder = b = Binder(self.ctx)
        self.temperature = b.spin("method", "temperature", "Temperature", lo=0.05, hi=20.0,
                                  step=0.5, decimals=2)
        temp_text = QLabel(TEMPERATURE)
        temp_text.setWordWrap(True)
        temp_row = QHBoxLayout()
        temp_row.addWidget(self.temperature, 0, Qt.AlignmentFlag.AlignTop)
        temp_row.addWidget(temp_text, 1)
        self.logit_loss = b.combo("method", "logit_loss",
                                  "How the difference in probabilities is measured", LOGIT_LOSS_TEXT)
        self.embedding_loss = b.combo("method", "embedding_loss",
                                      "How sentence embeddings are compared", EMBEDDING_LOSS_TEXT)
        self.no_logits = QLabel(NO_LOGITS)
        self.no_logits.setObjectName("methodNoLogits")
        self.no_logits.setWordWrap(True)
        form.addRow("Temperature:", temp_row)
        form.addRow("Measure the difference by:", self.logit_loss)
        form.addRow("Compare embeddings by:", self.embedding_loss)
        form.addRow(self.no_logits)
        self.settings_form = form
        self.temp_row = temp_row
        return box

    # -- showing the config ----------------------------------------------------------------
    def refresh(self) -> None:
        """Show every control from ctx.config (also after a new, opened or cloned config)."""
        cfg = self.ctx.config
        b = self.task_buttons[cfg.task]
        b.blockSignals(True)
        b.setChecked(True)
        b.blockSignals(False)
        task = get_task(cfg.task)
        presets = presets_of(task)
        current = matching_preset(task, cfg.method)
        for i, (button, label) in enumerate(zip(self.preset_buttons, self.preset_labels)):
            button.blockSignals(True)
            if i < len(presets):
                button.setText(presets[i].label)
                button.setAccessibleName(f"Method: {presets[i].label}")
                button.setChecked(presets[i] is current)
                label.setText(presets[i].summary)
            button.setVisible(i < len(presets))
            label.setVisible(i < len(presets))
            button.blockSignals(False)
        self.custom_button.blockSignals(True)
        self.custom_button.setChecked(current is None)
        self.custom_button.setVisible(current is None)
        self.custom_button.blockSignals(False)
        self.explain.setText(current.explanation if current else custom_text(task))
        logits = task.shows_setting("method", "temperature")
        self.settings_form.setRowVisible(self.temp_row, logits)
        self.settings_form.setRowVisible(self.logit_loss, task.shows_setting("method", "logit_loss"))
        self.settings_form.setRowVisible(self.no_logits, not logits)
        self.settings_form.setRowVisible(self.embedding_loss,
                                         task.shows_setting("method", "embedding_loss"))
        self.binder.refresh()
        self.embedding_loss.setEnabled(cfg.method.embedding_weight > 0)
        self.advanced.refresh()
        self.lm.setVisible(task.generation_applies)
        self.lm.refresh()
        self.baseline.refresh()
        self._update_validity()

    def _config_changed(self, section: str) -> None:
        if section in ("task", "method", "teacher"):
            self.refresh()
            return
        if section == "generation":
            self.lm.refresh()
        elif section == "evaluation":
            self.baseline.refresh()
        self._update_validity()

    def _update_validity(self) -> None:
        try:
            self.ctx.config.validate()
        except ConfigError as exc:
            from kdstudio.ui.widgets.config_words import app_words

            words = html.escape(app_words(str(exc), self.window()))
            self.validity.setText(f"<span style='color:#b3261e'>&#x2717; {words}</span>")
            return
        self.validity.setText(
            "<span style='color:#2e7d32'>&#x2713; The run config is valid.</span>")

    # -- user choices ----------------------------------------------------------------------
    def _task_chosen(self, task: str) -> None:
        if task == self.ctx.config.task:
            return
        # The method's defaults differ between tasks (an embedding weight only for sentence
        # embeddings, logits only for the others): apply them first, so the config is valid
        # by the time anyone hears that the task changed.
        defaults = default_config(task).method
        for f in dataclasses.fields(MethodConfig):
            self.ctx.set_value("method", f.name, getattr(defaults, f.name))
        self.ctx.set_value("", "task", task)

    def _preset_chosen(self, index: int) -> None:
        preset = presets_of(self.ctx.config.task)[index]
        for key, value in preset.values().items():
            self.ctx.set_value("method", key, value)
        self.refresh()

    def show_toml(self) -> None:
        self.toml_dialog = TomlDialog(self.ctx, self)
        self.toml_dialog.open()

