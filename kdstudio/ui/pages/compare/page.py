"""The Compare page: a run's teacher and student side by side on the user's own input.

The user picks a finished or stopped run; its models load in a background job (one job at
a time touches them), then each comparison runs in a job too. The table shows what the
student saves and keeps; the pinned inputs show the student's answers at every evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.events import Eval
from kdstudio.core.runs import Run
from kdstudio.core.tasks import REGISTRY, Task
from kdstudio.ui.context import AppContext
from kdstudio.ui.dialogs import show_error, show_exception
from kdstudio.ui.pages.base import HEADING_STYLE, Page
from kdstudio.ui.pages.compare.answer import AnswerView, verdict
from kdstudio.ui.pages.compare.input import InputPanel
from kdstudio.ui.pages.compare.jobs import (
    COMPARABLE,
    comparable_runs,
    compare_job,
    history_job,
)
from kdstudio.ui.pages.compare.pinned import PinnedPanel
from kdstudio.ui.pages.compare.table import FiguresPanel, table_from_summary
from kdstudio.ui.pages.compare.teacher_note import TeacherNote, teacher_not_held
from kdstudio.ui.pages.compare.token_strip import TokenPanel


def task_title(name: str) -> str:
    """What a run's task is called on this page ("Text generation"); an unknown one by name."""
    task = REGISTRY.get(name)
    return task.compare_title if task is not None else name


