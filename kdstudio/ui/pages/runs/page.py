"""The Runs page: every past run in a sortable table, its figures and curves, and what to do with it.

Reading the run store, loading curves, exporting a student and deleting a run all happen in
background jobs (ctx.jobs); the table refreshes when a run starts or ends.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.events import Started
from kdstudio.ui.context import AppContext
from kdstudio.ui.dialogs import show_error
from kdstudio.ui.pages.base import Page
from kdstudio.ui.pages.runs.actions import RunActionsMixin
from kdstudio.ui.pages.runs.details import RunDetailsPanel, load_details
from kdstudio.ui.pages.runs.model import (
    COL,
    PATH_ROLE,
    RESUMABLE,
    RunRow,
    RunsSortProxy,
    RunsTableModel,
    load_run_rows,
)
from kdstudio.ui.pages.runs.ops import same_path

EXPORT_TIP = ("Export the trained student: a PyTorch folder, ONNX (full precision, int8 or fp16) or "
              "safetensors fp16, checked against the original.")
EMPTY_TEXT = ("<p style='font-size: 13pt;'><b>No runs yet</b></p>"
              "<p>Every distillation you run is kept here, with its figures, curves and student model.</p>"
              "<p>To make a first run, choose a teacher and a student on the <b>Models</b> page and press "
              "<b>Run</b> on the <b>Train</b> page, or pick <b>Run &#9656; Run a built-in demo</b> "
              "from the menu.</p>")


class RunsPage(RunActionsMixin, Page):
    """Past runs: a sortable table, the selected runs' figures and curves, and actions on them."""

    title = "Runs"

    rows_loaded = Signal()           # the table was filled from the run store
    details_shown = Signal(str)      # the detail panel shows this run folder
    export_done = Signal(str)        # a student was copied or exported to this folder
    runs_deleted = Signal(list)      # these run folders were deleted

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(ctx, "runs", parent)
        self.model = RunsTableModel(self)
        self.proxy = RunsSortProxy(self)
        self.proxy.setSourceModel(self.model)
        self.overlay_dialog = None
        self.diff_dialog = None
        self._loading = self._reload = False
        self._details_key = ""
        self._make_actions()
        self._build()
        ctx.training.running_changed.connect(lambda _running: self._update_actions())
        ctx.run_finished.connect(self._on_run_finished)
        ctx.run_event.connect(self._on_run_event)
        # The store is read when the page is first shown (showEvent), not at start-up.

    # -- construction --------------------------------------------------------------------------
    def _action(self, key: str, text: str, tip: str, slot: Any, shortcut: Any = None) -> QAction:
        act = QAction(text, self)
        act.setObjectName(f"{key}Action")
        act.setToolTip(tip)
        act.setStatusTip(tip)
        if shortcut is not None:
            act.setShortcut(shortcut)
            act.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(act)
        act.triggered.connect(lambda checked=False: slot())
        return act

    def _make_actions(self) -> None:
        a = self._action
        self.act_open = a("open", "Open", "Show this run's curves and log on the Train page.",
                          self.open_selected, QKeySequence(Qt.Key.Key_Return))
        self.act_overlay = a("overlay", "Overlay curves", "Draw the loss or headline metric of the "
                             "selected runs on one plot (select two or more).", self.overlay_selected)
        self.act_diff = a("diff", "Compare configs", "List the settings that differ between the two "
                          "selected runs.", self.diff_selected)
        self.act_clone = a("clone", "Clone config", "Start a new run with this run's settings "
                           "(opens the Models page).", self.clone_selected)
        self.act_resume = a("resume", "Resume", "Continue a stopped or interrupted run from its last "
                            "checkpoint.", self.resume_selected)
        self.act_export = a("export", "Export student...", EXPORT_TIP, self.export_selected)
        self.act_folder = a("folder", "Open folder", "Show the run's folder in your file manager.",
                            self.open_folder_selected)
        self.act_delete = a("delete", "Delete...", "Delete the selected runs and everything in their "
                            "folders (asks first).", self.delete_selected, QKeySequence.StandardKey.Delete)
        self.act_refresh = a("refresh", "Refresh", "Read the run store again.", self.refresh,
                             QKeySequence.StandardKey.Refresh)
        self.act_caches = a("caches", "Teacher caches...", "The teachers' answers saved on disk "
                            "for runs and sweeps to reuse: their size, which runs used each, "
                            "and deleting them.", self.show_caches)
        self.item_actions = [self.act_open, self.act_overlay, self.act_diff, self.act_clone, self.act_resume,
                             self.act_export, self.act_folder, self.act_delete]

    def _button(self, act: QAction, name: str) -> QToolButton:
        b = QToolButton()
        b.setDefaultAction(act)
        b.setObjectName(name)
        b.setAccessibleName(act.text().rstrip("."))
        b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        b.setMinimumHeight(28)
        return b

    def _build(self) -> None:
        from kdstudio.core.runs import runs_dir

        heading = self.heading("Runs")
        self.where_label = QLabel(f"Every distillation run on this computer, kept in {runs_dir()}")
        self.where_label.setObjectName("runsWhere")
        self.where_label.setStyleSheet("color: #666666;")
        self.where_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = QHBoxLayout()
        titles = QVBoxLayout()
        titles.setSpacing(2)
        titles.addWidget(heading)
        titles.addWidget(self.where_label)
        top.addLayout(titles, 1)
        top.addWidget(self._button(self.act_caches, "cachesButton"), 0, Qt.AlignmentFlag.AlignBottom)
        top.addWidget(self._button(self.act_refresh, "refreshButton"), 0, Qt.AlignmentFlag.AlignBottom)

        self.action_bar = QWidget()
        self.action_bar.setObjectName("runsActionBar")
        bar = QHBoxLayout(self.action_bar)
        bar.setContentsMargins(0, 0, 0, 0)
        bar.setSpacing(6)
        names = ["openButton", "overlayButton", "diffButton", "cloneButton", "resumeButton",
                 "exportButton", "folderButton", "deleteButton"]
        self.buttons = {n: self._button(act, n) for n, act in zip(names, self.item_actions)}
        for n in names[:-1]:
            bar.addWidget(self.buttons[n])
        bar.addStretch(1)
        bar.addWidget(self.buttons["deleteButton"])

        self.table = QTableView()
        self.table.setObjectName("runsTable")
        self.table.setAccessibleName("Past runs")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL["created"], Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(26)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.doubleClicked.connect(lambda _index: self.open_selected())
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._on_selection())
        head = self.table.horizontalHeader()
        head.setHighlightSections(False)
        # Every column as wide as its text: stretching name, teacher and student left them the
        # crumbs of a wide headline column ("Na…"); a narrow window scrolls the table instead.
        # No stretched last section either: with no room left Qt gives it a default 100 px,
        # whatever its text ("11.00x (11.00–866.60)").
        head.setStretchLastSection(False)
        head.setMinimumSectionSize(64)
        head.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

        self.details = RunDetailsPanel()
        split = self.make_splitter(Qt.Orientation.Vertical, "runsSplitter", [self.table, self.details],
                                   stretch=(2, 3), sizes=(260, 420))

        self.empty = QWidget()
        self.empty.setObjectName("runsEmpty")
        empty_text = QLabel(EMPTY_TEXT)
        empty_text.setObjectName("runsEmptyText")
        empty_text.setWordWrap(True)
        empty_text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        empty_text.setFixedWidth(560)
        empty_text.setMinimumHeight(empty_text.heightForWidth(560))
        setup = QPushButton("Set up a first run")
        setup.setObjectName("setupRunButton")
        setup.setAccessibleName("Set up a first run")
        setup.setToolTip("Go to the Models page to choose a teacher and a student.")
        setup.clicked.connect(lambda: self.ctx.navigate.emit("models"))
        el = QVBoxLayout(self.empty)
        el.addStretch(1)
        el.addWidget(empty_text, 0, Qt.AlignmentFlag.AlignHCenter)
        el.addSpacing(8)
        el.addWidget(setup, 0, Qt.AlignmentFlag.AlignHCenter)
        el.addStretch(2)

        self.body = QStackedWidget()
        self.body.addWidget(self.empty)
        self.body.addWidget(split)
        self.message = QLabel()
        self.message.setObjectName("runsMessage")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setStyleSheet("color: #444444;")
        self.export_progress = QProgressBar()
        self.export_progress.setObjectName("exportProgress")
        self.export_progress.setAccessibleName("Export progress")
        self.export_progress.setFixedWidth(220)
        self.export_progress.setTextVisible(False)
        self.export_progress.hide()
        bottom = QHBoxLayout()
        bottom.addWidget(self.message, 1)
        bottom.addWidget(self.export_progress, 0, Qt.AlignmentFlag.AlignVCenter)

        lay = self.page_layout(None, margins=(16, 12, 16, 10), spacing=8)
        lay.addLayout(top)
        lay.addWidget(self.action_bar)
        lay.addWidget(self.body, 1)
        lay.addLayout(bottom)
        self._update_actions()

    def show_caches(self) -> None:
        from kdstudio.ui.pages.runs.caches import TeacherCachesDialog

        self.caches_dialog = TeacherCachesDialog(self)
        self.caches_dialog.show()

    # -- reading the store ---------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the run store in a job; a refresh asked for meanwhile runs right after it."""
        if self._loading:
            self._reload = True
            return
        self._loading = True
        self.ctx.jobs.submit(load_run_rows, self._on_rows, self._on_rows_error)

    def _on_rows(self, rows: list[RunRow]) -> None:
        self._loading = False
        if self._reload:
            self._reload = False
            self.refresh()
            return
        keep = set(self.selected_paths())
        self.model.set_rows(rows)
        self.body.setCurrentIndex(1 if rows else 0)
        self.action_bar.setVisible(bool(rows))
        self.select_paths(keep)
        self._on_selection(reload=True)
        self.rows_loaded.emit()

    def _on_rows_error(self, exc: BaseException) -> None:
        self._loading = False
        show_error(self, "Could not read the runs", f"The run store could not be read: {exc}.")

    def _on_run_finished(self, _result: Any) -> None:
        self.message.clear()  # e.g. "Resuming ..." is over
        self.refresh()

    def _on_run_event(self, event: Any) -> None:
        if isinstance(event, Started):
            self.refresh()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not event.spontaneous():
            self.refresh()

    # -- selection -----------------------------------------------------------------------------
    def selected_rows(self) -> list[RunRow]:
        """The selected runs, in table order."""
        idx = sorted(self.table.selectionModel().selectedRows(), key=lambda i: i.row())
        return [self.model.row_at(self.proxy.mapToSource(i).row()) for i in idx]

    def selected_paths(self) -> list[str]:
        return [str(r.path) for r in self.selected_rows()]

    def select_paths(self, paths: Any) -> None:
        """Select these runs (for tests and for keeping the selection across refreshes)."""
        wanted = {str(p) for p in paths}
        sel = self.table.selectionModel()
        sel.clearSelection()
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        for r in range(self.proxy.rowCount()):
            index = self.proxy.index(r, 0)
            if index.data(PATH_ROLE) in wanted:
                sel.select(index, flags)

    def _is_active(self, row: RunRow) -> bool:
        """Training right now (in this window, or in another process)."""
        if row.status == "running":
            return True
        return self.ctx.training.is_running() and same_path(row.path, self.ctx.current_run_dir)

    def _update_actions(self) -> None:
        rows = self.selected_rows()
        one = rows[0] if len(rows) == 1 else None
        busy = self.ctx.training.is_running()
        self.act_open.setEnabled(one is not None)
        self.act_overlay.setEnabled(len(rows) >= 2)
        self.act_diff.setEnabled(len(rows) == 2)
        self.act_clone.setEnabled(one is not None)
        self.act_resume.setEnabled(one is not None and one.resumable and not busy)
        self.act_export.setEnabled(one is not None and one.has_student and not self._is_active(one)
                                   and self._exporting is None)
        self.act_folder.setEnabled(one is not None)
        self.act_delete.setEnabled(bool(rows) and not any(self._is_active(r) for r in rows))
        # Say why an action is off when the reason is not obvious from the selection.
        resume_tip = "Continue a stopped or interrupted run from its last checkpoint."
        if one is not None and one.status in RESUMABLE and not one.has_checkpoint:
            resume_tip = "This run stopped before its first checkpoint, so it cannot be resumed."
        elif one is not None and one.resumable and busy:
            resume_tip = "Another run is in progress; resume this one when it ends."
        self.act_resume.setToolTip(resume_tip)
        export_tip = EXPORT_TIP
        if one is not None and not one.has_student:
            export_tip = "This run has no saved student model."
        elif self._exporting is not None:
            export_tip = "A student is being exported; export the next when it has finished."
        self.act_export.setToolTip(export_tip)

    def _on_selection(self, reload: bool = False) -> None:
        """Load what the detail panel shows for the selection (one run, or several side by side)."""
        self._update_actions()
        paths = self.selected_paths()
        if not paths:
            self._details_key = ""
            self.details.clear()
            return
        key = "\n".join(paths)
        if key == self._details_key and not reload:
            return
        self._details_key = key
        self.ctx.jobs.submit(lambda: [load_details(p) for p in paths], lambda items: self._on_details(key, items),
                             lambda exc: self.details.clear(f"The runs' figures could not be read: {exc}"))

    def _on_details(self, key: str, items: list[Any]) -> None:
        rows = self.selected_rows()
        if key != "\n".join(str(r.path) for r in rows):
            return  # the selection moved on while this was loading
        if len(items) == 1:
            self.details.show_details(items[0], rows[0].status)
        else:
            self.details.show_many(items)
        self.details_shown.emit(key)

    def _one(self) -> RunRow | None:
        rows = self.selected_rows()
        return rows[0] if len(rows) == 1 else None

    def context_menu(self) -> QMenu:
        menu = QMenu(self)
        menu.setObjectName("runsContextMenu")
        for act in self.item_actions:
            if act is self.act_delete or act is self.act_folder:
                menu.addSeparator()
            menu.addAction(act)
        return menu

    def _context_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if index.isValid() and not self.table.selectionModel().isRowSelected(index.row(), QModelIndex()):
            self.table.selectRow(index.row())
        self.context_menu().popup(self.table.viewport().mapToGlobal(pos))
