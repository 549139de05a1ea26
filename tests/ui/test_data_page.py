"""The Data page: previews of the built-in corpus and of local files, column overrides, errors."""

import csv

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QMessageBox

from kdstudio.ui.context import AppContext
from kdstudio.ui.jobs import JobRunner
from kdstudio.core.demos import demo_config
from kdstudio.ui.pages.data.page import DataPage
from kdstudio.ui.settings import Settings
from kdstudio.ui.worker import TrainingController

LONG = 60000


@pytest.fixture
def page(qtbot):
    jobs = JobRunner()
    ctx = AppContext(demo_config(), Settings(), jobs, TrainingController())
    p = DataPage(ctx)
    jobs.setParent(p)  # as in the app: the jobs' answers go when the page goes

    def settle(_widget):
        # Every pending count and job answer is delivered before pytest-qt closes the page.
        qtbot.waitUntil(lambda: not p._count_timer.isActive() and jobs.active() == 0, timeout=LONG)

    qtbot.addWidget(p, before_close_func=settle)
    p.resize(1100, 760)
    return p


@pytest.fixture
def reviews(tmp_path):
    """A CSV with an id, a text, a two-class label and a column of fractional scores."""
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "review", "sentiment", "score"])
        for i in range(40):
            good = i % 2 == 0
            w.writerow([i, f"Review number {i}: the product was {'lovely and worked well' if good else 'broken on arrival, sadly'}.",
                        "pos" if good else "neg", f"{i / 7:.3f}"])
    return path


def _header(p, column):
    return p.table.horizontalHeaderItem(p.table.columns.index(column))


def _error_box(p):
    return p.findChild(QMessageBox, "errorDialog")


def test_builtin_corpus_preview_and_counts(page, qtbot):
    page.show()  # previews load when the page is first shown
    qtbot.waitUntil(lambda: page.table.rowCount() > 0, timeout=LONG)
    assert page.table.columns == ["text", "topic"]
    assert page.table.rowCount() == 50
    assert page.table.item(0, 0).text().startswith("Training starts at half six")
    assert page.text_combo.itemText(0) == "Detect automatically (text)"
    assert page.label_combo.itemText(0) == "Detect automatically (topic)"
    assert _header(page, "text").text() == "text  (text)" and _header(page, "text").font().bold()
    assert page.counts.rows.text() == "1,700"
    assert "1,700" in page.status.text() and "'train'" in page.status.text()
    # Tokens are counted with the teacher's (MiniLM's) tokenizer: 80% of 1,700 rows train.
    qtbot.waitUntil(lambda: "counted" in page.counts.tokens.text(), timeout=LONG)
    assert page.counts.used.text() == "1,360 / 340 rows"
    assert "counted exactly" in page.counts.tokens.text()
    tokens = int(page.counts.tokens.text().split()[0].replace(",", ""))
    assert 1360 * 5 < tokens < 1360 * 60
    assert "of the rows are longer than 64 tokens" in page.counts.cut.text()


def test_local_csv_preview_column_override_and_limits(page, qtbot, reviews):
    page.show()
    page.source.choose_file(str(reviews))
    qtbot.waitUntil(lambda: page.table.columns == ["id", "review", "sentiment", "score"], timeout=LONG)
    ctx = page.ctx
    assert ctx.config.data.dataset == str(reviews)
    assert page.source.file_radio.isChecked() and page.source.file_edit.text() == str(reviews)
    assert page.preview.text_column == "review" and page.preview.label_column == "sentiment"
    assert page.counts.rows.text() == "40"

    # Use another column as the text: the config and the preview follow.
    i = page.text_combo.findData("sentiment")
    page.text_combo.setCurrentIndex(i)
    page.text_combo.activated.emit(i)
    assert ctx.config.data.text_column == "sentiment"
    qtbot.waitUntil(lambda: page.preview.text_column == "sentiment", timeout=LONG)
    assert _header(page, "sentiment").text() == "sentiment  (text)"
    assert _header(page, "review").text() == "review" and not _header(page, "review").font().bold()

    page.length_spin.setValue(48)
    page.fraction_spin.setValue(25)
    page.limit_spin.setValue(20)
    assert (ctx.config.data.max_length, ctx.config.data.eval_fraction,
            ctx.config.data.max_train_samples) == (48, 0.25, 20)
    qtbot.waitUntil(lambda: page.counts.used.text() == "20 / 10 rows", timeout=LONG)


