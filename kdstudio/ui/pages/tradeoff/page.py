"""The Tradeoff page: several students of one teacher, one chart of quality against size.

The user ticks students (layer counts derived from the teacher, other models) and an
optional second axis; the page shows how many runs that is and how long they should take,
asks before starting, then runs them one after another (queue.SweepQueue). Each
finished run adds a point to the chart and a row to the table. Sweeps found unfinished on
disk at start-up are offered for resuming. Reading files, estimating and planning all run
in ctx.jobs; only drawing happens on the GUI thread.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.errors import KDStudioError
from kdstudio.core.sweep.queue import Sweep
from kdstudio.ui.context import AppContext
from kdstudio.ui.dialogs import show_error, show_exception
from kdstudio.ui.pages.base import Page
from kdstudio.ui.pages.tradeoff.banner import ResumeBanner
from kdstudio.ui.pages.tradeoff.budget import BudgetBox, advise
from kdstudio.ui.pages.tradeoff.chooser import SweepChooser
from kdstudio.ui.pages.tradeoff.planning import PlanLine, confirm_box, plan_job
from kdstudio.ui.pages.tradeoff.queue import SweepQueue, load_sweep_view
from kdstudio.ui.pages.tradeoff.queue_view import QueueView
from kdstudio.ui.pages.tradeoff.results import TradeoffResults
from kdstudio.ui.pages.tradeoff.setup import SweepSetup
from kdstudio.ui.pages.tradeoff.teacher import TeacherShape
from kdstudio.ui.pages.tradeoff.timing import TimingBar
from kdstudio.ui.widgets.common import named


class TradeoffPage(Page):
    title = "Tradeoff"

    sweeps_loaded = Signal()         # the list of sweeps was read from disk
    results_shown = Signal(str)      # this sweep's queue, chart and table are on show
    plan_ready = Signal(object)      # (planned Sweep, TimeEstimate) before the confirmation
    open_run_requested = Signal(str)  # a point or row was clicked: open this run
    unfinished_found = Signal(str)   # at start-up: a sentence about sweeps left unfinished

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(ctx, "tradeoff", parent)
        self.current: Sweep | None = None
        self.confirm_dialog: QMessageBox | None = None
        self._started_up = False
        self.queue = SweepQueue(ctx, self)
        self.teacher_reader = TeacherShape(ctx, self)
        self._build()
        self._plan_timer = QTimer(self, singleShot=True, interval=400)
        self._plan_timer.timeout.connect(self.update_plan)

        self.setup.changed.connect(self._plan_timer.start)
        self.teacher_reader.read.connect(lambda shape: self.setup.set_teacher_layers(shape.num_layers))
        self.teacher_reader.failed.connect(self._teacher_failed)
        self.budget.propose_requested.connect(self.propose_budget)
        self.budget.use_layers.connect(self.setup.check_layers)
        self.results.point_clicked.connect(self._open_run)
        self.results.exported.connect(self._on_exported)
        self.queue.entry_changed.connect(self._on_entry_changed)
        self.queue.running_changed.connect(lambda _r: self._update_buttons())
        self.queue.done.connect(self._on_queue_done)
        ctx.training.running_changed.connect(lambda _r: self._update_buttons())
        ctx.config_replaced.connect(self._on_config)
        ctx.config_changed.connect(lambda section: self._on_config(section))
        ctx.teacher_info.connect(self._on_teacher_info)
        self.setup.set_base(ctx.config)
        self._update_buttons()
        # After the window is up: unfinished sweeps on disk are offered for resuming.
        QTimer.singleShot(0, self.refresh_sweeps)

    # -- construction --------------------------------------------------------------------------
    def _button(self, text: str, name: str, tip: str, slot: Any) -> QPushButton:
        b = named(QPushButton(text), name, text.rstrip("\u2026"), tip)
        b.setMinimumHeight(30)
        b.clicked.connect(lambda: slot())
        return b

    def _build(self) -> None:
        intro = QLabel("How small can the student get before it stops being good enough? Distill "
                       "several students of one teacher and see the quality each keeps against "
                       "its size and speed.")
        intro.setObjectName("tradeoffIntro")
        intro.setWordWrap(True)
        intro.setStyleSheet("color: #555555;")

        self.banner = ResumeBanner()
        self.banner.resume_requested.connect(self.resume_current)

        self.setup = SweepSetup()
        self.plan_label = PlanLine()
        self.start_button = self._button("Start sweep\u2026", "startSweepButton",
                                         "Show the plan and start the runs, one after another.",
                                         self.start_clicked)
        f = self.start_button.font()
        f.setBold(True)
        self.start_button.setFont(f)
        self.stop_button = self._button("Stop", "stopSweepButton", "Stop the current run after "
                                        "this step (it keeps a checkpoint) and pause the queue.",
                                        self.queue.stop)
        self.resume_button = self._button("Resume", "resumeSweepButton", "Run what is left of the "
                                          "sweep on show; a stopped run continues from its "
                                          "checkpoint.", self.resume_current)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button, 2)
        buttons.addWidget(self.stop_button, 1)
        buttons.addWidget(self.resume_button, 1)
        self.queue_table = QueueView()
        self.queue_table.run_activated.connect(self._open_run)
        self.budget = BudgetBox()

        left = QWidget()
        left.setObjectName("tradeoffControls")
        llay = QVBoxLayout(left)
        llay.setContentsMargins(0, 0, 8, 0)
        llay.setSpacing(8)
        llay.addWidget(self.setup)
        llay.addWidget(self.plan_label)
        llay.addLayout(buttons)
        llay.addWidget(QLabel("<b>Queue</b>"))
        llay.addWidget(self.queue_table, 1)
        llay.addWidget(self.budget)
        scroll = self.scroll_area(left, "tradeoffControlsScroll", min_width=450)

        self.chooser = SweepChooser()
        self.chooser.picked.connect(self.show_sweep)
        self.results = TradeoffResults()
        self.timing = TimingBar(self.ctx)
        self.timing.timed.connect(self._on_timed)
        right = QWidget()
        rlay = QVBoxLayout(right)
        rlay.setContentsMargins(8, 0, 0, 0)
        rlay.addWidget(self.chooser)
        rlay.addWidget(self.timing)
        rlay.addWidget(self.results, 1)

        split = self.make_splitter(Qt.Orientation.Horizontal, "tradeoffSplit", [scroll, right],
                                   stretch=(0, 1), sizes=(470, 900))
        self.message = QLabel()
        self.message.setObjectName("tradeoffMessage")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #444444;")
        lay = self.page_layout("Size and quality", margins=(16, 12, 16, 10), spacing=8)
        lay.addWidget(intro)
        lay.addWidget(self.banner)
        lay.addWidget(split, 1)
        lay.addWidget(self.message)

    # -- the teacher and the base config -------------------------------------------------------
    def _on_config(self, section: str = "") -> None:
        self.setup.set_base(self.ctx.config)
        if section in ("", "teacher", "task"):
            self._read_teacher()
        self._plan_timer.start()

    def _on_teacher_info(self, info: Any) -> None:
        if info and info.get("layers"):
            self.setup.set_teacher_layers(int(info["layers"]))

    def _read_teacher(self) -> None:
        """Count the teacher's layers from its config files (in a job)."""
        self.teacher_reader.refresh(self.ctx.config)

    def _teacher_failed(self, exc: BaseException) -> None:
        self.setup.set_teacher_layers(None, f"The teacher's layers could not be read: "
                                            f"{exc} Other students can still be added.")

    def teacher_shape(self) -> Any:
        return self.teacher_reader.shape_for(self.ctx.config)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not event.spontaneous():
            self._read_teacher()
            self._plan_timer.start()

    # -- planning and starting -----------------------------------------------------------------
    def _plan_job(self) -> Any:
        return plan_job(self.setup, self.ctx.config, self.teacher_shape())

    def update_plan(self) -> None:
        """The number of runs and their time, on the plan line (newest answer only)."""
        self.plan_label.update_plan(self.ctx.jobs, self.setup.students, self._plan_job)

    def start_clicked(self) -> None:
        try:
            self.ctx.config.validate()
            job = self._plan_job()
        except KDStudioError as exc:
            show_exception(self, exc)
            return
        self.start_button.setEnabled(False)
        self.message.setText("Working out the plan\u2026")

        def failed(exc: BaseException) -> None:
            self._update_buttons()
            self.message.clear()
            show_exception(self, exc)

        self.ctx.jobs.submit(job, self._confirm, failed)

    def _confirm(self, result: Any) -> None:
        plan, est = result
        self._update_buttons()
        self.message.clear()
        self.plan_ready.emit(result)
        box = confirm_box(plan, est, self)
        box.finished.connect(lambda _r: self._confirmed(box, plan))
        self.confirm_dialog = box
        box.open()

    def _confirmed(self, box: QMessageBox, plan: Sweep) -> None:
        self.confirm_dialog = None
        if box.clickedButton() is not box.button(QMessageBox.StandardButton.Yes):
            return
        try:
            plan.save()
        except OSError as exc:
            show_error(self, "Could not save the sweep", f"The queue could not be written to "
                                                          f"{plan.folder}: {exc}.")
            return
        self._run(plan)

    def _run(self, sweep: Sweep, retry_failed: bool = False) -> None:
        try:
            self.queue.start(sweep, retry_failed=retry_failed)
        except KDStudioError as exc:
            show_exception(self, exc)
            return
        except OSError as exc:
            show_error(self, "Could not start the sweep", f"The queue in {sweep.folder} could not "
                                                           f"be written: {exc}.")
            return
        same = self.current is not None and self.current.id == sweep.id
        self.current = sweep
        self._show_loaded(sweep, self.results.rows if same else [])
        self.refresh_sweeps(select=sweep.id)
        self.message.setText(f"The sweep is running: {sweep.describe()}. Progress is on the Train "
                             "page; each run lands on the Runs page.")

    def resume_current(self) -> None:
        if self.current is not None:
            self._run(self.current, retry_failed=True)

    # -- the queue -------------------------------------------------------------------------------
    def _on_entry_changed(self, entry: Any) -> None:
        if self.current is not None and self.queue.sweep is not None \
                and self.current.id == self.queue.sweep.id:
            self._fill_queue()
            if self.queue.exporting is entry:
                self.message.setText(f"Exporting {entry.label} as int8 ONNX\u2026")
            elif entry.status == "finished":
                if self.message.text().startswith("Exporting"):
                    self.message.setText(f"The sweep is running: {self.current.describe()}.")
                self.reload_figures()

    def _on_queue_done(self, status: str) -> None:
        sweep = self.current
        text = {"finished": "The sweep finished: every student is on the chart.",
                "stopped": "The sweep is paused. Resume runs what is left; a stopped run "
                           "continues from its checkpoint.",
                "incomplete": "The sweep ended, but some runs failed; the queue says why. "
                              "Resume tries them again."}[status]
        self.message.setText(text)
        self._update_buttons()
        self.refresh_sweeps(select=sweep.id if sweep else None)
        if sweep is not None:
            self.reload_figures()
            if status != "stopped":  # the finished students, timed together in one session
                self.timing.show_for(sweep)
                self.timing.start(only_if_needed=True)

    def _on_timed(self, session: Any) -> None:
        if session is not None:
            self.message.setText("The teacher and the students were timed together: every "
                                 "speed on the chart now comes from that one session.")
        self.reload_figures()

    # -- sweeps on disk --------------------------------------------------------------------------
    def refresh_sweeps(self, select: str | None = None) -> None:
        from kdstudio.core.sweep.queue import list_sweeps

        self.ctx.jobs.submit(list_sweeps, lambda sweeps: self._on_sweeps(sweeps, select),
                             lambda exc: self.message.setText(f"The sweeps could not be read: {exc}"))

    def _on_sweeps(self, sweeps: list[Sweep], select: str | None) -> None:
        keep = select or (self.current.id if self.current else None)
        self.chooser.fill(sweeps)
        if not self._started_up:
            self._started_up = True
            waiting = [s for s in sweeps if s.is_unfinished() and not s.runner_alive()]
            if waiting and not keep:
                keep = waiting[0].id
                n = len(waiting)
                text = (f"{n} sweep{'s' if n > 1 else ''} did not finish; the newest is on the "
                        "Tradeoff page, ready to resume.")
                self.unfinished_found.emit(text)
        ids = [s.id for s in sweeps]
        if keep in ids:
            self.chooser.combo.setCurrentIndex(ids.index(keep))
            if self.current is None or self.current.id != keep:
                self.show_sweep(sweeps[ids.index(keep)].folder)
        elif sweeps and self.current is None:
            self.show_sweep(sweeps[0].folder)
        self.sweeps_loaded.emit()

    def show_sweep(self, folder: Path) -> None:
        """Load a sweep's queue and figures (in a job) and show them."""
        live = self.queue.sweep
        snap = live.copy() if live is not None and live.folder == Path(folder) else None
        self.ctx.jobs.submit(lambda: load_sweep_view(Path(folder), snap),
                             lambda res: self._show_loaded(*res),
                             lambda exc: show_exception(self, exc))

    def reload_figures(self) -> None:
        if self.current is not None:
            self.show_sweep(self.current.folder)

    def _show_loaded(self, sweep: Sweep, rows: list[Any]) -> None:
        live = self.queue.sweep
        # The queue's own object stays the one shown while it runs, so statuses stay live.
        self.current = live if live is not None and live.id == sweep.id else sweep
        self.results.folder = sweep.folder
        self.results.teacher = Path(sweep.base.teacher.name.rstrip("/\\")).name
        self.results.set_rows(rows, sweep.axis)
        self._fill_queue()
        self._update_buttons()
        self.results_shown.emit(sweep.id)

    def _fill_queue(self) -> None:
        quality = {r.run_dir: r.quality_retained for r in self.results.rows if r.role == "student"}
        exporting = self.queue.exporting if self.queue.sweep is self.current else None
        self.queue_table.fill(self.current, quality, exporting)
        self.banner.show_for(self.current, self.queue.sweep is None)

    def _update_buttons(self) -> None:
        busy = self.queue.is_running() or self.ctx.training.is_running()
        s = self.current
        self.start_button.setEnabled(not busy)
        self.stop_button.setEnabled(self.queue.is_running())
        can_resume = (s is not None and not busy and not s.runner_alive()
                      and (bool(s.todo(retry_failed=True)) or self._int8_missing()))
        self.resume_button.setEnabled(can_resume)
        self.banner.resume_button.setEnabled(can_resume)
        self.banner.show_for(self.current, self.queue.sweep is None)
        self.timing.show_for(s, blocked=busy)

    def _int8_missing(self) -> bool:
        """A student on show lacks the int8 export its sweep asks for (Resume makes it)."""
        if self.current is None or not self.current.quantize_int8:
            return False
        rows = self.results.rows
        return bool({r.run_dir for r in rows if r.role == "student"}
                    - {r.run_dir for r in rows if r.is_int8})

    # -- results ---------------------------------------------------------------------------------
    def _open_run(self, run_dir: str) -> None:
        self.message.setText(f"Opened the run {Path(run_dir).name} on the Runs page.")
        self.open_run_requested.emit(run_dir)

    def _on_exported(self, path: str) -> None:
        what = "chart" if path.lower().endswith(".png") else "table"
        self.message.setText(f"Saved the {what} to {path}.")

    # -- fit my budget -------------------------------------------------------------------------
    def propose_budget(self, kind: str, limit: float) -> None:
        cfg = copy.deepcopy(self.ctx.config)
        shape, layers = self.teacher_shape(), sorted(self.setup.layer_boxes) or None
        self.budget.set_busy()
        self.ctx.jobs.submit(lambda: advise(cfg, shape, kind, limit, layers), self.budget.set_advice,
                             lambda exc: self.budget.set_error(str(exc)))
