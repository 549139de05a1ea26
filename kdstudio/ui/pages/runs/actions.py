"""What the Runs page does with the selected runs: open, overlay, compare, clone, resume,
export (a PyTorch folder, ONNX or safetensors), open the folder, delete. Slow work runs in
ctx.jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMessageBox

from kdstudio.ui.dialogs import show_error
from kdstudio.ui.pages.runs.dialogs import (
    ConfigDiffDialog,
    OverlayDialog,
    load_diff,
    load_overlay,
)
from kdstudio.ui.pages.runs.export import (
    ExportChoice,
    ExportChoiceDialog,
    ExportResultDialog,
    convert_student,
    summary_sentence,
)
from kdstudio.ui.pages.runs.ops import (
    copy_student,
    delete_runs,
    export_clashes,
    same_path,
)
from kdstudio.ui.widgets.install_parts import InstallPartsDialog, missing_parts


class RunActionsMixin:
    """The RunsPage's action handlers; expects ctx, message, export_progress, selected_rows(),
    _is_active(), _update_actions(), refresh() and the export_done / runs_deleted signals on
    the page."""

    overlay_dialog: OverlayDialog | None = None
    diff_dialog: ConfigDiffDialog | None = None
    export_dialog: ExportChoiceDialog | None = None
    export_result_dialog: ExportResultDialog | None = None
    install_dialog: InstallPartsDialog | None = None
    _exporting: Path | None = None  # the run whose student is being exported
    _export_intro = ""

    def open_selected(self) -> None:
        row = self._one()
        if row is not None:
            self.ctx.open_run(str(row.path))
            self.ctx.navigate.emit("train")

    def overlay_selected(self) -> None:
        rows = self.selected_rows()
        if len(rows) < 2:
            return
        self.ctx.jobs.submit(lambda: load_overlay([(r.name, str(r.path)) for r in rows]),
                             self._show_overlay,
                             lambda exc: show_error(self, "Could not draw the curves",
                                                    f"The runs' curves could not be read: {exc}"))

    def _show_overlay(self, result: Any) -> None:
        runs, labels = result
        if self.overlay_dialog is not None:
            self.overlay_dialog.close()
        self.overlay_dialog = OverlayDialog(runs, labels, self)
        self.overlay_dialog.show()

    def diff_selected(self) -> None:
        rows = self.selected_rows()
        if len(rows) != 2:
            return
        a, b = rows
        self.ctx.jobs.submit(lambda: load_diff(a.path, b.path),
                             lambda diff: self._show_diff(a.name, b.name, diff),
                             lambda exc: show_error(self, "Could not compare the configs", str(exc)))

    def _show_diff(self, name_a: str, name_b: str, diff: list) -> None:
        if name_a == name_b:
            name_a, name_b = f"{name_a} (1)", f"{name_b} (2)"
        if self.diff_dialog is not None:
            self.diff_dialog.close()
        self.diff_dialog = ConfigDiffDialog(name_a, name_b, diff, self)
        self.diff_dialog.open()

    def clone_selected(self) -> None:
        row = self._one()
        if row is None:
            return
        from kdstudio.core.config import load_config

        self.ctx.jobs.submit(lambda: load_config(row.path / "config.toml"),
                             lambda cfg: self._apply_clone(cfg, row.name),
                             lambda exc: show_error(self, "Could not clone the run's config",
                                                    f"{exc} Your current settings are unchanged."))

    def _apply_clone(self, cfg: Any, name: str) -> None:
        cfg.name = ""
        self.ctx.replace_config(cfg)
        self.message.setText(f"The settings of '{name}' are loaded as a new run. Change what you like "
                             "and press Run on the Train page.")
        self.ctx.navigate.emit("models")

    def resume_selected(self) -> None:
        row = self._one()
        if row is None or not row.resumable:
            return
        if self.ctx.training.is_running():
            show_error(self, "A run is already in progress",
                       "Stop the current run, or wait for it to finish, before resuming another.")
            return
        self.message.setText(f"Resuming '{row.name}' from its last checkpoint...")
        self.ctx.start_run(resume=row.path)

    def export_selected(self) -> None:
        row = self._one()
        if row is None or self._exporting is not None:
            return
        if not row.has_student:
            show_error(self, "No student to export", f"The run '{row.name}' has no saved student model; "
                       "it ended before the student was written.")
            return
        if self.export_dialog is not None:
            self.export_dialog.close()
        dialog = self.export_dialog = ExportChoiceDialog(row.name, self)
        dialog.accepted.connect(lambda: self._export_chosen(row, dialog.choice()))
        dialog.open()

    def _export_chosen(self, row: Any, choice: ExportChoice) -> None:
        if choice.format is None:
            self._copy_student(row)
        elif choice.format == "onnx" and missing_parts("export"):
            # offer to install the export parts here rather than fail with a pip command
            dialog = self.install_dialog = InstallPartsDialog(
                f"Export as {choice.label}", missing_parts("export"), self)
            dialog.installed.connect(lambda: self._convert_student(row, choice))
            dialog.open()
        else:
            self._convert_student(row, choice)

    def _copy_student(self, row: Any) -> None:
        start = self.ctx.settings["last_folder"] or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Export the student to a folder", start)
        if not folder:
            return
        dest, src = Path(folder), row.path / "student"
        if same_path(dest, row.path) or dest.resolve().is_relative_to(row.path.resolve()):
            show_error(self, "Choose another folder", f"'{dest}' is inside the run's own folder. Choose a "
                       "folder outside it, for example an empty folder in your home folder.")
            return
        clashes = export_clashes(src, dest)
        if clashes is not None:
            shown = ", ".join(clashes[:5]) + (f" and {len(clashes) - 5} more" if len(clashes) > 5 else "")
            replace = f" These files would be replaced: {shown}." if clashes else " No file in it is replaced."
            answer = QMessageBox.question(self, "The folder is not empty",
                                          f"'{dest}' already holds files. Copy the student into it "
                                          f"anyway?{replace} Other files stay as they are.",
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                          QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.ctx.settings["last_folder"] = str(dest.parent)
        self.message.setText(f"Copying the student of '{row.name}' to {dest}...")
        self.ctx.jobs.submit(lambda: copy_student(src, dest), lambda _r: self._exported(row.name, dest),
                             lambda exc: self._export_failed(dest, exc))

    def _exported(self, name: str, dest: Path) -> None:
        self.message.setText(f"Exported the student of '{name}' to {dest}. Load it with "
                             f"AutoModel.from_pretrained(\"{dest}\").")
        self.export_done.emit(str(dest))

    def _export_failed(self, dest: Path, exc: BaseException) -> None:
        self.message.setText("")
        show_error(self, "Could not export the student",
                   f"Copying the student to '{dest}' failed: {exc}. The run itself is unchanged.")

    # -- ONNX and safetensors: the engine's export, checked against the student -----------------
    def _convert_student(self, row: Any, choice: ExportChoice) -> None:
        self._exporting = row.path
        self._update_actions()
        self._export_intro = f"Exporting the student of '{row.name}' as {choice.label}"
        self.message.setText(self._export_intro + "...")
        self.export_progress.setRange(0, 0)  # busy until the eval rows are counted
        self.export_progress.show()
        self.ctx.jobs.submit(lambda report, _cancel: convert_student(row.path, choice, report),
                             lambda done: self._converted(row, choice, done), self._convert_failed,
                             on_progress=self._export_event)

    def _export_event(self, event: Any) -> None:
        from kdstudio.core.events import Progress, Stage

        if isinstance(event, Stage):
            self.message.setText(f"{self._export_intro}: {event.name}...")
            self.export_progress.setRange(0, 0)
        elif isinstance(event, Progress) and event.total:
            self.export_progress.setRange(0, int(event.total))
            self.export_progress.setValue(int(event.current))

    def _export_over(self) -> None:
        self._exporting = None
        self.export_progress.hide()
        self._update_actions()

    def _converted(self, row: Any, choice: ExportChoice, done: tuple[Any, list, dict]) -> None:
        result, rows, _summary = done
        self._export_over()
        self.message.setText(summary_sentence(row.name, choice, result))
        if self.export_result_dialog is not None:
            self.export_result_dialog.close()
        self.export_result_dialog = ExportResultDialog(row.name, result, rows, self)
        self.export_result_dialog.show()
        self.export_done.emit(str(result.path))

    def _convert_failed(self, exc: BaseException) -> None:
        from kdstudio.core.errors import KDStudioError

        self._export_over()
        self.message.setText("")
        if isinstance(exc, KDStudioError):
            show_error(self, exc.title, f"{exc} The run itself is unchanged.")
        else:
            show_error(self, "Export failed", "The export stopped with an error KD Studio did not "
                       f"expect: {type(exc).__name__}: {exc}. The run itself is unchanged.")

    def open_folder_selected(self) -> None:
        row = self._one()
        if row is not None and not QDesktopServices.openUrl(QUrl.fromLocalFile(str(row.path))):
            show_error(self, "Could not open the folder",
                       f"No file manager could open '{row.path}'. The path is shown under the run's name.")

    def delete_selected(self) -> None:
        rows = self.selected_rows()
        if not rows:
            return
        exporting = [r for r in rows if same_path(r.path, self._exporting or "")]
        if exporting:
            show_error(self, "Cannot delete a run being exported",
                       f"The student of '{exporting[0].name}' is being exported right now. Delete the "
                       "run when the export has finished.")
            return
        active = [r for r in rows if self._is_active(r)]
        if active:
            show_error(self, "Cannot delete a running run",
                       f"'{active[0].name}' is training right now. Stop it on the Train page first, "
                       "then delete it.")
            return
        what = f"the run '{rows[0].name}'" if len(rows) == 1 else f"these {len(rows)} runs"
        where = "its folder" if len(rows) == 1 else "their folders"
        answer = QMessageBox.question(self, "Delete runs?" if len(rows) > 1 else "Delete this run?",
                                      f"Delete {what} and everything in {where} (checkpoints, student "
                                      "model, curves)? This cannot be undone.",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return
        paths = [r.path for r in rows]
        self.message.setText(f"Deleting {what}...")
        self.ctx.jobs.submit(lambda: delete_runs(paths), lambda done: self._deleted(done, what),
                             lambda exc: self._delete_failed(exc))

    def _deleted(self, done: list[str], what: str) -> None:
        self.message.setText(f"Deleted {what}.")
        self.refresh()
        self.runs_deleted.emit(done)

    def _delete_failed(self, exc: BaseException) -> None:
        self.message.setText("")
        self.refresh()
        show_error(self, "Could not delete the run", f"Deleting failed part-way: {exc}. What is left "
                   "of the run stays in the table.")
