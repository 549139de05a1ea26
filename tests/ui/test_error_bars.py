"""95% intervals in the app: error bars on the Train page's quality plot and the Tradeoff
chart, ± in the Runs and Compare tables, and older runs without intervals shown as before."""

import json

import numpy as np
import pyqtgraph as pg

from kdstudio.core.sweep.figures import TableRow, summary_sentence

SUMMARY = {"name": "r", "status": "finished", "task": "sentence-embedding",
           "headline_metric": "knn_accuracy", "quality_retained": 0.967,
           "teacher_metrics": {"knn_accuracy": 0.697},
           "student_metrics_before": {"knn_accuracy": 0.662},
           "student_metrics": {"knn_accuracy": 0.674, "cosine_to_teacher": 0.892},
           "intervals": {"knn_accuracy": [0.65, 0.70], "teacher.knn_accuracy": [0.67, 0.72],
                         "quality_retained": [0.95, 0.99]}}


def test_the_quality_plot_draws_each_evaluations_interval(qtbot):
    from kdstudio.ui.pages.train.plots import TrainPlots

    plots = TrainPlots()
    qtbot.addWidget(plots)
    plots.add_eval(0, 0.60, 0.70, (0.55, 0.66))
    plots.add_eval(50, 0.68, None, (0.64, 0.70))
    plots.add_eval(100, 0.69, None)  # an older run's event: the point alone
    plots.flush()
    bars = plots.eval_bars.opts
    assert list(bars["x"]) == [0, 50]
    # The percentile interval need not be centred: above and below are drawn apart.
    assert np.allclose(bars["top"], [0.06, 0.02]) and np.allclose(bars["bottom"], [0.05, 0.04])
    assert len(plots.evals.data()[0]) == 3
    plots.reset()
    plots.flush()
    assert len(plots.eval_bars.opts["x"]) == 0


def test_runs_table_shows_plus_minus_and_old_runs_without(tmp_path):
    from kdstudio.ui.pages.runs.model import COL, RunsTableModel, read_row

    new, old = tmp_path / "new", tmp_path / "old"
    for folder, s in ((new, SUMMARY), (old, {k: v for k, v in SUMMARY.items() if k != "intervals"})):
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps(s))
    rows = [read_row(p, {"knn_accuracy": "Nearest-neighbour topic accuracy"}) for p in (new, old)]
    assert rows[0].quality_interval == (0.95, 0.99) and rows[1].quality_interval is None
    model = RunsTableModel()
    model.set_rows(rows)
    texts = [model.data(model.index(r, COL[k])) for r in range(2)
             for k in ("headline", "quality_retained")]
    assert texts[0] == "Nearest-neighbour topic accuracy 0.674 ± 0.025"
    assert texts[1] == "96.7% ± 2.0%"
    assert texts[2] == "Nearest-neighbour topic accuracy 0.674" and texts[3] == "96.7%"


def test_compare_table_shows_plus_minus_and_old_runs_without(qtbot):
    from kdstudio.ui.pages.compare.table import FiguresTable, table_from_summary

    table = FiguresTable()
    qtbot.addWidget(table)
    table.set_figures(table_from_summary(SUMMARY), SUMMARY)
    assert table.cell("metric", 0) == "69.7% ± 2.5%" and table.cell("metric", 1) == "67.4% ± 2.5%"
    assert table.cell("quality_retained", 1) == "96.7% ± 2.0%"
    old = {k: v for k, v in SUMMARY.items() if k != "intervals"}
    table.set_figures(table_from_summary(old), old)
    assert table.cell("metric", 1) == "67.4%" and table.cell("quality_retained", 1) == "96.7%"


def _rows(low=None, high=None):
    return [TableRow("teacher", "teacher", params=100, size_mb=4.0, quality_retained=1.0,
                     speedup=1.0, params_share=1.0, size_share=1.0),
            TableRow("1 layer", "student", params=30, size_mb=1.2, quality_retained=0.97,
                     params_share=0.3, size_share=0.3, layers=1, run_dir="/x",
                     quality_low=low, quality_high=high)]


def test_tradeoff_chart_draws_quality_intervals_and_the_sentence_claims_no_smaller_difference(qtbot):
    from kdstudio.ui.pages.tradeoff.chart import draw_tradeoff

    widget = pg.PlotWidget()
    qtbot.addWidget(widget)
    draw_tradeoff(widget.getPlotItem(), _rows(0.95, 0.99), cost="params")
    bars = [i for i in widget.getPlotItem().items if isinstance(i, pg.ErrorBarItem)]
    assert len(bars) == 1 and list(bars[0].opts["x"]) == [30]
    assert np.allclose(bars[0].opts["top"], [2.0]) and np.allclose(bars[0].opts["bottom"], [2.0])
    draw_tradeoff(widget.getPlotItem(), _rows(), cost="params")  # an older sweep: no bars
    assert not [i for i in widget.getPlotItem().items if isinstance(i, pg.ErrorBarItem)]
    # 97% with an interval that reaches 100%: not claimed to be below the teacher.
    assert "matches the teacher's quality within its uncertainty (97% ± 3.0%)" in \
        summary_sentence(_rows(0.94, 1.00))
    assert "keeps 97% ± 2.0% of the teacher's quality" in summary_sentence(_rows(0.95, 0.99))
    assert "keeps 97% of the teacher's quality" in summary_sentence(_rows())
