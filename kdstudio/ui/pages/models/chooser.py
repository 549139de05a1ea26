"""Choose a teacher or student: built-in, Hub id, local folder (or, for the student, derived).

The chooser loads what the user picks in a background job (downloading a Hub id with a
progress bar and a Cancel button), writes the name into the run config only once it
loaded, and hands the inspection to the page. It never imports torch itself: the first
job does, and ``set_catalog`` is called once the built-in list is known.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.events import Progress
from kdstudio.ui.dialogs import show_error, show_exception, show_warning
from kdstudio.ui.jobs import LatestJob
from kdstudio.ui.pages.models.sources import (
    MODE_LABELS,
    MODE_TIPS,
    MODES,
    looks_like_path,
    short_name,
)


class ModelChooser(QGroupBox):
    """One side of the Models page. Emits ``inspected(ModelInspection)`` after a load,
    ``failed()`` when a load did not work (``kept_previous()`` when the model loaded before
    still holds), and ``derived()`` when the student is derived."""

    inspected = Signal(object)
    failed = Signal()
    derived = Signal()
    kept_previous = Signal()  # a new choice failed to load; the previous one still holds
    busy_changed = Signal(bool)

    def __init__(self, ctx: Any, role: str, parent: QWidget | None = None):
        super().__init__("Teacher: the large model that knows" if role == "teacher"
                         else "Student: the small model that learns", parent)
        self.ctx, self.role = ctx, role
        self.Role = role.capitalize()
        self.setObjectName(f"{role}Chooser")
        self.catalog: dict[str, tuple] = {}
        self.aliases: dict[str, str] = {}
        self._load = LatestJob(ctx.jobs)
        self._user_load = False
        self.loaded_name: str | None = None  # the name the shown inspection belongs to

        lay = QVBoxLayout(self)
        lay.setSpacing(8)
        modes_row = QGridLayout()  # two columns, so each side stays narrow
        modes_row.setHorizontalSpacing(16)
        self.mode_group = QButtonGroup(self)
        self.mode_buttons: dict[str, QRadioButton] = {}
        for mode in MODES:
            if mode == "derived" and role == "teacher":
                continue
            b = QRadioButton(MODE_LABELS[mode])
            b.setObjectName(f"{role}Mode_{mode}")
            b.setAccessibleName(f"{self.Role} source: {MODE_LABELS[mode]}")
            b.setToolTip(MODE_TIPS[mode])
            self.mode_group.addButton(b)
            i = len(self.mode_buttons)
            modes_row.addWidget(b, i // 2, i % 2)
            self.mode_buttons[mode] = b
            b.toggled.connect(lambda on, m=mode: on and self._mode_chosen(m))
        modes_row.setColumnStretch(2, 1)
        lay.addLayout(modes_row)

        self.stack = QStackedWidget()
        self.pages: dict[str, QWidget] = {}
        self._build_inputs()
        lay.addWidget(self.stack)

        self.trust = QCheckBox("Allow this model's own Python code (trust_remote_code)")
        self.trust.setObjectName(f"{role}TrustRemoteCode")
        self.trust.setAccessibleName(f"{self.Role}: trust remote code")
        self.trust.setToolTip("Some Hub models ship Python code that must run to load them. "
                              "Only turn this on for models whose source you trust.")
        self.trust.toggled.connect(self._trust_toggled)
        trust_row = QHBoxLayout()
        trust_row.addWidget(self.trust, 1)
        trust_row.addWidget(self.load_button)
        lay.addLayout(trust_row)

        progress_row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setObjectName(f"{role}Progress")
        self.progress.setAccessibleName(f"{self.Role} loading progress")
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName(f"{role}CancelButton")
        self.cancel_button.setAccessibleName(f"Cancel loading the {role}")
        self.cancel_button.clicked.connect(self.cancel)
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)
        self.progress_box = QWidget()
        self.progress_box.setLayout(progress_row)
        progress_row.setContentsMargins(0, 0, 0, 0)
        self.progress_box.hide()
        lay.addWidget(self.progress_box)

        self.status = QLabel("Getting ready...")
        self.status.setObjectName(f"{role}Status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.status)
        self.setEnabled(False)  # until the built-in list (and torch) is ready

    # -- construction ----------------------------------------------------------------------
    def _build_inputs(self) -> None:
        r, R = self.role, self.Role
        if r == "student":
            w = self.derived_text = QLabel("The teacher's design with fewer layers, starting "
                                           "from the teacher's own layers. Pick the layers below.")
            w.setObjectName("derivedStudentText")
            w.setWordWrap(True)
            self._add_page("derived", w)

        page = QWidget()
        form = QFormLayout(page)
        form.setContentsMargins(0, 0, 0, 0)
        self.builtin_combo = QComboBox()
        self.builtin_combo.setObjectName(f"{r}BuiltinCombo")
        self.builtin_combo.setAccessibleName(f"{R} built-in model")
        self.builtin_combo.activated.connect(lambda _i: self.commit())
        self.builtin_about = QLabel()
        self.builtin_about.setWordWrap(True)
        form.addRow("Model:", self.builtin_combo)
        form.addRow("", self.builtin_about)
        self._add_page("builtin", page)

        page = QWidget()
        form = QFormLayout(page)
        form.setContentsMargins(0, 0, 0, 0)
        self.hub_edit = QLineEdit()
        self.hub_edit.setObjectName(f"{r}HubEdit")
        self.hub_edit.setAccessibleName(f"{R} Hugging Face Hub id")
        self.hub_edit.setPlaceholderText("e.g. bert-base-uncased or owner/model-name")
        self.hub_edit.returnPressed.connect(self.commit)
        self.revision_edit = QLineEdit()
        self.revision_edit.setObjectName(f"{r}RevisionEdit")
        self.revision_edit.setAccessibleName(f"{R} Hub revision")
        self.revision_edit.setPlaceholderText("main (optional: a branch, tag or commit)")
        self.revision_edit.returnPressed.connect(self.commit)
        form.addRow("Model id:", self.hub_edit)
        form.addRow("Revision:", self.revision_edit)
        self._add_page("hub", page)

        page = QWidget()
        form = QFormLayout(page)
        form.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.folder_edit = QLineEdit()
        self.folder_edit.setObjectName(f"{r}FolderEdit")
        self.folder_edit.setAccessibleName(f"{R} model folder")
        self.folder_edit.setPlaceholderText("A folder written by save_pretrained")
        self.folder_edit.setAcceptDrops(False)  # the page takes folder drops
        self.folder_edit.returnPressed.connect(self.commit)
        self.browse_button = QPushButton("Browse...")
        self.browse_button.setObjectName(f"{r}BrowseButton")
        self.browse_button.setAccessibleName(f"Choose the {r} folder")
        self.browse_button.clicked.connect(self.browse)
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.browse_button)
        form.addRow("Folder:", row)
        self._add_page("folder", page)

        self.load_button = QPushButton(f"Load {r}")
        self.load_button.setObjectName(f"{r}LoadButton")
        self.load_button.setAccessibleName(f"Load the {r}")
        self.load_button.setToolTip("Read the model's design and size (a Hub id is downloaded "
                                    "first).")
        self.load_button.clicked.connect(self.commit)

    def _add_page(self, mode: str, widget: QWidget) -> None:
        self.pages[mode] = widget
        self.stack.addWidget(widget)

    def set_catalog(self, models: dict[str, tuple], aliases: dict[str, str]) -> None:
        self.catalog, self.aliases = models, aliases
        self.builtin_combo.clear()
        for name, entry in models.items():
            self.builtin_combo.addItem(name, name)
            self.builtin_combo.setItemData(self.builtin_combo.count() - 1, entry[2],
                                           Qt.ItemDataRole.ToolTipRole)
        self.setEnabled(True)

    # -- reading and showing the chosen model -------------------------------------------------
    def mode(self) -> str:
        for mode, b in self.mode_buttons.items():
            if b.isChecked():
                return mode
        return "builtin"

    def typed_name(self) -> str:
        mode = self.mode()
        if mode == "builtin":
            return self.builtin_combo.currentData() or ""
        if mode == "hub":
            return self.hub_edit.text().strip()
        if mode == "folder":
            return self.folder_edit.text().strip()
        return ""

    def kind_of(self, name: str) -> str:
        if not name:
            return "derived" if self.role == "student" else "builtin"
        if self.aliases.get(name, name) in self.catalog:
            return "builtin"
        return "folder" if looks_like_path(name) else "hub"

    def show_name(self, name: str, revision: str, trust: bool) -> None:
        """Fill the inputs from the config without loading anything."""
        kind = self.kind_of(name)
        self._set_mode(kind)
        if kind == "builtin" and name:
            index = self.builtin_combo.findData(self.aliases.get(name, name))
            self.builtin_combo.setCurrentIndex(index)
        elif kind == "hub":
            self.hub_edit.setText(name)
            self.revision_edit.setText(revision)
        elif kind == "folder":
            self.folder_edit.setText(name)
        self._show_about()
        self.trust.blockSignals(True)
        self.trust.setChecked(trust)
        self.trust.blockSignals(False)
        self._mode_widgets(kind)

    def _set_mode(self, mode: str) -> None:
        b = self.mode_buttons[mode]
        b.blockSignals(True)
        b.setChecked(True)
        b.blockSignals(False)
        self.stack.setCurrentWidget(self.pages[mode])
        self._mode_widgets(mode)

    def _mode_widgets(self, mode: str) -> None:
        self.trust.setVisible(mode != "derived")
        self.load_button.setVisible(mode in ("hub", "folder"))

    def _show_about(self) -> None:
        entry = self.catalog.get(self.builtin_combo.currentData() or "")
        self.builtin_about.setText(entry[2] if entry else "")

    def _mode_chosen(self, mode: str) -> None:
        self.stack.setCurrentWidget(self.pages[mode])
        self._mode_widgets(mode)
        last = self.ctx.settings[f"last_{self.role}"]
        if mode == "folder" and not self.folder_edit.text() and last and looks_like_path(last):
            self.folder_edit.setText(last)
        if mode == "hub" and not self.hub_edit.text() and last and self.kind_of(last) == "hub":
            self.hub_edit.setText(last)
        if mode in ("derived", "builtin"):
            self.commit()  # nothing to type: the choice itself is the commit
        else:
            self.status.setText("Type the model id and press Load." if mode == "hub" else
                                "Choose a folder (Browse..., or drop one onto the page), then "
                                "press Load.")

    def _trust_toggled(self, on: bool) -> None:
        self.ctx.set_value(self.role, "trust_remote_code", on)
        if on:
            show_warning(self, "Model code will run",
                         f"The {self.role}'s own Python code will run on this computer when it "
                         "loads. Only allow this for models from a source you trust; turn it off "
                         "again for any other model.")

    def browse(self) -> None:
        start = self.folder_edit.text() or self.ctx.settings["last_folder"] or str(Path.home())
        path = QFileDialog.getExistingDirectory(self, f"Choose the {self.role} model folder", start)
        if path:
            self.use_folder(path)

    def use_folder(self, path: str) -> None:
        """A folder from the file dialog or a drop: show it and load it."""
        self._set_mode("folder")
        self.folder_edit.setText(path)
        self.ctx.settings["last_folder"] = str(Path(path).parent)
        self.commit()

    # -- loading ---------------------------------------------------------------------------
    def commit(self) -> None:
        """The user chose a model: load it, and write it to the config once it loads."""
        mode = self.mode()
        if mode == "derived":
            self.cancel(quiet=True)
            self.ctx.set_value("student", "name", "")
            self.loaded_name = ""
            self.status.setText("")
            self.derived.emit()
            return
        name = self.typed_name()
        if not name:
            what = "model id" if mode == "hub" else "folder"
            show_error(self, f"No {self.role} {what} given",
                       f"Type the {self.role}'s {what} first, then press Load.")
            return
        if mode == "builtin":
            self._show_about()
        revision = self.revision_edit.text().strip() if mode == "hub" else ""
        self.load(name, revision, user=True)

    def load(self, name: str, revision: str = "", *, user: bool = False) -> None:
        """Inspect ``name`` for the config's task in a job; stale results are dropped."""
        self.cancel(quiet=True)
        task, role = self.ctx.config.task, self.role
        trust = self.trust.isChecked()
        self._user_load = user

        def job(report: Any, cancel: Any) -> Any:
            from kdstudio.core.plan.shapes import inspect_model

            return inspect_model(name, task, revision=revision, trust_remote_code=trust,
                                 on_event=report, stop=cancel, role=role)

        self._set_busy(True, f"Loading {name}...")
        self._load.submit(job, lambda insp: self._done(name, revision, insp),
                          lambda exc: self._error(name, exc), on_progress=self._progress)

    def _progress(self, event: Any) -> None:
        if not isinstance(event, Progress):
            return
        if event.total:
            self.progress.setRange(0, int(event.total))
            self.progress.setValue(int(event.current))
            self.progress.setFormat(f"Downloading: %v of %m {event.unit}")
        else:
            self.progress.setRange(0, 0)

    def _done(self, name: str, revision: str, insp: Any) -> None:
        self._set_busy(False, "")
        self.loaded_name = name
        self.ctx.set_value(self.role, "name", name)
        self.ctx.set_value(self.role, "revision", revision)
        if self._user_load:
            self.ctx.settings[f"last_{self.role}"] = name
        self.status.setText(f"Loaded {short_name(name)} for {insp.info['task']}.")
        self.inspected.emit(insp)

    def _error(self, name: str, exc: BaseException) -> None:
        from kdstudio.core.errors import KDStudioError, StoppedError

        self._set_busy(False, "")
        if isinstance(exc, StoppedError):
            self.status.setText("Cancelled.")
            return
        # Bringing back the run's model below starts a load of its own, which is not the
        # user's: remember whether this one was, for the dialog.
        user = self._user_load
        section = getattr(self.ctx.config, self.role)
        now = section.name
        if user and now != name and (now or self.role == "student"):
            # The config is unchanged: keep showing (or bring back) the model the run still
            # uses, and let the dialog say what was wrong with the new choice.
            still = short_name(now) if now else "a student derived from the teacher"
            self.status.setText(f"Could not load {short_name(name)}; the run still uses {still}.")
            if self.loaded_name == now:
                self.kept_previous.emit()
            elif not now:
                self.loaded_name = ""
                self.derived.emit()
            elif self.kind_of(now) != "hub":
                self.load(now, section.revision)
            else:
                self.loaded_name = None
                self.failed.emit()
        else:
            self.status.setText(f"Could not load {short_name(name)}." if user else
                                f"Could not load {short_name(name)}: {exc}")
            self.loaded_name = None
            self.failed.emit()
        if user:
            if isinstance(exc, KDStudioError):
                show_error(self, f"{self.Role} could not be loaded", str(exc))
            else:
                show_exception(self, exc)

    def cancel(self, quiet: bool = False) -> None:
        if self._load.cancel():  # whatever it returns now is stale
            self._set_busy(False, "" if quiet else "Cancelled.")

    def is_busy(self) -> bool:
        return self._load.busy()

    def _set_busy(self, busy: bool, text: str) -> None:
        self.progress_box.setVisible(busy)
        self.progress.setRange(0, 0)
        self.progress.setFormat("")
        if text or not busy:
            self.status.setText(text)
        self.busy_changed.emit(busy)
