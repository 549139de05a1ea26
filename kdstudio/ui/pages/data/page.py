"""The Data page: choose the data, see its first rows and columns, and how much of it there is.

It writes ``ctx.config.data``. Loading a preview and counting tokens run in ctx.jobs
through a LatestJob each, so a slow answer to an old question never overwrites a newer one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from kdstudio.core.catalog import BUILTIN_DATASETS
from kdstudio.core.tasks import get_task
from kdstudio.ui.context import AppContext
from kdstudio.ui.dialogs import show_exception
from kdstudio.ui.jobs import LatestJob
from kdstudio.ui.pages.base import Page
from kdstudio.ui.pages.data.columns import DataColumnsBox
from kdstudio.ui.pages.data.preview import CountsBox, PreviewTable
from kdstudio.ui.pages.data.source import DataSourceBox
from kdstudio.ui.widgets.common import named as _named

PREVIEW_ROWS = 50
EVAL_SPLIT_NAMES = ("validation", "valid", "eval", "test")


class DataPage(Page):
    title = "Data"

    def __init__(self, ctx: AppContext, parent: QWidget | None = None):
        super().__init__(ctx, "data", parent)
        self.setAcceptDrops(True)
        self.preview: Any = None
        self._preview_job = LatestJob(ctx.jobs)
        self._count_job = LatestJob(ctx.jobs)
        self._stale = True           # the preview no longer matches the config
        self._fresh_source = False   # the user just picked new data: adopt its splits
        self._tokenizers: dict[tuple[str, str], Any] = {}
        self._build()
        self._count_timer = QTimer(self, singleShot=True, interval=400)
        self._count_timer.timeout.connect(self._count)
        ctx.config_replaced.connect(self._on_config_replaced)
        ctx.config_changed.connect(self._on_config_changed)
        self.source.set_builtins({name: about for name, (_path, about) in BUILTIN_DATASETS.items()})
        self.refresh_from_config()

    # -- construction --------------------------------------------------------------------------
    def _build(self) -> None:
        intro = QLabel("The texts the student learns from. On each text the student imitates the "
                       "teacher's answer, so choose text like what the student will meet in use. "
                       "You can also drop a file anywhere on this page.")
        intro.setObjectName("dataIntro")
        intro.setWordWrap(True)

        self.source = DataSourceBox()
        self.source.chosen.connect(self._on_source_chosen)

        cols = DataColumnsBox(self.ctx, on_edit=self._recount)
        self.columns = cols
        self.text_combo, self.label_combo = cols.text_combo, cols.label_combo
        self.split_combo, self.eval_combo = cols.split_combo, cols.eval_combo
        self.fraction_spin, self.length_spin = cols.fraction_spin, cols.length_spin
        self.limit_spin, self.pack_check = cols.limit_spin, cols.pack_check

        self.counts = CountsBox()
        middle = QHBoxLayout()
        middle.setSpacing(12)
        middle.addWidget(cols, 1)
        middle.addWidget(self.counts, 1)

        box = QGroupBox("First rows")
        box.setObjectName("dataPreviewBox")
        self.status = QLabel("")
        self.status.setObjectName("previewStatus")
        self.status.setWordWrap(True)
        self.refresh_button = _named(QPushButton("Reload"), "refreshPreviewButton",
                                     "Reload the preview", "Read the data again (e.g. after the "
                                     "file changed on disk).")
        top = QHBoxLayout()
        top.addWidget(self.status, 1)
        top.addWidget(self.refresh_button, 0, Qt.AlignmentFlag.AlignTop)
        self.table = PreviewTable()
        inner = QVBoxLayout(box)
        inner.setContentsMargins(12, 8, 12, 12)
        inner.addLayout(top)
        inner.addWidget(self.table, 1)

        lay = self.page_layout("Data", margins=(18, 14, 18, 14))
        lay.addWidget(intro)
        lay.addWidget(self.source)
        lay.addLayout(middle)
        lay.addWidget(box, 1)

        self.text_combo.activated.connect(lambda _i: self._on_column("text_column", self.text_combo))
        self.label_combo.activated.connect(lambda _i: self._on_column("label_column", self.label_combo))
        self.split_combo.activated.connect(self._on_split)
        self.eval_combo.activated.connect(self._on_eval_split)
        self.refresh_button.clicked.connect(lambda: self.load_preview(user=True))

    # -- config -> widgets ---------------------------------------------------------------------
    def refresh_from_config(self) -> None:
        """Show ctx.config's data settings in every widget."""
        d, task = self.ctx.config.data, self.ctx.config.task
        self.source.set_source(d.dataset, d.config_name)
        self.columns.show_config(d, task, self.preview)

    def _on_config_replaced(self) -> None:
        self.preview = None
        self.refresh_from_config()
        self._stale = True
        if self.isVisible():
            self.load_preview(user=False)

    def _on_config_changed(self, section: str) -> None:
        if section == "task":
            self.refresh_from_config()
            self._invalidate()
        elif section == "teacher" and self.preview is not None:
            self._count_timer.start()

    def _invalidate(self) -> None:
        self._stale = True
        if self.isVisible():
            self.load_preview(user=False)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._stale:  # previews load when first needed, not while the app starts
            self.load_preview(user=False)

    # -- widgets -> config ---------------------------------------------------------------------
    def _set(self, key: str, value: Any, *, recount: bool = False) -> None:
        """A combo box's choice (their ``activated`` signals come only from the user)."""
        self.ctx.set_value("data", key, value)
        if recount:
            self._recount()

    def _recount(self) -> None:
        """The data's size settings changed: count again shortly (once the edits settle)."""
        if self.preview is not None:
            self._count_timer.start()

    def _on_source_chosen(self, dataset: str, config_name: str) -> None:
        d = self.ctx.config.data
        if (dataset, config_name) != (d.dataset, d.config_name):
            # Column names belong to the old data; the new data's are detected afresh.
            self.ctx.set_value("data", "dataset", dataset)
            self.ctx.set_value("data", "config_name", config_name)
            self.ctx.set_value("data", "text_column", "")
            self.ctx.set_value("data", "label_column", "")
            self._fresh_source = True
            self.preview = None
            self.refresh_from_config()
        self.load_preview(user=True)

    def _on_column(self, key: str, combo: QComboBox) -> None:
        self._set(key, combo.currentData() or "")
        self.load_preview(user=True)

    def _on_split(self, _index: int) -> None:
        self._set("split", self.split_combo.currentData() or "train")
        self.columns.fill_splits(self.ctx.config.data, self.preview)
        self.load_preview(user=True)

    def _on_eval_split(self, _index: int) -> None:
        value = self.eval_combo.currentData() or ""
        self._set("eval_split", value, recount=True)
        self.columns.enable_fraction(not value)

    # -- preview -------------------------------------------------------------------------------
    def load_preview(self, *, user: bool) -> None:
        """Read the first rows in a job; errors become a dialog when the user asked for them."""
        self._stale = False
        data_cfg, task = copy.deepcopy(self.ctx.config.data), self.ctx.config.task

        def job() -> Any:
            from kdstudio.core.data import preview

            return preview(data_cfg, n=PREVIEW_ROWS, task=task)

        hub = not data_cfg.dataset.startswith("builtin:") and not Path(data_cfg.dataset).expanduser().exists()
        self._set_status("Reading the first rows\u2026" + (
            " (a Hub data set is downloaded on first use; this can take a while)" if hub else ""))
        self.refresh_button.setEnabled(False)
        self._preview_job.submit(job, self._on_preview,
                                 lambda exc: self._on_preview_error(exc, user))

    def _on_preview(self, preview: Any) -> None:
        self.refresh_button.setEnabled(True)
        self.preview = preview
        d = self.ctx.config.data
        if self._fresh_source:
            self._fresh_source = False
            self._adopt_splits(preview.splits)
        self.columns.fill_columns(d, preview)
        self.columns.fill_splits(d, preview)
        self.columns.enable_fraction(not d.eval_split)
        self.table.show_rows(preview.columns, preview.rows)
        task = get_task(self.ctx.config.task)
        self.table.mark(preview.text_column, preview.label_column if task.uses_labels else None)
        shown = min(len(preview.rows), preview.num_rows)
        split = d.split if d.split in preview.splits else preview.splits[0]
        self._set_status(f"The first {shown} of {preview.num_rows:,} rows of the '{split}' split. "
                         f"Text: '{preview.text_column}'"
                         + (f", labels: '{preview.label_column}'." if preview.label_column and
                            task.uses_labels else "."))
        self.counts.set_preview(preview, task)
        self._count()

    def _adopt_splits(self, splits: list[str]) -> None:
        """New data: train on its first split if 'train' is missing; measure on its validation split."""
        d = self.ctx.config.data
        if d.split not in splits:
            self.ctx.set_value("data", "split", splits[0])
        evals = [s for s in EVAL_SPLIT_NAMES if s in splits and s != d.split]
        self.ctx.set_value("data", "eval_split", evals[0] if evals else "")

    def _on_preview_error(self, exc: BaseException, user: bool) -> None:
        self.refresh_button.setEnabled(True)
        self.preview = None
        self._count_job.forget()  # any count still running belongs to the old data
        self.table.show_rows([], [])
        self.counts.clear_counts("\u2013")
        self._set_status(f"The data could not be read: {exc}", error=True)
        if user:
            show_exception(self, exc)

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #b3261e;" if error else "")

    # -- counts --------------------------------------------------------------------------------
    def _count(self) -> None:
        """Rows for training and evaluation, and tokens with the teacher's tokenizer, in a job."""
        cfg = copy.deepcopy(self.ctx.config)
        key = (cfg.teacher.name, cfg.teacher.revision)
        tokenizers = self._tokenizers
        tokenizer = tokenizers.get(key)

        def job() -> tuple[Any, str]:
            from kdstudio.core.plan.memory import estimate_tokens, teacher_tokenizer

            tok, note = tokenizer, ""
            if tok is None and key[0]:
                try:
                    tok = teacher_tokenizer(cfg)
                except Exception as exc:  # the rows can still be counted
                    note = f"unknown: the teacher's tokenizer could not be loaded ({exc})"
            elif not key[0]:
                note = "choose a teacher on the Models page to count tokens"
            if tok is not None:
                tokenizers[key] = tok  # kept even when this count is stale
            return estimate_tokens(cfg, tok), note

        self.counts.set_counting()
        self._count_job.submit(job, lambda res: self._on_counts(cfg, res),
                               lambda exc: self.counts.set_count_error(str(exc)[:300]))

    def _on_counts(self, cfg: Any, result: tuple) -> None:
        est, note = result
        packed = get_task(cfg.task).packs and cfg.data.pack
        self.counts.set_counts(est, cfg.data.max_length, packed, note[:300])

    # -- drag and drop -------------------------------------------------------------------------
    @staticmethod
    def _dropped_path(event: QDragEnterEvent | QDropEvent) -> str:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        return urls[0].toLocalFile() if urls and urls[0].isLocalFile() else ""

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._dropped_path(event):
            event.acceptProposedAction()
            self._set_status("Drop the file to use it as the data.")
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        path = self._dropped_path(event)
        if path:
            event.acceptProposedAction()
            self.source.choose_file(path)
