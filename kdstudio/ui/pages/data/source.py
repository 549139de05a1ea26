"""Where the data comes from: the built-in corpus, a file on this computer, or a Hub data set."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QWidget,
)

from kdstudio.core.catalog import FILE_BUILDERS
from kdstudio.ui.widgets.common import named as _named

# The kinds of file the engine reads.
FILE_SUFFIXES = tuple(FILE_BUILDERS)
FILE_FILTER = f"Data files ({' '.join('*' + s for s in FILE_SUFFIXES)});;All files (*)"
BUILTIN, FILE, HUB = "builtin", "file", "hub"


def source_kind(dataset: str) -> str:
    """Which of the three rows a config's data.dataset belongs to (as the engine decides)."""
    if dataset.startswith("builtin:"):
        return BUILTIN
    path = Path(dataset).expanduser()
    if dataset.startswith((".", "/", "~")) or path.suffix.lower() in FILE_SUFFIXES or path.exists():
        return FILE
    return HUB


class DataSourceBox(QGroupBox):
    """Three ways to give the data; ``chosen(dataset, config_name)`` when the user commits one."""

    chosen = Signal(str, str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Where the data comes from", parent)
        self.setObjectName("dataSourceBox")
        self._builtins: dict[str, str] = {}
        self._pending_builtin = ""

        self.builtin_radio = _named(QRadioButton("Built-in corpus"), "builtinRadio",
                                    "Use a built-in corpus",
                                    "Sentences shipped with KD Studio: works offline.")
        self.file_radio = _named(QRadioButton("File on this computer"), "fileRadio",
                                 "Use a file on this computer",
                                 "A csv, tsv, json, jsonl, txt or parquet file, or a folder of them.")
        self.hub_radio = _named(QRadioButton("Hugging Face Hub"), "hubRadio",
                                "Use a Hugging Face Hub data set",
                                "A data set on huggingface.co, downloaded on first use.")
        self.group = QButtonGroup(self)
        for i, r in enumerate((self.builtin_radio, self.file_radio, self.hub_radio)):
            self.group.addButton(r, i)

        self.builtin_combo = _named(QComboBox(), "builtinCombo", "Built-in corpus",
                                    "Which built-in corpus to use.")
        self.builtin_combo.setMinimumWidth(220)
        self.builtin_about = QLabel("")
        self.builtin_about.setObjectName("builtinDescription")
        self.builtin_about.setWordWrap(True)

        self.file_edit = _named(QLineEdit(), "filePathEdit", "Data file path",
                                "The path of a data file or folder. Press Enter to load it.")
        self.file_edit.setPlaceholderText("Choose a file, or drop one anywhere on this page")
        self.browse_button = _named(QPushButton("Browse..."), "browseButton",
                                    "Choose a data file", "Pick a data file with a file dialog.")

        self.hub_edit = _named(QLineEdit(), "hubNameEdit", "Hub data set name",
                               "The data set's id on the Hub, e.g. 'imdb' or 'stanfordnlp/sst2'.")
        self.hub_edit.setPlaceholderText("Data set id, e.g. stanfordnlp/sst2")
        self.hub_config_edit = _named(QLineEdit(), "hubConfigEdit", "Hub data set configuration",
                                      "Some data sets come in several configurations (subsets); "
                                      "leave empty for the default.")
        self.hub_config_edit.setPlaceholderText("Configuration (optional)")
        self.hub_button = _named(QPushButton("Load"), "hubLoadButton", "Load the Hub data set",
                                 "Download (on first use) and preview the data set.")

        grid = QGridLayout(self)
        grid.setContentsMargins(12, 10, 12, 10)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(8)
        grid.addWidget(self.builtin_radio, 0, 0)
        grid.addWidget(self.builtin_combo, 0, 1)
        grid.addWidget(self.builtin_about, 0, 2, 1, 2)
        grid.addWidget(self.file_radio, 1, 0)
        grid.addWidget(self.file_edit, 1, 1, 1, 2)
        grid.addWidget(self.browse_button, 1, 3)
        grid.addWidget(self.hub_radio, 2, 0)
        grid.addWidget(self.hub_edit, 2, 1)
        grid.addWidget(self.hub_config_edit, 2, 2)
        grid.addWidget(self.hub_button, 2, 3)
        grid.setColumnStretch(2, 1)

        self.group.idClicked.connect(self._on_radio)
        self.builtin_combo.activated.connect(lambda _i: self._commit(BUILTIN))
        self.file_edit.returnPressed.connect(lambda: self._commit(FILE))
        self.browse_button.clicked.connect(self.browse)
        self.hub_edit.returnPressed.connect(lambda: self._commit(HUB))
        self.hub_config_edit.returnPressed.connect(lambda: self._commit(HUB))
        self.hub_button.clicked.connect(lambda: self._commit(HUB))
        self._enable(BUILTIN)

    # -- filling -------------------------------------------------------------------------------
    def set_builtins(self, builtins: dict[str, str]) -> None:
        """Names and descriptions of the built-in corpora."""
        self._builtins = dict(builtins)
        current = self._pending_builtin or self.builtin_combo.currentData() or ""
        self.builtin_combo.clear()
        for name, about in self._builtins.items():
            self.builtin_combo.addItem(name, name)
            self.builtin_combo.setItemData(self.builtin_combo.count() - 1, about,
                                           Qt.ItemDataRole.ToolTipRole)
        if current and self.builtin_combo.findData(current) < 0:
            self.builtin_combo.addItem(current, current)
        self._select_builtin(current)

    def _select_builtin(self, name: str) -> None:
        if name and self.builtin_combo.findData(name) < 0:
            self.builtin_combo.addItem(name, name)
        i = self.builtin_combo.findData(name)
        if i >= 0:
            self.builtin_combo.setCurrentIndex(i)
        self.builtin_about.setText(self._builtins.get(name, ""))

    def set_source(self, dataset: str, config_name: str) -> None:
        """Show a config's data source, without announcing it."""
        kind = source_kind(dataset)
        if kind == BUILTIN:
            self._pending_builtin = dataset.split(":", 1)[1]
            self._select_builtin(self._pending_builtin)
        elif kind == FILE:
            self.file_edit.setText(dataset)
        else:
            self.hub_edit.setText(dataset)
            self.hub_config_edit.setText(config_name)
        {BUILTIN: self.builtin_radio, FILE: self.file_radio, HUB: self.hub_radio}[kind].setChecked(True)
        self._enable(kind)

    def _enable(self, kind: str) -> None:
        self.builtin_combo.setEnabled(kind == BUILTIN)
        self.file_edit.setEnabled(kind == FILE)
        self.browse_button.setEnabled(kind == FILE)
        for w in (self.hub_edit, self.hub_config_edit, self.hub_button):
            w.setEnabled(kind == HUB)

    # -- user actions --------------------------------------------------------------------------
    def _on_radio(self, index: int) -> None:
        kind = (BUILTIN, FILE, HUB)[index]
        self._enable(kind)
        if kind == BUILTIN:
            self._commit(BUILTIN)
        elif kind == FILE:
            if self.file_edit.text().strip():
                self._commit(FILE)
            else:
                self.browse()
        else:
            self.hub_edit.setFocus()
            if self.hub_edit.text().strip():
                self._commit(HUB)

    def browse(self) -> None:
        start = self.file_edit.text().strip() or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Choose a data file", start, FILE_FILTER)
        if path:
            self.choose_file(path)

    def choose_file(self, path: str) -> None:
        """Use a file (from the dialog, a drop, or a test) as the data."""
        self.file_radio.setChecked(True)
        self._enable(FILE)
        self.file_edit.setText(path)
        self._commit(FILE)

    def _commit(self, kind: str) -> None:
        if kind == BUILTIN:
            name = self.builtin_combo.currentData() or self._pending_builtin
            if name:
                self._pending_builtin = name
                self.builtin_about.setText(self._builtins.get(name, ""))
                self.chosen.emit(f"builtin:{name}", "")
        elif kind == FILE:
            path = self.file_edit.text().strip()
            if path:
                self.chosen.emit(path, "")
        else:
            name = self.hub_edit.text().strip()
            if name:
                self.chosen.emit(name, self.hub_config_edit.text().strip())