def test_labels_that_are_not_classes_show_the_data_error(page, qtbot, reviews):
    page.show()
    page.ctx.set_value("", "task", "sequence-classification")
    page.source.choose_file(str(reviews))
    qtbot.waitUntil(lambda: page.preview is not None and page.preview.label_names == ["neg", "pos"],
                    timeout=LONG)
    assert page.counts.classes.text() == "2: neg, pos"
    i = page.label_combo.findData("score")
    page.label_combo.setCurrentIndex(i)
    page.label_combo.activated.emit(i)
    qtbot.waitUntil(lambda: _error_box(page) is not None, timeout=LONG)
    box = _error_box(page)
    assert box.windowTitle() == "Data problem"
    assert "'score'" in box.text() and "not classes" in box.text()
    # The choice stays as the user made it, and the page keeps working.
    assert page.ctx.config.data.label_column == "score"
    assert page.label_combo.currentData() == "score"
    assert page.refresh_button.isEnabled() and "could not be read" in page.status.text()


def test_missing_file_shows_a_dialog_and_keeps_the_path(page, qtbot, tmp_path):
    page.show()
    qtbot.waitUntil(lambda: page.table.rowCount() > 0, timeout=LONG)
    missing = str(tmp_path / "nowhere" / "data.csv")
    page.source.file_edit.setText(missing)
    qtbot.mouseClick(page.source.file_radio, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _error_box(page) is not None, timeout=LONG)
    box = _error_box(page)
    assert box.windowTitle() == "Data problem"
    assert missing in box.text() and "does not exist" in box.text()
    assert page.source.file_edit.text() == missing
    assert page.ctx.config.data.dataset == missing
    assert page.table.rowCount() == 0


def test_dropping_a_file_on_the_page_uses_it(page, qtbot, reviews):
    page.show()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(reviews))])
    enter = QDragEnterEvent(QPoint(20, 20), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    page.dragEnterEvent(enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime,
                      Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    page.dropEvent(drop)
    assert page.ctx.config.data.dataset == str(reviews)
    qtbot.waitUntil(lambda: "review" in page.table.columns, timeout=LONG)
    text_only = QMimeData()
    text_only.setText("not a file")
    refused = QDragEnterEvent(QPoint(20, 20), Qt.DropAction.CopyAction, text_only,
                              Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    page.dragEnterEvent(refused)
    assert not refused.isAccepted()


def test_hub_row_writes_name_and_config(page, qtbot):
    page.show()
    qtbot.mouseClick(page.source.hub_radio, Qt.MouseButton.LeftButton)
    assert page.source.hub_edit.isEnabled() and not page.source.file_edit.isEnabled()
    page.source.hub_edit.setText("someone/no-such-dataset")
    page.source.hub_config_edit.setText("en")
    qtbot.mouseClick(page.source.hub_button, Qt.MouseButton.LeftButton)
    d = page.ctx.config.data
    assert (d.dataset, d.config_name) == ("someone/no-such-dataset", "en")
    # Offline in the tests: the engine's error arrives as a dialog.
    qtbot.waitUntil(lambda: _error_box(page) is not None, timeout=LONG)
    assert _error_box(page).windowTitle() == "Data problem"
    assert "someone/no-such-dataset" in _error_box(page).text()


def test_widgets_follow_a_replaced_config(page, qtbot, reviews):
    cfg = demo_config()
    cfg.data.dataset = str(reviews)
    cfg.data.text_column = "review"
    cfg.data.max_length = 77
    cfg.data.eval_split = "validation"
    page.ctx.replace_config(cfg)
    assert page.source.file_radio.isChecked() and page.source.file_edit.text() == str(reviews)
    assert page.text_combo.currentData() == "review"
    assert page.length_spin.value() == 77
    # A split the data does not have is shown as such, not silently dropped.
    assert page.eval_combo.currentData() == "validation"
    assert "not in this data" in page.eval_combo.currentText()
    assert not page.fraction_spin.isEnabled()
    page.ctx.set_value("", "task", "causal-lm")
    assert page.pack_check.isVisibleTo(page) and not page.label_combo.isVisibleTo(page)
