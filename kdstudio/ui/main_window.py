"""The main window: a list of steps on the left, the pages on the right, menus and a status bar."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QElapsedTimer, QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QWidget,
)

from kdstudio import __version__
from kdstudio.core.config import RunConfig, load_config
from kdstudio.core.demos import DEMOS, demo_config
from kdstudio.core.errors import ConfigError, KDStudioError
from kdstudio.core.events import Stage, Started, Step
from kdstudio.core.runs import resources_dir
from kdstudio.core.tasks import DEFAULT_TASK, Task
from kdstudio.ui.collector import collect_on_gui_thread
from kdstudio.ui.context import AppContext
from kdstudio.ui.dialogs import show_error, show_exception, show_warning
from kdstudio.ui.jobs import JobRunner
from kdstudio.ui.settings import Settings
from kdstudio.ui.startup import start_background_work
from kdstudio.ui.worker import TrainingController

DOCS_URL = "https://github.com/kdstudio/kdstudio#readme"
PAGE_KEYS = ("models", "method", "data", "train", "compare", "runs", "tradeoff")
# The step list's names, known before a page is built (each page class has the same as title).
PAGE_TITLES = {"models": "Models", "method": "Method", "data": "Data", "train": "Train",
               "compare": "Compare", "runs": "Runs", "tradeoff": "Tradeoff"}


class Pages(dict):
    """The pages by key; a page not built yet is built when it is asked for."""

    def __init__(self, build: Any):
        super().__init__()
        self._build = build

    def __missing__(self, key: str) -> QWidget:
        if key not in PAGE_KEYS:
            raise KeyError(key)
        return self._build(key)


def app_icon() -> QIcon:
    return QIcon(str(resources_dir() / "icons" / "kdstudio.svg"))


class MainWindow(QMainWindow):
    def __init__(self, *, demo: bool = False, settings: Settings | None = None,
                 deferred: bool = False):
        """deferred: build only the first page before the window shows, the others one per
        turn of the event loop just after (the app's start-up); tests build all at once."""
        super().__init__()
        collect_on_gui_thread()  # cyclic garbage is freed on this thread only
        self.setObjectName("mainWindow")
        self.setWindowTitle("KD Studio")
        self.setWindowIcon(app_icon())
        self.settings = settings or Settings()
        self.jobs = JobRunner(self)
        self.training = TrainingController(self)
        config = demo_config() if demo else self._last_config() or demo_config()
        self.ctx = AppContext(config, self.settings, self.jobs, self.training, self)
        self.ctx.start_run = self.start_run  # the window owns dialogs and the controller
        self._closing = False
        self._status_clock = QElapsedTimer()
        self._status_clock.start()

        self.steps = QListWidget()
        self.steps.setObjectName("stepList")
        self.steps.setAccessibleName("Steps")
        self.steps.setFixedWidth(170)
        self.steps.setIconSize(QSize(20, 20))
        # A list of steps, read top to bottom: roomy rows, the current step clearly marked.
        self.steps.setStyleSheet(
            "QListWidget#stepList { font-size: 11pt; padding-top: 6px; }"
            "QListWidget#stepList::item { padding: 9px 10px; border-radius: 4px; }"
            "QListWidget#stepList::item:selected { background: #2f6fb3; color: white; }")
        self.stack = QStackedWidget()
        self.stack.setObjectName("pageStack")
        self.pages: dict[str, QWidget] = Pages(self._build_page)
        self._slots: dict[str, QWidget] = {}
        first = "train" if demo else PAGE_KEYS[0]
        for i, key in enumerate(PAGE_KEYS):
            slot = QWidget()
            slot.setObjectName(f"pageSlot_{key}")
            self._slots[key] = slot
            self.stack.addWidget(slot)
            item = QListWidgetItem(f"{i + 1}. {PAGE_TITLES[key]}")
            item.setData(Qt.ItemDataRole.UserRole, key)
            self.steps.addItem(item)
        for key in ([first] if deferred else PAGE_KEYS):
            self._build_page(key)
        self.steps.currentRowChanged.connect(self._show_row)
        from kdstudio.ui.glossary import watch

        watch(self.stack)  # every technical term a page shows is explained on hover
        # The demo opens where its Start button is; otherwise start at the first step.
        self.steps.setCurrentRow(PAGE_KEYS.index("train") if demo else 0)
        central = QWidget()
        lay = QHBoxLayout(central)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.steps)
        lay.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self._make_menus()
        self.device_label = QLabel("Device: checking...")
        self.device_label.setObjectName("deviceLabel")
        self.activity_label = QLabel("Ready")
        self.activity_label.setObjectName("activityLabel")
        self.statusBar().addWidget(self.activity_label, 1)
        self.statusBar().addPermanentWidget(self.device_label)

        self.ctx.navigate.connect(self.show_page)
        self.ctx.show_setting.connect(self.show_setting)
        self.ctx.run_event.connect(self._on_run_event)
        self.training.failed.connect(lambda title, msg: show_error(self, title, msg))
        self.training.finished.connect(self._on_run_finished)
        self.training.running_changed.connect(self._on_running_changed)
        self.training.paused_changed.connect(lambda p: self.activity_label.setText(
            "Paused" if p else "Training..."))
        self._on_running_changed(False)
        self._restore_geometry()
        if self.settings.warning:
            QTimer.singleShot(0, lambda: show_warning(self, "Settings were reset", self.settings.warning))
        if deferred:  # the other pages once the window has drawn itself, one per turn
            QTimer.singleShot(40, self._build_next_page)
        start_background_work(self.jobs, self.device_label.setText)

    # -- construction ------------------------------------------------------------------------
    @staticmethod
    def _page_class(key: str) -> type:
        if key == "models":
            from kdstudio.ui.pages.models.page import ModelsPage as cls
        elif key == "method":
            from kdstudio.ui.pages.method.page import MethodPage as cls
        elif key == "data":
            from kdstudio.ui.pages.data.page import DataPage as cls
        elif key == "train":
            from kdstudio.ui.pages.train.page import TrainPage as cls
        elif key == "compare":
            from kdstudio.ui.pages.compare.page import ComparePage as cls
        elif key == "runs":
            from kdstudio.ui.pages.runs.page import RunsPage as cls
        else:
            from kdstudio.ui.pages.tradeoff.page import TradeoffPage as cls
        return cls

    def _build_page(self, key: str) -> QWidget:
        """Build one page into its place in the stack (once)."""
        if dict.__contains__(self.pages, key):
            return dict.__getitem__(self.pages, key)
        page = self._page_class(key)(self.ctx)
        dict.__setitem__(self.pages, key, page)
        slot = self._slots.pop(key)
        index = self.stack.indexOf(slot)
        current = self.stack.currentIndex()
        self.stack.insertWidget(index, page)
        self.stack.removeWidget(slot)
        slot.deleteLater()
        self.stack.setCurrentIndex(current)
        if key == "tradeoff":
            from kdstudio.ui.pages.tradeoff.queue import show_on_runs_page

            page.open_run_requested.connect(lambda path: show_on_runs_page(self, path))
            page.unfinished_found.connect(lambda text: self.statusBar().showMessage(text, 20000))
        return page

    def _build_next_page(self) -> None:
        if self._slots:
            self._build_page(next(iter(self._slots)))
            QTimer.singleShot(0, self._build_next_page)

    def _build_all_pages(self) -> None:
        for key in list(self._slots):
            self._build_page(key)

    def _show_row(self, row: int) -> None:
        self._build_page(PAGE_KEYS[row])
        self.stack.setCurrentIndex(row)

    def _make_menus(self) -> None:
        mb = self.menuBar()
        file = mb.addMenu("&File")
        self.act_new = self._action(file, "&New run", self.new_config, QKeySequence.StandardKey.New)
        self._action(file, "&Open config...", self.open_config_dialog, QKeySequence.StandardKey.Open)
        self._action(file, "&Save config...", self.save_config_dialog, QKeySequence.StandardKey.Save)
        self.recent_menu = file.addMenu("Recent runs")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        file.addSeparator()
        self._action(file, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        run = mb.addMenu("&Run")
        self.act_run = self._action(run, "&Run", lambda: self.start_run(), QKeySequence("Ctrl+R"))
        self.act_pause = self._action(run, "&Pause / continue", self.ctx.pause_run, QKeySequence("Ctrl+P"))
        self.act_stop = self._action(run, "&Stop (keep a checkpoint)", self.ctx.stop_run,
                                     QKeySequence("Ctrl+."))
        run.addSeparator()
        self.demo_menu = run.addMenu("Run a built-in &demo")
        self.demo_menu.setObjectName("demoMenu")
        self.demo_actions: dict[str, QAction] = {}
        for task in DEMOS:
            act = self._action(self.demo_menu, task.demo_menu, lambda t=task: self.load_demo(t))
            act.setObjectName(f"demo_{task.name}")
            self.demo_actions[task.name] = act

        view = mb.addMenu("&View")
        for i, key in enumerate(PAGE_KEYS):
            self._action(view, PAGE_TITLES[key], lambda k=key: self.show_page(k),
                         QKeySequence(f"Ctrl+{i + 1}"))

        help_ = mb.addMenu("&Help")
        self._action(help_, "&Documentation", self.open_docs, QKeySequence.StandardKey.HelpContents)
        self._action(help_, "&About KD Studio", self.about)

    def _action(self, menu: Any, text: str, slot: Any, shortcut: Any = None) -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(shortcut)
        act.triggered.connect(lambda checked=False: slot())
        menu.addAction(act)
        return act

    # -- pages and configs ---------------------------------------------------------------------
    def show_page(self, key: str) -> None:
        self.steps.setCurrentRow(PAGE_KEYS.index(key))

    def current_page_key(self) -> str:
        return PAGE_KEYS[self.stack.currentIndex()]

    def show_setting(self, setting: str) -> bool:
        """Switch to the page with the control of ``setting`` ("method.balance"), unfold its
        section and focus it; False (and a status-bar note) when no page shows it."""
        from kdstudio.ui.widgets.reveal import find_control, reveal

        self._build_all_pages()
        for key, page in self.pages.items():
            control = find_control(page, setting)
            if control is not None:
                self.show_page(key)
                if reveal(control):
                    return True
                self.statusBar().showMessage(
                    f"The setting {setting} is not used with the current task and method.", 15000)
                return False
        section = setting.split(".", 1)[0]
        self.show_page({"training": "train", "evaluation": "train", "data": "data",
                        "student": "models"}.get(section, "method"))
        self.statusBar().showMessage(
            f"The setting {setting} has no control on this page; set it in the run's config "
            "(File > Save config, edit the TOML, then open it).", 20000)
        return False

    def new_config(self) -> None:
        from kdstudio.core.config import default_config

        self.ctx.replace_config(default_config(self.ctx.config.task))
        self.show_page("models")

    def load_demo(self, task: str | Task = DEFAULT_TASK) -> bool:
        """Load a built-in demo's config and show the Train page; a missing demo is a dialog."""
        try:
            cfg = demo_config(task)
        except KDStudioError as exc:
            show_error(self, "Demo not available", str(exc))
            return False
        self.ctx.replace_config(cfg)
        self.show_page("train")
        return True

    def open_config_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open run config", self.settings["last_folder"],
                                              "Run configs (*.toml);;All files (*)")
        if path:
            self.open_config(path)

    def open_config(self, path: str) -> bool:
        try:
            cfg = load_config(path)
        except KDStudioError as exc:
            show_exception(self, exc)
            return False
        self.settings["last_folder"] = str(Path(path).parent)
        self.settings.push_recent("recent_configs", str(path))
        self.ctx.replace_config(cfg)
        return True

    def save_config_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save run config",
                                              str(Path(self.settings["last_folder"] or Path.home()) / "run.toml"),
                                              "Run configs (*.toml)")
        if path:
            try:
                self.ctx.config.save(path)
            except OSError as exc:
                show_error(self, "Could not save the config", f"'{path}' could not be written: {exc}.")
                return
            self.settings["last_folder"] = str(Path(path).parent)
            self.statusBar().showMessage(f"Saved {path}", 5000)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        runs = [r for r in self.settings["recent_runs"] if Path(r).exists()]
        if not runs:
            act = self.recent_menu.addAction("(no recent runs)")
            act.setEnabled(False)
        for r in runs:
            self.recent_menu.addAction(Path(r).name, lambda p=r: (self.ctx.open_run(p), self.show_page("runs")))

    # -- running -------------------------------------------------------------------------------
    def start_run(self, resume: Path | None = None) -> None:
        if self.training.is_running():
            show_error(self, "A run is already in progress",
                       "Stop the current run, or wait for it to finish, before starting another.")
            return
        self._build_all_pages()  # every page follows the run from its start
        if resume is None:
            try:
                self.ctx.config.validate()
            except ConfigError as exc:
                show_exception(self, exc)
                return
        for key in ("teacher", "student"):
            name = getattr(self.ctx.config, key).name
            if name:
                self.settings[f"last_{key}"] = name
        self.settings["last_dataset"] = self.ctx.config.data.dataset
        self.settings["first_start_done"] = True
        # The run gets its own copy: the pages may go on editing ctx.config meanwhile.
        self.training.start(copy.deepcopy(self.ctx.config) if resume is None else None, resume,
                            processes=self.ctx.processes)
        self.ctx.run_started.emit()
        self.show_page("train")

    def _on_run_event(self, e: Any) -> None:
        if isinstance(e, Stage):
            self.activity_label.setText(f"{e.name.capitalize()}... {e.detail}")
        elif isinstance(e, Step):
            # Fast runs send many steps a second; a status-bar relayout for each would add up.
            if e.step == e.total_steps or self._status_clock.elapsed() > 250:
                self._status_clock.restart()
                self.activity_label.setText(f"Training: step {e.step} of {e.total_steps}")
        elif isinstance(e, Started):
            self.settings.push_recent("recent_runs", e.run_dir)

    def _on_run_finished(self, result: Any) -> None:
        status = getattr(result, "status", "failed")
        self.activity_label.setText({"finished": "Run finished", "stopped": "Run stopped (checkpoint saved)"}
                                    .get(status, "Run failed"))
        self.ctx.run_finished.emit(result)
        if self._closing:
            self.close()

    def _on_running_changed(self, running: bool) -> None:
        self.act_run.setEnabled(not running)
        self.act_pause.setEnabled(running)
        self.act_stop.setEnabled(running)
        self.act_new.setEnabled(not running)
        if running:
            self.activity_label.setText("Starting...")

    # -- help ----------------------------------------------------------------------------------
    def open_docs(self) -> None:
        readme = Path(__file__).resolve().parents[2] / "README.md"
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(readme)) if readme.exists() else QUrl(DOCS_URL))

    def about(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, "About KD Studio",
                          f"<b>KD Studio {__version__}</b><br><br>Knowledge distillation you can see: "
                          "train a small student model to imitate a large teacher, and measure what "
                          "it keeps (quality) and what it saves (size, memory, speed).",
                          QMessageBox.StandardButton.Ok, self)
        box.setObjectName("aboutDialog")
        box.open()

    # -- window state --------------------------------------------------------------------------
    def _last_config_path(self) -> Path:
        return self.settings.path.parent / "last-config.toml"

    def _last_config(self) -> RunConfig | None:
        """The config the app was closed with; the first start (or a bad file) gets the demo."""
        if not self.settings["first_start_done"]:
            return None
        try:
            return load_config(self._last_config_path())
        except KDStudioError:
            return None

    def _restore_geometry(self) -> None:
        geo = self.settings["geometry"]
        if geo:
            self.restoreGeometry(QByteArray.fromBase64(geo.encode()))
        else:
            self.resize(1280, 820)

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.training.is_running() and not self._closing:
            answer = QMessageBox.question(
                self, "Stop the run?",
                "A run is in progress. Stop it and close? It stops after the current step and "
                "keeps a checkpoint, so you can resume it later from the Runs page.")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            self._closing = True
            self.activity_label.setText("Stopping the run and saving a checkpoint...")
            self.training.stop()
            event.ignore()  # closes for real when the run reports finished
            return
        if self.training.is_running():
            event.ignore()
            return
        self.settings["geometry"] = bytes(self.saveGeometry().toBase64()).decode()
        self.settings["first_start_done"] = True
        try:
            self.settings.save()
            self.ctx.config.save(self._last_config_path())
        except OSError:
            pass  # never block closing on a settings write
        self.jobs.wait(2000)
        event.accept()