class ComparePage(Page):
    title = "Compare"

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(ctx, "compare", parent)
        self._run_dir = ""
        self._summary: dict[str, Any] = {}
        self._task: Task | None = None
        self._comparer: Any = None
        self._comparer_dir = ""
        self._failed_dir = ""
        self._history_dir = ""
        self._teacher_wanted = ""  # a run that did not hold its teacher: loaded when asked
        self._epoch = 0  # bumped when loaded models go stale: a job's older models are not kept
        self._busy = False
        self._live = False
        self._build()
        ctx.run_event.connect(self._on_run_event)
        ctx.run_started.connect(self._on_run_started)
        ctx.run_finished.connect(self._on_run_finished)
        ctx.run_opened.connect(self.open_run)
        self.refresh_runs()
        if not self._run_dir:
            self._select_run("")

    # -- construction --------------------------------------------------------------------------
    def _build(self) -> None:
        root = self.page_layout(None)
        head = QHBoxLayout()
        run_label = QLabel("Run to compare:")
        self.run_combo = QComboBox()
        self.run_combo.setObjectName("compareRunCombo")
        self.run_combo.setAccessibleName("Run to compare")
        self.run_combo.view().setObjectName("compareRunList")
        self.run_combo.view().setAccessibleName("Runs")
        self.run_combo.setToolTip("Finished and stopped runs, newest first.")
        self.run_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.run_combo.setMinimumContentsLength(30)
        run_label.setBuddy(self.run_combo)
        self.run_combo.currentIndexChanged.connect(self._on_combo)
        head.addWidget(run_label)
        head.addWidget(self.run_combo, 1)
        root.addLayout(head)
        self.run_info = QLabel()
        self.run_info.setObjectName("compareRunInfo")
        self.run_info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.run_info.setStyleSheet("color: palette(placeholder-text);")
        root.addWidget(self.run_info)


        self.left = QStackedWidget()
        self.left.addWidget(self._empty_state())
        work = QWidget()
        wl = QVBoxLayout(work)
        wl.setContentsMargins(0, 0, 0, 0)
        wl.setSpacing(10)
        self.teacher_note = TeacherNote()
        self.teacher_note.load_requested.connect(self.load_teacher)
        wl.addWidget(self.teacher_note)
        self.input_panel = InputPanel()
        self.input_panel.compare_requested.connect(self.compare)
        self.input_panel.pin_requested.connect(self._pin_current)
        self.input_panel.example_chosen.connect(self._use_example)
        wl.addWidget(self.input_panel)
        answers = QHBoxLayout()
        answers.setSpacing(10)
        self.teacher_view, self.student_view = AnswerView("teacher"), AnswerView("student")
        answers.addWidget(self.teacher_view, 1)
        answers.addWidget(self.student_view, 1)
        wl.addLayout(answers, 1)
        self.verdict = QLabel()
        self.verdict.setObjectName("compareVerdict")
        self.verdict.setWordWrap(True)
        wl.addWidget(self.verdict)
        self.token_panel = TokenPanel()
        wl.addWidget(self.token_panel)
        self.left.addWidget(work)

        right = QWidget()  # as wide as its figures need (FiguresTable.minimumSizeHint)
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.setSpacing(10)
        self.figures_box = FiguresPanel()
        self.table = self.figures_box.table
        rl.addWidget(self.figures_box)
        self.pinned = PinnedPanel(self.ctx)  # its editor writes evaluation.pinned_inputs
        rl.addWidget(self.pinned, 1)
        self.splitter = self.make_splitter(Qt.Orientation.Horizontal, "compareSplitter",
                                           [self.left, right], stretch=(3, 2), sizes=(620, 440))
        root.addWidget(self.splitter, 1)

    def _empty_state(self) -> QWidget:
        box = QWidget()
        box.setObjectName("compareEmpty")
        lay = QVBoxLayout(box)
        lay.setContentsMargins(40, 40, 40, 40)
        lay.addStretch(1)
        heading = QLabel("Nothing to compare yet")
        heading.setStyleSheet(HEADING_STYLE)
        heading.setAlignment(Qt.AlignmentFlag.AlignCenter)
        text = QLabel("Here a run's teacher and student answer your own input side by side, "
                      "with their speed, size and the quality the student keeps.<br><br>"
                      "Run one of the built-in demos first (<b>Run ▸ Run a built-in demo</b>), or start "
                      "a run on the Train page. When it finishes, it appears here; past runs "
                      "can be opened from the Runs page.")
        text.setWordWrap(True)
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        text.setMaximumWidth(520)
        buttons = QHBoxLayout()
        for name, label, key in (("compareGoTrainButton", "Go to Train", "train"),
                                 ("compareGoRunsButton", "Open the Runs page", "runs")):
            b = QPushButton(label)
            b.setObjectName(name)
            b.setAccessibleName(label)
            b.clicked.connect(lambda _=False, k=key: self.ctx.navigate.emit(k))
            buttons.addWidget(b)
        lay.addWidget(heading)
        lay.addSpacing(8)
        # In a row between stretches, not with AlignHCenter: an aligned word-wrapped label
        # gets its size hint's narrow width without the height that width needs, and its
        # last line was cut off ("Run one of the built-in demos first (Run ▸").
        text.setObjectName("compareEmptyText")
        text_row = QHBoxLayout()
        text_row.addStretch(1)
        text_row.addWidget(text, 100)
        text_row.addStretch(1)
        lay.addLayout(text_row)
        lay.addSpacing(12)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addLayout(buttons)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addStretch(2)
        return box

    # -- which run -----------------------------------------------------------------------------
    def current_run(self) -> str:
        return self._run_dir

    def refresh_runs(self, select: str | None = None) -> None:
        """Re-read the run store; keep the selection, or select ``select``, or the newest run."""
        infos = comparable_runs()
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        for info in infos:
            when = info.created.replace("T", " ")[:16]
            self.run_combo.addItem(f"{info.name}  ·  {task_title(info.task)}  ·  {when}",
                                   str(info.path))
            self.run_combo.setItemData(self.run_combo.count() - 1,
                                       f"{info.teacher} → {info.student} ({info.status})",
                                       Qt.ItemDataRole.ToolTipRole)
        if not infos:
            self.run_combo.addItem("No finished runs yet")
        found = [i for i in (self.run_combo.findData(str(x)) for x in (select, self._run_dir) if x)
                 if i >= 0]
        self.run_combo.setCurrentIndex(found[0] if found else 0)
        self.run_combo.setEnabled(bool(infos))
        self.run_combo.blockSignals(False)
        self._on_combo()

    def open_run(self, run_dir: str) -> None:
        """Compare the given run (from ctx.run_opened), or say why it cannot be compared."""
        self.refresh_runs(select=run_dir)
        if self.run_combo.findData(str(run_dir)) < 0:
            self.run_info.setText(f"The run '{Path(run_dir).name}' cannot be compared: it has no "
                                  "saved student (it failed, or is still running).")

    def _on_combo(self, *_: Any) -> None:
        path = self.run_combo.currentData() or ""
        if path != self._run_dir:
            self._select_run(path)

    def _select_run(self, path: str) -> None:
        self._run_dir = path
        self.left.setCurrentIndex(1 if path else 0)
        self.figures_box.setVisible(bool(path))
        self.teacher_view.clear()
        self.student_view.clear()
        self.verdict.clear()
        self.token_panel.clear()
        if not path:
            self._summary, self._task = {}, None
            self.run_info.setText("")
            self.teacher_note.hide()
            return
        self._summary = Run(Path(path)).summary()
        s = self._summary
        self._task = REGISTRY.get(s.get("task", ""))
        status = "stopped early" if s.get("status") == "stopped" else s.get("status", "")
        self.run_info.setText(f"{task_title(s.get('task', ''))}  ·  teacher: "
                              f"{s.get('teacher', '?')}  →  student: {s.get('student', '?')}  ·  {status}")
        self.run_info.setToolTip(path)
        self.teacher_view.set_model_name(str(s.get("teacher", "")))
        self.student_view.set_model_name(str(s.get("student", "")))
        self.input_panel.set_task(self._task)
        self.token_panel.setVisible(self._task is not None and self._task.shows_token_view)
        self.figures_box.set_figures(table_from_summary(s), s)
        self.teacher_note.show_for(s)
        if self._comparer_dir == path:
            self.teacher_note.loaded()
        self._history_dir = ""
        self._update_buttons()
        self._ensure_loaded()

    # -- jobs ----------------------------------------------------------------------------------
    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self.refresh_runs()
        self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        """While the page is shown, load the selected run's pinned answers and models (not
        during a training run: then the models load on the first Compare)."""
        if not self._run_dir or self._live or not self.isVisible():
            return
        if self._history_dir != self._run_dir:
            self._history_dir = path = self._run_dir
            self.ctx.jobs.submit(lambda: history_job(path), self._on_history)
        if not self._busy and self._comparer_dir != self._run_dir and \
                self._failed_dir != self._run_dir and not self._teacher_unasked():
            self._start(None)

    def _teacher_unasked(self) -> bool:
        """The run did not hold its teacher and the user has not asked to load it: its weights
        may be large, so they load only on "Load the teacher"."""
        return teacher_not_held(self._summary) and self._teacher_wanted != self._run_dir

    def load_teacher(self) -> None:
        """Load the selected run's teacher and student in a background job; then Compare
        shows both answers side by side."""
        if not self._run_dir:
            return
        self._teacher_wanted, self._failed_dir = self._run_dir, ""
        self.teacher_note.loading()
        if not self._busy:
            self._start(None)  # else _on_done's _ensure_loaded starts it

    def compare(self) -> None:
        """Compare teacher and student on the text in the input box (in a background job)."""
        text = self.input_panel.text()
        if not text.strip():
            show_error(self, "Nothing to compare",
                       "Type a sentence or a prompt in the box first, or click one of the examples.")
            return
        if not self._run_dir:
            show_error(self, "No run to compare", "Pick a finished run at the top of the page first.")
            return
        if self._teacher_unasked():
            show_error(self, "The teacher is not loaded",
                       "This run read the teacher's answers from its cache. Press "
                       "'Load the teacher' first; then Compare answers with both.")
            return
        if not self._busy:
            self._start(text)

    def _start(self, text: str | None) -> None:
        run_dir = self._run_dir
        comparer = self._comparer if self._comparer_dir == run_dir else None
        if comparer is None:
            self._comparer, self._comparer_dir = None, ""  # only one run's models held at a time
        gen, epoch = self.input_panel.generation(), self._epoch
        self._busy = True
        if comparer is None:
            self.input_panel.set_busy(True, "Loading...", "Loading the teacher and the student of "
                                      "this run (only the first time)...")
        else:
            self.input_panel.set_busy(True, "Comparing...", "Both models are answering...")
        self.ctx.jobs.submit(lambda: compare_job(run_dir, comparer, text, gen),
                             lambda res: self._on_done(epoch, res),
                             lambda exc: self._on_error(run_dir, exc))

    def _on_done(self, epoch: int, res: tuple) -> None:
        run_dir, comparer, text, result, tokens = res
        self._busy = False
        status = ""
        if run_dir == self._run_dir:
            if epoch == self._epoch:
                self._comparer, self._comparer_dir = comparer, run_dir
            self.figures_box.set_figures(comparer.table(), self._summary)
            if teacher_not_held(self._summary):
                self.teacher_note.loaded()
            if result is not None:
                self.teacher_view.show_answer(comparer.task, text, result.teacher)
                self.student_view.show_answer(comparer.task, text, result.student)
                self.verdict.setText(verdict(comparer.task, result))
                if isinstance(tokens, str):
                    self.token_panel.clear(f"No per-token view for this run: {tokens}")
                elif tokens is not None:
                    self.token_panel.set_view(tokens)
            else:
                status = "Ready: type an input and press Compare."
        self.input_panel.set_busy(False, "Compare", status)
        self._update_buttons()
        self._ensure_loaded()  # the selection may have changed meanwhile

    def _on_error(self, run_dir: str, exc: BaseException) -> None:
        self._busy = False
        if self._comparer_dir != run_dir:
            self._failed_dir = run_dir  # no automatic retry; pressing Compare tries again
        if run_dir == self._run_dir:
            self.teacher_note.failed()
        self.input_panel.set_busy(False, "Compare", "The comparison did not complete.")
        self._update_buttons()
        show_exception(self, exc)
        self._ensure_loaded()

    def _drop_models(self) -> None:
        self._comparer, self._comparer_dir = None, ""
        self._epoch += 1

    def _update_buttons(self) -> None:
        if not self._busy:
            self.input_panel.compare_button.setEnabled(bool(self._run_dir)
                                                       and not self._teacher_unasked())
            if self._teacher_unasked():
                self.input_panel.status.setText("Press Load the teacher (above) to compare "
                                                "answers side by side.")

    # -- input helpers -------------------------------------------------------------------------
    def _use_example(self, text: str) -> None:
        self.input_panel.input.setPlainText(text)
        self.compare()

    def _pin_current(self) -> None:
        text = self.input_panel.text()
        if not text.strip():
            show_error(self, "Nothing to pin", "Type an input in the box first, then pin it.")
            return
        if self.pinned.pin(text):
            self.input_panel.status.setText("Pinned: the next run's student answers it at every "
                                            "evaluation.")
        elif self.pinned.editor.note.text():
            self.input_panel.status.setText(self.pinned.editor.note.text())

    # -- pinned inputs and the live run --------------------------------------------------------
    def _on_history(self, res: tuple) -> None:
        run_dir, evals = res
        if run_dir != self._run_dir or self._live:
            return
        self.pinned.clear_answers()
        for step, samples in evals:
            self.pinned.show_samples(samples, "", step)
        if evals:
            self.pinned.set_status(f"From this run's last evaluation (step {evals[-1][0]}); hover "
                                   "over an answer for the earlier ones.")

    def _on_run_started(self) -> None:
        self._live = True
        self._drop_models()  # leave the memory to the training run; they reload when needed
        self.pinned.clear_answers("Waiting for the first evaluation of the run in progress...")

    def _on_run_event(self, event: Any) -> None:
        if not isinstance(event, Eval) or not event.samples:
            return
        if not self._live:
            self._live = True
            self.pinned.clear_answers()
        self.pinned.show_samples(event.samples, f"Step {event.step} of the run in progress; the "
                                 "answers update at every evaluation.", event.step)

    def _on_run_finished(self, result: Any) -> None:
        self._live = False
        if result is None:
            self.pinned.set_status("The run failed; these are the answers of its last evaluation.")
            return
        run_dir = str(result.run_dir)
        if self._comparer_dir == run_dir:
            self._drop_models()  # its student was saved again
        if run_dir == self._failed_dir:
            self._failed_dir = ""
        if result.status in COMPARABLE:
            if self._run_dir == run_dir:
                self._run_dir = ""  # re-read it: a resumed run has a new summary and student
            self.refresh_runs(select=run_dir)
            step = result.summary.get("steps", "")
            self.pinned.set_status(f"From the run's last evaluation (step {step}); hover over an "
                                   "answer for the earlier ones.")
