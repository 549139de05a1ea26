"""The Models page's size control: target size and how to cut, by hand, the figures line."""

import pytest
from transformers import AutoConfig

from kdstudio.core.plan.pruned import pruned_estimate
from kdstudio.ui.pages.models.card import fmt_count
from kdstudio.ui.pages.models.size import SizeControl
from tests.conftest import tiny_config
from tests.ui.conftest import open_window

pytestmark = pytest.mark.slow


@pytest.fixture
def window(qtbot):
    w = open_window(qtbot, "models", demo=True)
    qtbot.waitUntil(lambda: w.pages["models"].ready, timeout=60000)
    return w


def test_target_size_writes_the_fields_and_the_figures_follow(window, qtbot, tiny):
    page = window.pages["models"]
    ctx = window.ctx
    with qtbot.waitSignal(ctx.teacher_info, timeout=60000,
                          check_params_cb=lambda i: i is not None and
                          i["source"] == str(tiny["bert"])):
        ctx.replace_config(tiny_config("sentence-embedding", tiny["bert"]))
    size = page.findChild(SizeControl, "sizeControl")
    assert size.isVisible()
    qtbot.waitUntil(lambda: size.estimate is not None, timeout=30000)
    assert not size.shape.isEnabled()  # only a target size is cut one way or another
    teacher = AutoConfig.from_pretrained(str(tiny["bert"]))

    def shows(student):
        est = pruned_estimate(student, teacher, "sentence-embedding")
        text = size.figures.text()
        return (size.estimate is not None and f"{fmt_count(est['parameters'])} parameters" in text
                and f"{est['share_of_teacher']:.0%} of the teacher" in text
                and f"{len(est['layers'])} of 4 layers" in text)

    size.target.setValue(40)  # percent
    assert ctx.config.student.target_size == pytest.approx(0.4)
    assert size.shape.isEnabled() and not size.heads.isEnabled()
    assert not page.layer_picker.count.isEnabled()  # the planner picks the layers
    qtbot.waitUntil(lambda: shows(ctx.config.student), timeout=30000)
    # The tiny teacher is mostly vocabulary: fewer layers alone cannot reach 40%; the
    # planner says what it picked, and the figures line shows it.
    by_layers = size.estimate["share_of_teacher"]
    assert size.estimate["note"] and size.estimate["note"][:40] in size.figures.text()

    size.shape.setCurrentIndex(size.shape.findData("width"))
    size.shape.activated.emit(size.shape.currentIndex())
    assert ctx.config.student.shape == "width"
    qtbot.waitUntil(lambda: shows(ctx.config.student), timeout=30000)
    assert "4 of 4 layers" in size.figures.text()  # width: every layer kept
    assert size.estimate["share_of_teacher"] < min(by_layers, 0.5)  # narrower embeddings too

    # A shape this teacher cannot take: the message, in the page's words, not config syntax.
    size.target.setValue(0)
    size.hand_button.click()
    assert size.heads.isVisible() and size.heads.isEnabled()
    size.heads.setValue(3)
    assert ctx.config.student.attention_heads == 3
    assert size.message.isVisible()
    assert "Attention heads" in size.message.text() and "only 2" in size.message.text()
    assert "student." not in size.message.text()
    assert not size.figures.isVisible()
    size.heads.setValue(1)
    assert not size.message.isVisible()
    qtbot.waitUntil(lambda: shows(ctx.config.student), timeout=30000)
    assert size.estimate["heads"] == 1 and size.estimate["hidden_size"] == 16
