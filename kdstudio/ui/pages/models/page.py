"""The Models page: choose the teacher and the student, see their size, check they fit together.

Models are inspected in background jobs (their design is built without loading weights, see
core/inspect.py), so the page stays responsive even for very large teachers. The teacher's
card is announced with ``ctx.teacher_info``; a derived student's size and expected speed-up
follow the layer picker as the user changes it.
"""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from kdstudio.ui.context import AppContext
from kdstudio.ui.pages.base import Page
from kdstudio.ui.jobs import LatestJob
from kdstudio.ui.pages.models.card import CompatLight, ModelCard
from kdstudio.ui.pages.models.chooser import ModelChooser
from kdstudio.ui.pages.models.layers import LayerPicker
from kdstudio.ui.pages.models.served import ServedTeacherBox
from kdstudio.ui.pages.models.size import SizeControl
from kdstudio.ui.pages.models.sources import folder_from_drop

INTRO = ("The <b>teacher</b> is a large model that already does the job well; the <b>student</b> "
         "is a smaller model trained to imitate it. A smaller student needs less memory and "
         "answers faster, but keeps less of the teacher's quality: how small to go is a balance "
         "you judge on the Compare page. You can drop a model folder onto either side.")

TIPS = ("<ul style='margin-left: -20px'>"
        "<li><b>A strong teacher comes first.</b> The student can only learn what the teacher "
        "knows; for classification, a teacher without a trained head is fine-tuned first.</li>"
        "<li><b>Derived students start ahead.</b> They reuse the teacher's own layers, "
        "embeddings and tokenizer (as DistilBERT did), so every method works with them.</li>"
        "<li><b>Another student model</b> works too; logit distillation then needs it to share "
        "the teacher's vocabulary, which the light below checks.</li>"
        "<li><b>Nothing is trained here:</b> this page reads each model's design and size. "
        "The weights load when a run starts.</li></ul>")


