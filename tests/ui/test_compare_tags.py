"""The Compare page's entity tags: a tiny token-classification model tags the words of an
input through core.compare.Predictor, and each answer box shows them on the words."""

from __future__ import annotations

import pytest
import torch

from kdstudio.core.compare import Comparison, ModelAnswer, Predictor
from kdstudio.ui.pages.compare.answer import AnswerView, verdict
from kdstudio.ui.pages.compare.tags import TagView, colour_of, label_colour
from tests.conftest import minilm_folder

NAMES = ["O", "B-PLACE", "I-PLACE", "B-TIME"]


@pytest.fixture(scope="module")
def predictor():
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    tok = AutoTokenizer.from_pretrained(str(minilm_folder()))
    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=len(NAMES)))
    return Predictor(model, tok, "token-classification", device=torch.device("cpu"),
                     label_names=NAMES, measure_memory=False)


def test_answer_box_shows_each_models_tags_on_the_words(qtbot, predictor):
    view = AnswerView("teacher")
    qtbot.addWidget(view)
    view.resize(420, 300)
    view.show()
    answer = predictor.answer("We flew to New York on Friday.")
    assert [w for w, _, _ in answer.tags] == ["We", "flew", "to", "New", "York", "on", "Friday", "."]
    assert all(t in NAMES for _, t, _ in answer.tags)
    view.show_answer("token-classification", "We flew to New York on Friday.", answer)
    assert view.stack.currentWidget().isAncestorOf(view.tags)
    assert view.tags.isVisible() and view.tags.tags() == answer.tags
    assert view.findChild(TagView, "teacherTags") is view.tags
    assert "Latency" in view.figures.text()
    view.clear()
    assert view.tags.tags() == [] and not view.tags.isVisible()


def test_entities_are_highlighted_and_named_once(qtbot):
    tags = TagView()
    qtbot.addWidget(tags)
    rows = [("We", "O", 0.9), ("flew", "O", 0.9), ("to", "O", 0.8), ("New", "B-PLACE", 0.7),
            ("York", "I-PLACE", 0.6), ("on", "O", 0.9), ("Friday", "B-TIME", 0.95),
            ("again", "", 0.0)]
    tags.set_tags(rows)
    assert tags.entities() == [("New York", "PLACE"), ("Friday", "TIME")]
    html = tags.text()
    # One highlighted span per word of an entity, the type named once after the entity.
    assert html.count(colour_of("PLACE")) == 2 and html.count(">PLACE<") == 1
    assert html.count(label_colour("PLACE")) == 1
    assert html.count(">TIME<") == 1 and "again" in html
    assert tags.accessibleDescription() == "New York (PLACE); Friday (TIME)"
    assert "York: I-PLACE (60%)" in tags.toolTip()
    tags.set_tags([("Hello", "O", 0.99)])
    assert tags.entities() == [] and tags.accessibleDescription() == "no entities"


def test_verdict_counts_the_words_tagged_differently():
    t = ModelAnswer("x", 2.0, tags=[("Oslo", "B-PLACE", 0.9), ("now", "O", 0.9)])
    s = ModelAnswer("x", 1.0, tags=[("Oslo", "O", 0.6), ("now", "O", 0.9)])
    line = verdict("token-classification", Comparison(t, s))
    assert "2.0x faster" in line and "1 of 2 words" in line
    assert "alike" in verdict("token-classification", Comparison(t, t))


def test_a_verdict_from_too_few_timing_rounds_shows_the_ratio_but_claims_nothing():
    from kdstudio.core.timing import Session

    t = ModelAnswer("x", 8.0, tags=[("now", "O", 0.9)])
    s = ModelAnswer("x", 4.0, tags=[("now", "O", 0.9)])
    few = Comparison(t, s, Session({"teacher": [8.0, 8.1], "student": [4.0, 4.1]}))
    line = verdict("token-classification", few)
    assert "2.0x faster than the teacher in 2 timing rounds, too few to tell from noise" in line
    many = Comparison(t, s, Session({"teacher": [8.0] * 5, "student": [4.0] * 5}))
    assert "answered 2.0x faster than the teacher" in verdict("token-classification", many)
    assert "too few" not in verdict("token-classification", many)
