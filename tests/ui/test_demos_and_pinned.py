"""The Run menu's built-in demos, and the Train page's pinned answers during a real causal-lm run."""

import pytest
from PySide6.QtWidgets import QMessageBox

from kdstudio.core.config import load_config
from kdstudio.core.events import Eval
from kdstudio.core.runs import resources_dir
from kdstudio.core.demos import DEMOS
from tests.conftest import tiny_config
from tests.ui.conftest import open_window

pytestmark = pytest.mark.slow  # every test here takes more than about two seconds

RUN = 180000


def visible_error(widget):
    boxes = [b for b in widget.findChildren(QMessageBox, "errorDialog") if b.isVisible()]
    return boxes[0] if boxes else None


def test_the_run_menu_offers_the_four_demos(qtbot):
    w = open_window(qtbot, "models", demo=True)
    menu = w.demo_menu
    run_menu = next(a.menu() for a in w.menuBar().actions() if a.text().replace("&", "") == "Run")
    assert menu.menuAction() in run_menu.actions()
    tasks = [a.objectName() for a in menu.actions()]
    assert tasks == ["demo_sentence-embedding", "demo_sequence-classification", "demo_causal-lm",
                     "demo_token-classification"]
    assert [t.name for t in DEMOS] == ["sentence-embedding", "sequence-classification", "causal-lm",
                                       "token-classification"]
    assert [a.text() for a in menu.actions()] == [t.demo_menu for t in DEMOS]
    assert all(a.text() and a.isEnabled() for a in menu.actions())
    for task in ("sequence-classification", "sentence-embedding"):  # shipped with the app
        w.show_page("models")
        w.demo_actions[task].trigger()
        assert w.ctx.config.to_dict() == load_config(resources_dir() / "demos" / f"{task}.toml").to_dict()
        assert w.current_page_key() == "train"


def test_the_causal_lm_demo_loads_its_file(qtbot, tmp_path, monkeypatch, tiny):
    w = open_window(qtbot, "models", demo=True)
    (tmp_path / "demos").mkdir()
    cfg = tiny_config("causal-lm", tiny["gpt2"], name="lm-demo")
    cfg.save(tmp_path / "demos" / "causal-lm.toml")
    monkeypatch.setattr("kdstudio.core.runs.resources_dir", lambda: tmp_path)
    w.demo_actions["causal-lm"].trigger()
    assert w.ctx.config.task == "causal-lm" and w.ctx.config.name == "lm-demo"
    assert w.current_page_key() == "train"


def test_a_missing_demo_is_a_message_not_a_crash(qtbot, tmp_path, monkeypatch):
    w = open_window(qtbot, "models", demo=True)
    before = w.ctx.config.to_dict()
    (tmp_path / "demos").mkdir()
    monkeypatch.setattr("kdstudio.core.runs.resources_dir", lambda: tmp_path)
    w.demo_actions["causal-lm"].trigger()
    qtbot.waitUntil(lambda: visible_error(w) is not None)
    box = visible_error(w)
    assert box.windowTitle() == "Demo not available"
    assert "causal-lm demo" in box.text() and str(tmp_path / "demos" / "causal-lm.toml") in box.text()
    assert w.ctx.config.to_dict() == before and w.current_page_key() == "models"
    box.accept()


@pytest.mark.parametrize("pinned", [["The weather today", "A cup of tea"]])
def test_pinned_prompts_show_the_students_generation_at_each_evaluation(qtbot, tiny, pinned):
    w = open_window(qtbot, "train", demo=True)
    page = w.pages["train"]
    w.ctx.replace_config(tiny_config("causal-lm", tiny["gpt2"], training={"max_steps": 6, "eval_every": 2},
                                     evaluation={"pinned_inputs": pinned}))
    assert page.pinned.inputs() == pinned  # the Train page's list shows the config's prompts
    seen = []

    def check(e):  # runs after the page has drawn the event (it connected first)
        if not isinstance(e, Eval):
            return
        table = page.answers.table
        seen.append((e.step, [s["student"] for s in e.samples],
                     [table.item(r, 1).text() for r in range(table.rowCount())],
                     [table.item(r, 0).text() for r in range(table.rowCount())],
                     page.answers.caption.text()))

    w.ctx.run_event.connect(check)
    with qtbot.waitSignal(w.ctx.run_finished, timeout=RUN) as finished:
        w.start_run()
    assert finished.args[0].status == "finished"
    steps = [s for s, *_ in seen]
    assert steps[:4] == [0, 2, 4, 6]  # before training, every eval_every steps, and at the end
    for step, students, shown, inputs, caption in seen:
        assert inputs == pinned and shown == students  # the table follows every evaluation
        assert caption == f"Answers at step {step}:"
        assert all(isinstance(x, str) for x in students) and any(x.strip() for x in students)
    hist = page.answers.history(pinned[0])
    assert [st for st, _ in hist] == [0, 2, 4, 6]
    assert [a for _, a in hist] == [s[1][0] for s in seen if s[0] in (0, 2, 4)] + [seen[-1][1][0]]
    tip = page.answers.table.item(0, 1).toolTip()
    assert "step 0:" in tip and "step 6:" in tip