class ModelsPage(Page):
    title = "Models"

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(ctx, "models", parent)
        self.setAcceptDrops(True)
        self.ready = False
        self.teacher_insp: Any = None
        self.student_insp: Any = None
        self._estimate = LatestJob(ctx.jobs)
        self._compat = LatestJob(ctx.jobs)

        self.teacher_chooser = ModelChooser(ctx, "teacher")
        self.student_chooser = ModelChooser(ctx, "student")
        self.teacher_card = ModelCard("Teacher card", "teacherCard")
        self.student_card = ModelCard("Student card", "studentCard")
        self.layer_picker = LayerPicker(ctx)
        self.compat = CompatLight()

        intro = QLabel(INTRO)
        intro.setObjectName("modelsIntro")
        intro.setWordWrap(True)
        self.teacher_col = QWidget()
        self.teacher_col.setObjectName("teacherColumn")
        col = QVBoxLayout(self.teacher_col)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.teacher_chooser)
        col.addWidget(self.teacher_card)
        col.addWidget(ServedTeacherBox(ctx))  # teacher.endpoint, with a connection test
        col.addWidget(_tips())
        col.addStretch(1)
        self.student_col = QWidget()
        self.student_col.setObjectName("studentColumn")
        col = QVBoxLayout(self.student_col)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.student_chooser)
        col.addWidget(self.layer_picker)
        col.addWidget(SizeControl(ctx, lambda: self.teacher_insp))  # student.target_size etc.
        col.addWidget(self.student_card)
        col.addStretch(1)
        columns = QHBoxLayout()
        columns.setSpacing(16)
        columns.addWidget(self.teacher_col, 1)
        columns.addWidget(self.student_col, 1)

        lay = self.page_layout("Teacher and student", scroll="modelsScroll", spacing=12)
        lay.addWidget(intro)
        lay.addLayout(columns, 1)
        lay.addWidget(self.compat)

        self.teacher_card.show_message("Getting ready...")
        self.student_card.show_message("")
        self.teacher_chooser.inspected.connect(self._teacher_loaded)
        self.teacher_chooser.failed.connect(self._teacher_failed)
        self.teacher_chooser.busy_changed.connect(self._teacher_busy)
        self.teacher_chooser.kept_previous.connect(
            lambda: self.teacher_insp and self._teacher_loaded(self.teacher_insp))
        self.student_chooser.kept_previous.connect(self._student_kept)
        self.student_chooser.inspected.connect(self._student_loaded)
        self.student_chooser.failed.connect(self._student_failed)
        self.student_chooser.derived.connect(self._student_derived)
        self.student_chooser.busy_changed.connect(self._student_busy)
        self._compat_timer = QTimer(self)
        self._compat_timer.setSingleShot(True)
        self._compat_timer.setInterval(150)  # several fields change at once; check once
        self._compat_timer.timeout.connect(self._check_compat)
        ctx.config_replaced.connect(self.refresh_from_config)
        ctx.config_changed.connect(self._config_changed)
        # The built-in list lives in the engine, which imports torch: fetch it off the GUI thread.
        QTimer.singleShot(0, self, lambda: ctx.jobs.submit(_import_engine, self._engine_ready,
                                                           self._engine_failed))

    def is_idle(self) -> bool:
        """Ready, with nothing loading and no check waiting to start (tests wait for this)."""
        return (self.ready and not self._compat_timer.isActive()
                and not self.teacher_chooser.is_busy() and not self.student_chooser.is_busy())

    # -- filling from the config -----------------------------------------------------------
    def _engine_ready(self, _result: Any) -> None:
        from kdstudio.core.models import BUILTIN_ALIASES, BUILTIN_MODELS

        for chooser in (self.teacher_chooser, self.student_chooser):
            chooser.set_catalog(BUILTIN_MODELS, BUILTIN_ALIASES)
        self.ready = True
        self.refresh_from_config()

    def _engine_failed(self, exc: BaseException) -> None:
        self.teacher_card.show_message(f"The model engine could not start: {exc}. Check that "
                                       "PyTorch and transformers are installed.")

    def refresh_from_config(self) -> None:
        """Show the config's teacher and student (new, opened or cloned config) and load them."""
        if not self.ready:
            return
        self._load_side("teacher")
        self._load_side("student")

    def _load_side(self, role: str) -> None:
        section = getattr(self.ctx.config, role)
        chooser = self.teacher_chooser if role == "teacher" else self.student_chooser
        card = self.teacher_card if role == "teacher" else self.student_card
        chooser.show_name(section.name, section.revision, section.trust_remote_code)
        kind = chooser.kind_of(section.name)
        if role == "teacher":
            self.teacher_insp = None
            self.ctx.teacher_info.emit(None)
            self.layer_picker.set_teacher(None)
        else:
            self.student_insp = None
        if kind == "derived":
            chooser.cancel(quiet=True)
            chooser.loaded_name = ""
            chooser.status.setText("")
            self._student_derived()
        elif not section.name:
            chooser.cancel(quiet=True)
            card.show_message(f"Choose a {role}.")
        elif kind == "hub" and chooser.loaded_name != section.name:
            # Never download behind the user's back: a Hub id loads when they press Load.
            chooser.cancel(quiet=True)
            chooser.loaded_name = None
            chooser.status.setText("Press Load to download (if needed) and inspect this model.")
            card.show_message(f"'{section.name}' is not loaded yet.")
            if role == "student":
                self.layer_picker.hide()
        else:
            chooser.load(section.name, section.revision)
        self._schedule_compat()

    def _config_changed(self, section: str) -> None:
        if not self.ready:
            return
        if section == "task":  # the model class depends on the task: inspect again
            for role, chooser in (("teacher", self.teacher_chooser),
                                  ("student", self.student_chooser)):
                sec = getattr(self.ctx.config, role)
                hub = chooser.kind_of(sec.name) == "hub"
                if sec.name and (not hub or chooser.loaded_name == sec.name):
                    chooser.load(sec.name, sec.revision)
            self._schedule_compat()
        elif section in ("teacher", "student"):
            chooser = self.teacher_chooser if section == "teacher" else self.student_chooser
            name = getattr(self.ctx.config, section).name
            loading_it = chooser.is_busy() and name == chooser.typed_name()
            if name != chooser.loaded_name and not loading_it:
                self._load_side(section)  # changed elsewhere (another page, a config file)
            elif section == "student" and not name:
                self.layer_picker.refresh()
                self._update_student_estimate()
                self._schedule_compat()
        elif section == "method":
            self._schedule_compat()

    # -- the teacher -----------------------------------------------------------------------
    def _teacher_busy(self, busy: bool) -> None:
        if busy:
            self.teacher_card.show_message("Loading the teacher's design and size...")
            self.compat.set_state("unknown", "Waiting for the teacher to load.")

    def _teacher_loaded(self, insp: Any) -> None:
        self.teacher_insp = insp
        self.teacher_card.show_info(insp.info)
        self.ctx.teacher_info.emit(insp.info)
        self.layer_picker.set_teacher(insp.info)
        if not self.ctx.config.student.name:
            self._update_student_estimate()
        elif self.student_insp is not None:
            self._student_loaded(self.student_insp)  # its share of the teacher is known now
        self._schedule_compat()

    def _teacher_failed(self) -> None:
        self.teacher_insp = None
        self.teacher_card.show_message("No teacher loaded. " + self.teacher_chooser.status.text())
        self.ctx.teacher_info.emit(None)
        self.layer_picker.set_teacher(None)
        if not self.ctx.config.student.name:
            self.student_card.show_message("A derived student needs a loaded teacher.")
        self._schedule_compat()

    # -- the student -----------------------------------------------------------------------
    def _student_busy(self, busy: bool) -> None:
        if busy:
            self.student_card.show_message("Loading the student's design and size...")
            self.layer_picker.hide()

    def _student_loaded(self, insp: Any) -> None:
        self.student_insp = insp
        self.layer_picker.hide()
        self.student_card.show_info(insp.info, training=True)
        if self.teacher_insp is not None:
            share = insp.info["parameters"] / self.teacher_insp.info["parameters"]
            self.student_card.set_notes([f"{share:.0%} of the teacher's parameters.",
                                         *insp.info.get("notes", [])])
        self._schedule_compat()

    def _student_kept(self) -> None:
        if not self.ctx.config.student.name:
            self._student_derived()
        elif self.student_insp is not None:
            self._student_loaded(self.student_insp)

    def _student_failed(self) -> None:
        self.student_insp = None
        self.student_card.show_message("No student loaded. " + self.student_chooser.status.text())
        self._schedule_compat()

    def _student_derived(self) -> None:
        self.student_insp = None
        self.layer_picker.show()
        self.layer_picker.refresh()
        self._update_student_estimate()
        self._schedule_compat()

    def _update_student_estimate(self) -> None:
        """The derived student's size and speed-up: arithmetic at once, a narrower one in a job."""
        self._estimate.forget()
        from kdstudio.ui.pages.models.sources import derived_words

        self.student_chooser.derived_text.setText(derived_words(
            self.ctx.config.student, self.teacher_insp.info if self.teacher_insp else None))
        if self.teacher_insp is None:
            self.student_card.show_message(
                "Waiting for the teacher to load..." if self.teacher_chooser.is_busy() else
                "Load the teacher first: the student is derived from it.")
            return
        info = self.teacher_insp.info
        if not info.get("layer_params"):
            self.student_card.show_message("This teacher's layers cannot be found, so a student "
                                           "cannot be derived from it. Choose a student model.")
            return
        s = self.ctx.config.student
        kept = self.layer_picker.kept()
        if s.target_size or s.attention_heads or s.intermediate_size:
            self._pruned_estimate(copy.deepcopy(s), info)  # the size control's fields
            return
        if s.hidden_size in (0, info["hidden_size"]):
            from kdstudio.core.plan.shapes import derived_estimate

            self.student_card.show_derived(derived_estimate(info, kept), info)
            return
        insp, hidden = self.teacher_insp, s.hidden_size
        self.student_card.show_message("Working out the narrower student's size...")

        def job() -> dict:
            from kdstudio.core.plan.shapes import derived_student_estimate

            return derived_student_estimate(insp, layer_indices=kept, hidden=hidden)

        self._estimate.submit(job, lambda est: self.student_card.show_derived(est, info),
                              lambda exc: self.student_card.show_message(
                                  f"This width does not work: {exc}"))

    def _pruned_estimate(self, student: Any, info: dict[str, Any]) -> None:
        """A student the planner or the size control's fields shape (models/size.py)."""
        config = self.teacher_insp.config
        self.student_card.show_message("Working out the pruned student's size...")

        def job() -> dict:
            from kdstudio.core.plan.pruned import pruned_estimate
            from kdstudio.core.plan.shapes import derived_estimate

            p = pruned_estimate(student, config, info["task"])
            est = derived_estimate(info, p["layers"], student_params=p["parameters"])
            est.update(speedup=p["speedup"], fresh_init=False, hidden_size=p["hidden_size"])
            return est

        self._estimate.submit(job, lambda est: self.student_card.show_derived(est, info),
                              lambda exc: self.student_card.show_message(
                                  f"This size does not work: {exc}"))

    # -- compatibility ---------------------------------------------------------------------
    def _schedule_compat(self) -> None:
        self._compat.forget()  # any check still running is now stale
        self._compat_timer.start()

    def _check_compat(self) -> None:
        cfg = self.ctx.config
        derived = not cfg.student.name
        t, s = self.teacher_insp, self.student_insp
        if t is None or t.info["task"] != cfg.task:
            self.compat.set_state("unknown", "Load the teacher to check that the two fit together.")
            return
        if not derived and (s is None or s.info["task"] != cfg.task):
            self.compat.set_state("unknown", "Load the student to check that the two fit together.")
            return
        task, method, student_cfg = cfg.task, copy.deepcopy(cfg.method), copy.deepcopy(cfg.student)
        self.compat.set_state("unknown", "Checking...")

        def job() -> Any:
            from kdstudio.core.plan.shapes import check_pair

            return check_pair(task, method, t, None if derived else s, student_cfg)

        self._compat.submit(job, lambda comp: self.compat.set_state(comp.level, comp.message),
                            lambda exc: self.compat.set_state("error", str(exc)))

    # -- drag and drop of model folders ----------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.ready and folder_from_drop(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        folder = folder_from_drop(event.mimeData())
        if not (self.ready and folder):
            event.ignore()
            return
        target = self.childAt(event.position().toPoint())
        while target is not None and target not in (self.teacher_col, self.student_col):
            target = target.parentWidget()
        if target is None:  # between the columns: the nearer half decides
            left = event.position().x() < self.width() / 2
            target = self.teacher_col if left else self.student_col
        chooser = self.teacher_chooser if target is self.teacher_col else self.student_chooser
        event.acceptProposedAction()
        chooser.use_folder(folder)


def _tips() -> QGroupBox:
    box = QGroupBox("Good to know")
    box.setObjectName("modelsTips")
    text = QLabel(TIPS)
    text.setWordWrap(True)
    text.setTextFormat(Qt.TextFormat.RichText)
    QVBoxLayout(box).addWidget(text)
    return box


def _import_engine() -> None:
    import kdstudio.core.plan.shapes  # noqa: F401  (imports torch and transformers' lazy modules)
