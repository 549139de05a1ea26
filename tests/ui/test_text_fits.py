"""No text is cut: every page, on two screens (1280×800, 1920×1080) at three scale factors.

Each scale factor runs in its own process (QT_SCALE_FACTOR is read once, when Qt starts), the
three side by side, all on one run store built once here. A process opens the main window on
the built-in demo, and at each screen's own size in logical pixels (853×533 for 1280×800 at
150%) walks every page: the Runs page and Compare on each run, the Method page for every task
with its advanced settings open, the Train page at rest and during a run's first evaluation.
Pages too big for the window scroll; text scrolled out of view is not cut.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# (physical screen, scale): the window fills the screen's logical pixels.
SCREENS = [(1280, 800), (1920, 1080)]
SCALES = [1.0, 1.25, 1.5]


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory):
    """A run store with a finished sentence-embedding run (quality above the teacher's, the
    longest words a cell shows) and a finished causal-lm run."""
    from kdstudio.core.trainer import run_training
    from tests.conftest import tiny_config

    home = tmp_path_factory.mktemp("fits-home")
    old = os.environ.get("KDSTUDIO_HOME")
    os.environ["KDSTUDIO_HOME"] = str(home)
    try:
        emb = run_training(tiny_config("sentence-embedding", tiny["bert"], name="embedding demo",
                                       training={"max_steps": 2, "eval_every": 1}))
        from kdstudio.core.runs import Run

        Run(emb.run_dir).update_summary(quality_retained=1.004)
        run_training(tiny_config("causal-lm", tiny["gpt2"], name="a causal language model run",
                                 training={"max_steps": 2, "eval_every": 1}))
    finally:
        if old is None:
            os.environ.pop("KDSTUDIO_HOME", None)
        else:
            os.environ["KDSTUDIO_HOME"] = old
    return home


@pytest.fixture(scope="module")
def walks(store, tmp_path_factory):
    """Start one walk per scale factor at once (each mostly waits on its own start-up)."""
    folder = tmp_path_factory.mktemp("fits-walks")
    started = {}
    for scale in SCALES:
        out, err = folder / f"cuts-{scale}.json", open(folder / f"stderr-{scale}.txt", "w")
        env = {**os.environ, "KDSTUDIO_HOME": str(store), "QT_SCALE_FACTOR": str(scale),
               "QT_QPA_PLATFORM": "offscreen", "KD_FITS_OUT": str(out),
               "KD_FITS_SIZES": json.dumps([(round(w / scale), round(h / scale))
                                            for w, h in SCREENS])}
        proc = subprocess.Popen([sys.executable, "-m", "tests.ui.text_fits_walk"], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
        started[scale] = (proc, out, err)
    yield started
    for proc, _, err in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()


@pytest.mark.parametrize("scale", SCALES)
def test_no_text_is_cut(walks, scale):
    proc, out, err = walks[scale]
    proc.wait(timeout=420)
    err.flush()
    assert proc.returncode == 0, Path(err.name).read_text()[-3000:]
    cuts = json.loads(out.read_text())
    assert cuts == [], "\n".join(cuts)


def test_the_runs_chart_legend_leaves_the_last_point_visible(store, qtbot, monkeypatch):
    from PySide6.QtCore import QPointF

    from kdstudio.core.runs import list_runs
    from kdstudio.ui.pages.runs.details import RunDetailsPanel, load_details

    monkeypatch.setenv("KDSTUDIO_HOME", str(store))
    run = next(r for r in list_runs() if r.task == "sentence-embedding")
    panel = RunDetailsPanel()
    qtbot.addWidget(panel)
    panel.resize(1100, 420)
    panel.show()
    panel.show_details(load_details(run.path), "finished")
    qtbot.waitExposed(panel)
    item = panel.metric_plot.getPlotItem()
    curve = next(c for c in item.listDataItems() if c.name() == "student")
    x, y = curve.getData()
    last = item.vb.mapViewToScene(QPointF(float(x[-1]), float(y[-1])))
    legend = item.legend
    assert legend.isVisible() and legend.items  # the legend is shown, with the curves' names
    assert not legend.sceneBoundingRect().contains(last)
    assert not legend.sceneBoundingRect().intersects(item.vb.sceneBoundingRect())
