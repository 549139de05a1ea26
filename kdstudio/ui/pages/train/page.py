"""The Train page: hyperparameters, a memory check, run controls, live plots, run health,
log and answers.

Engine events arrive through ctx.run_event; each one only appends to the plots' buffers,
which redraw a few times a second (see plots.py), so a fast run never floods
the GUI thread. A past run opened on the Runs page is read in a job and replayed through
the same code.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.events import Eval, Finished, Health, Progress, Stage, Started, Step
from kdstudio.ui.context import AppContext
from kdstudio.ui.jobs import LatestJob
from kdstudio.ui.pages.base import Page
from kdstudio.ui.pages.train.controls import RunControls
from kdstudio.ui.pages.train.gpus import gpu_control
from kdstudio.ui.pages.train.health import HealthPanel
from kdstudio.ui.pages.train.history import metric_label, read_history
from kdstudio.ui.pages.train.log import LogPane, describe, format_duration
from kdstudio.ui.pages.train.memory import MemoryLine
from kdstudio.ui.pages.train.pinned import AnswersTable, PinnedInputs
from kdstudio.ui.pages.train.plots import TrainPlots
from kdstudio.ui.pages.train.settings import TrainSettings
from kdstudio.ui.pages.train.teacher_line import TeacherLine

ESTIMATE_SECTIONS = {"task", "teacher", "student", "method", "data", "training"}
RESUMABLE = ("stopped", "interrupted")


class TrainPage(Page):
    title = "Train"

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(ctx, "train", parent)
        self.headline = ""               # the headline metric of the run on show
        self.last_step: Any = None
        self._estimate_stale = True
        self._teacher_info: tuple[str, dict] | None = None
        self._history = LatestJob(ctx.jobs)  # past curves: only the newest request draws
        self._live_plot_events: list[Any] | None = None  # held while a resumed run's past loads
        # The status line follows the live steps ("Training: step N of M") once training
        # runs, until a stage, a pause, a stop or the end says something else.
        self._status_follows_steps = False
        self._stopping = False
        self._build()
        self._estimate_timer = QTimer(self, singleShot=True, interval=500)
        self._estimate_timer.timeout.connect(self.estimate_memory)

        ctx.run_event.connect(lambda e: self._apply(e, live=True))
        ctx.run_started.connect(self._on_run_started)
        ctx.run_finished.connect(self._on_run_finished)
        ctx.run_opened.connect(self.show_run)
        ctx.teacher_info.connect(self._on_teacher_info)
        ctx.config_changed.connect(lambda s: self._schedule_estimate() if s in ESTIMATE_SECTIONS else None)
        ctx.config_replaced.connect(self._on_config_replaced)
        ctx.training.running_changed.connect(self._on_running_changed)
        ctx.training.paused_changed.connect(self._on_paused_changed)
        self._on_running_changed(ctx.training.is_running())

    # -- construction --------------------------------------------------------------------------
    def _build(self) -> None:
        self.settings = TrainSettings(self.ctx)
        self.memory = MemoryLine()
        self.memory.apply_requested.connect(self._apply_suggestion)
        self.teacher_line = TeacherLine()
        self.gpus = gpu_control(self.ctx)
        self.controls = RunControls(self.ctx)
        self.controls.stopping.connect(self._on_stopping)
        self.pinned = PinnedInputs(self.ctx)

        left = QWidget()
        left.setObjectName("trainControls")
        llay = QVBoxLayout(left)
        llay.setContentsMargins(0, 0, 6, 0)
        llay.setSpacing(8)
        llay.addWidget(self.settings)
        llay.addWidget(self.memory)
        llay.addWidget(self.teacher_line)
        llay.addWidget(self.gpus)
        llay.addWidget(self.controls)
        llay.addWidget(self.pinned, 1)
        scroll = self.scroll_area(left, "trainControlsScroll", min_width=340, max_width=400)

        self.progress = QProgressBar()
        self.progress.setObjectName("trainProgress")
        self.progress.setAccessibleName("Training progress")
        self.progress.setFormat("Not started")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.elapsed_label = QLabel("Elapsed \u2013")
        self.elapsed_label.setObjectName("elapsedLabel")
        self.eta_label = QLabel("Left \u2013")
        self.eta_label.setObjectName("etaLabel")
        self.eta_label.setToolTip("Estimated time until the last step, from the speed so far.")
        for label in (self.elapsed_label, self.eta_label):
            label.setMinimumWidth(110)
        prow = QHBoxLayout()
        prow.setSpacing(10)
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.elapsed_label)
        prow.addWidget(self.eta_label)
        self.status = QLabel("Ready. Press Start training when the settings look right.")
        self.status.setObjectName("trainStatus")
        self.status.setWordWrap(True)
        # The run's alarms; each opens the setting it names.
        self.health = HealthPanel(config=lambda: self.ctx.config)
        self.health.setting_requested.connect(self.ctx.show_setting)

        self.plots = TrainPlots()
        self.plots.redrawn.connect(self._show_progress)
        self.log = LogPane()
        self.answers = AnswersTable()
        self.tabs = QTabWidget()
        self.tabs.setObjectName("trainTabs")
        self.tabs.addTab(self.log, "Log")
        self.tabs.addTab(self.answers, "Student's answers")
        split = self.make_splitter(Qt.Orientation.Vertical, "trainSplitter", [self.plots, self.tabs],
                                   stretch=(3, 1))

        right = QVBoxLayout()
        right.setSpacing(6)
        right.addLayout(prow)
        right.addWidget(self.status)
        right.addWidget(self.health)
        right.addWidget(split, 1)
        body = QHBoxLayout()
        body.setSpacing(14)
        body.addWidget(scroll)
        body.addLayout(right, 1)
        lay = self.page_layout("Train", margins=(18, 14, 18, 14))
        lay.addLayout(body, 1)

    # -- run controls --------------------------------------------------------------------------
    def _on_stopping(self) -> None:
        self._stopping = True
        self.status.setText("Stopping after the current step and saving a checkpoint\u2026")

    def _on_running_changed(self, running: bool) -> None:
        self.controls.set_running(running)
        if not running and self._estimate_stale:
            self._schedule_estimate()

    def _on_paused_changed(self, paused: bool) -> None:
        self.controls.set_paused(paused)
        if self.ctx.training.is_running():
            self.status.setText("Paused. Press Continue to go on." if paused else "Training\u2026")

    def _on_run_started(self) -> None:
        self._history.forget()  # a past run still loading must not draw over this one
        self._clear()
        self._stopping = False
        self.progress.setRange(0, 0)  # busy until the engine says how many steps
        self.progress.setFormat("Preparing\u2026")
        self.status.setText("Preparing the run\u2026")

    def _on_run_finished(self, result: Any) -> None:
        self.plots.flush()
        self._status_follows_steps = False
        status = getattr(result, "status", None)
        if status == "finished":
            self.progress.setRange(0, max(1, self.progress.maximum()))
            self.progress.setValue(self.progress.maximum())
            self.progress.setFormat("Finished: %v of %m steps")
            keep = (getattr(result, "summary", None) or {}).get("keep")
            keep = keep if isinstance(keep, dict) else {}
            early = isinstance(keep.get("step"), int) and keep.get("step") != keep.get("last_step")
            kept = (f" Kept the student of step {keep['step']}, the best on the validation rows."
                    if early else "")
            self.status.setText(f"Finished.{kept} Compare teacher and student on the Compare page.")
            self.eta_label.setText("Left 0:00")
        elif status == "stopped" and not getattr(result, "summary", None):
            # Stopped while loading or preparing: no run folder, nothing to resume.
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("Stopped before training began")
            self.status.setText("Stopped before training began; nothing was saved.")
            self.controls.offer_resume("", False)
            return
        elif status == "stopped":
            self.progress.setFormat("Stopped at step %v of %m")
            self.status.setText("Stopped. The checkpoint is kept: Resume continues from it.")
        else:
            if self.progress.maximum() == 0:
                self.progress.setRange(0, 1)
            self.progress.setFormat("Failed")
            self.status.setText("The run did not finish; the log says why.")
        self.controls.offer_resume(str(getattr(result, "run_dir", "") or ""), status == "stopped")

    # -- events --------------------------------------------------------------------------------
    def _clear(self) -> None:
        self.plots.reset()
        self.log.clear()
        self.answers.clear()
        self.health.clear()
        self.headline = ""
        self.last_step = None
        self._status_follows_steps = False
        self._live_plot_events = None
        self.elapsed_label.setText("Elapsed \u2013")
        self.eta_label.setText("Left \u2013")

    def _apply(self, e: Any, *, live: bool) -> None:
        """Draw one engine event (live, or replayed from a past run's metrics.jsonl)."""
        if isinstance(e, Started):
            self._on_started(e, live)
        elif isinstance(e, Step):
            self._on_step(e)
            self._status_follows_steps = live and not self._stopping
        elif isinstance(e, Eval):
            self._on_eval(e)
        elif isinstance(e, Health):
            self.health.add(e)
        elif isinstance(e, Stage) and live:
            self._status_follows_steps = False
            self.status.setText(f"{e.name.capitalize()}\u2026 {e.detail}".strip())
        elif isinstance(e, Progress) and live:
            self._status_follows_steps = False
            total = f" of {e.total:,.0f}" if e.total else ""
            self.status.setText(f"{e.stage.capitalize()}: {e.current:,.0f}{total} {e.unit}".strip())
        elif isinstance(e, Finished) and not live:
            self._on_run_finished(SimpleNamespace(status=e.status, run_dir=e.run_dir))
        if live and self._live_plot_events is not None and isinstance(e, (Step, Eval)):
            self._live_plot_events.append(e)
        line = describe(e, self.headline)
        if line is not None:
            self.log.add(*line, stamp=live)

    def _on_started(self, e: Any, live: bool) -> None:
        self.progress.setRange(0, max(1, e.total_steps))
        self.progress.setValue(e.start_step)
        self.progress.setFormat("Step %v of %m")
        self.plots.set_total_steps(e.total_steps)
        if live:
            from kdstudio.core.runs import Run

            self.headline = Run(Path(e.run_dir)).summary().get("headline_metric", "") or self.headline
            self.plots.set_metric(self.headline, metric_label(self.headline))
            self.status.setText(f"Training on {e.device}\u2026")
            if e.start_step > 0:
                self._load_past_curves(e.run_dir, e.start_step)

    def _on_step(self, e: Any) -> None:
        self.plots.add_step(e)  # progress and times follow at the plots' capped rate
        self.last_step = e

    def _show_progress(self) -> None:
        e = self.last_step
        if e is None:
            return
        if self.progress.maximum() != e.total_steps:
            self.progress.setRange(0, max(1, e.total_steps))
            self.progress.setFormat("Step %v of %m")
        self.progress.setValue(e.step)
        if self._status_follows_steps and not self._stopping and not self.ctx.training.is_paused():
            self.status.setText(f"Training: step {e.step:,} of {e.total_steps:,}")
        self.elapsed_label.setText(f"Elapsed {format_duration(e.elapsed_s)}")
        self.eta_label.setText(f"Left {format_duration(e.eta_s)}")

    def _on_eval(self, e: Any) -> None:
        metrics, teacher = e.metrics or {}, e.teacher_metrics or {}
        if self.headline not in metrics and metrics:
            self.headline = next(iter(metrics))
            self.plots.set_metric(self.headline, metric_label(self.headline))
        from kdstudio.core.metrics import interval_of

        self.plots.add_eval(e.step, metrics.get(self.headline), teacher.get(self.headline),
                            interval_of(getattr(e, "intervals", None), self.headline))
        if e.samples:
            self.answers.show_samples(e.step, e.samples)

    def _load_past_curves(self, run_dir: str, start_step: int) -> None:
        """A resumed run: draw the steps before the checkpoint too, read in a job."""
        self._live_plot_events = []

        def done(history: dict[str, Any]) -> None:
            if self._live_plot_events is None:
                return
            live, self._live_plot_events = self._live_plot_events, None
            starts = [i for i, e in enumerate(history["events"]) if isinstance(e, Started)]
            past = history["events"][:starts[-1]] if starts else []
            self.plots.reset()
            self.plots.set_metric(self.headline, metric_label(self.headline))
            for e in past:
                if isinstance(e, (Step, Eval)) and e.step <= start_step:
                    self._plot_only(e)
            for e in live:
                self._plot_only(e)
            self.plots.flush()

        self._history.submit(lambda: read_history(run_dir), done, lambda _exc: None)

    def _plot_only(self, e: Any) -> None:
        if isinstance(e, Step):
            self.plots.add_step(e)
        else:
            self._on_eval(e)

    # -- past runs -----------------------------------------------------------------------------
    def show_run(self, run_dir: str) -> None:
        """Draw a past run's curves (ignored while a run is in progress)."""
        if self.ctx.training.is_running():
            return
        self.status.setText(f"Loading the run {Path(run_dir).name}\u2026")
        self._history.submit(lambda: read_history(run_dir),
                             lambda h: self._show_history(run_dir, h),
                             lambda exc: self.status.setText(
                                 f"The run {Path(run_dir).name} could not be read: {exc}"))

    def _show_history(self, run_dir: str, history: dict[str, Any]) -> None:
        if self.ctx.training.is_running():
            return
        self._clear()
        self.headline = history["metric"]
        self.plots.set_metric(self.headline, history["label"])
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("Step %v of %m")
        for e in history["events"]:
            self._apply(e, live=False)
        self.plots.flush()
        status = history["status"]
        self.status.setText(f"Showing the run {Path(run_dir).name} ({status}).")
        self.controls.offer_resume(run_dir, status in RESUMABLE and history["resumable"])

    # -- memory estimate -----------------------------------------------------------------------
    def _on_teacher_info(self, info: Any) -> None:
        self._teacher_info = (self.ctx.config.teacher.name, info) if info else None
        self._schedule_estimate()

    def _on_config_replaced(self) -> None:
        self.settings.forget_suggestion()  # a new config: no suggestion of ours is in force
        self.settings.refresh()
        self.pinned.refresh()
        self._schedule_estimate()

    def _schedule_estimate(self) -> None:
        # Estimated when the page is in view and no run is going (the run measures its own
        # memory in the Memory plot); not while the app starts.
        self._estimate_stale = True
        if self.isVisible() and not self.ctx.training.is_running():
            self._estimate_timer.start()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._estimate_stale:
            self._schedule_estimate()

    def estimate_memory(self) -> None:
        """Estimate in a job (the line shows only the newest answer)."""
        self._estimate_stale = False
        name = self.ctx.config.teacher.name
        info = self._teacher_info[1] if self._teacher_info and self._teacher_info[0] == name else None
        self.memory.estimate(self.ctx.jobs, self.ctx.config, info)
        self.teacher_line.show_plan(self.ctx.config)

    def _apply_suggestion(self, changes: dict[str, Any]) -> None:
        before = {}
        for dotted in changes:
            section, key = dotted.split(".", 1)
            before[dotted] = getattr(getattr(self.ctx.config, section), key)
        for dotted, value in changes.items():
            section, key = dotted.split(".", 1)
            self.ctx.set_value(section, key, value)
        self.settings.refresh()
        self.settings.remember_suggestion(before)
        done = ", ".join(f"{k.split('.', 1)[1].replace('_', ' ')} {v}" for k, v in changes.items())
        self.log.add(f"Applied the memory suggestion: {done}.")
