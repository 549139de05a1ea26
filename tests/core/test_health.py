"""The run-health watch on event streams: each alarm is raised by the pattern it names, once,
and stays quiet on a healthy run."""

import math

import pytest

from kdstudio.core.events import Eval, Finished, Health, Step
from kdstudio.core.health import ALARMS, HealthWatch, TermInfo, repeated_share


def _step(i: int, total: float, **terms: float) -> Step:
    return Step(step=i, total_steps=100, losses={**terms, "total": total}, lr=1e-3,
                samples_per_s=1.0, tokens_per_s=1.0, memory_mb=0.0, elapsed_s=float(i), eta_s=0.0)


def _watch(**kw) -> HealthWatch:
    terms = kw.pop("terms", [TermInfo("logit", 1.0, "logit_weight", "logit distillation"),
                             TermInfo("hard_label", 0.5, "hard_label_weight", "the hard-label loss")])
    return HealthWatch(headline=kw.pop("headline", ("accuracy", True)), terms=terms,
                       total_steps=kw.pop("total_steps", 100))


def _feed(watch: HealthWatch, events) -> list:
    out = []
    for e in events:
        out += watch(e)
    return out


def _healthy(n_evals: int = 10):
    """A run whose loss falls and whose accuracy rises, with terms of similar size."""
    events = [Eval(step=0, metrics={"accuracy": 0.5}, teacher_metrics={"accuracy": 0.9})]
    for k in range(1, n_evals + 1):
        for i in range((k - 1) * 10 + 1, k * 10 + 1):
            loss = 2.0 / (1 + 0.05 * i)
            events.append(_step(i, loss * 1.5, logit=loss, hard_label=loss))
        events.append(Eval(step=k * 10, metrics={"accuracy": 0.5 + 0.03 * k}))
    return events


def test_a_healthy_run_raises_nothing():
    assert _feed(_watch(), _healthy()) == []


def test_a_loss_that_is_not_a_number_stops_the_run_once():
    w = _watch()
    out = _feed(w, [_step(1, 2.0, logit=1.0, hard_label=1.0),
                    _step(2, float("nan"), logit=float("nan"), hard_label=1.0),
                    _step(3, float("inf"), logit=float("inf"), hard_label=1.0)])
    assert [h.alarm for h in out] == ["nan_loss"]
    assert out[0].level == "error" and out[0].step == 2
    assert w.stopping is out[0]
    assert "logit distillation" in out[0].message
    assert out[0].setting == "training.learning_rate"


def test_a_rising_loss_over_three_intervals_is_noticed():
    events = [Eval(step=0, metrics={"accuracy": 0.5})]
    for k in range(1, 6):
        for i in range((k - 1) * 10 + 1, k * 10 + 1):
            events.append(_step(i, 1.0 * 1.2 ** k, logit=1.0, hard_label=1.0))
        events.append(Eval(step=k * 10, metrics={"accuracy": 0.5 + 0.05 * k}))
    out = _feed(_watch(), events)
    assert [h.alarm for h in out] == ["loss_rising"]
    assert out[0].step == 40  # the fourth interval is the third rise


def test_terms_out_of_balance_name_the_small_one_and_the_setting():
    events = [_step(i, 100.0, logit=0.001, hard_label=200.0) for i in range(1, 21)]
    out = _feed(_watch(), events)
    assert [h.alarm for h in out] == ["unbalanced"]
    assert "logit distillation" in out[0].message and "hard-label" in out[0].message
    assert out[0].setting == "method.balance"
    # Plain words for the app; the setting travels apart (the command line prints it).
    assert "logit distillation" in out[0].advice and "method." not in out[0].advice


def test_terms_within_a_hundredfold_are_not_out_of_balance():
    events = [_step(i, 1.0, logit=0.05, hard_label=2.0) for i in range(1, 21)]
    assert _feed(_watch(), events) == []


def test_quality_that_peaked_and_fell_is_noticed_and_noise_is_not():
    def run(values):
        events = [Eval(step=0, metrics={"accuracy": 0.5})]
        for k, v in enumerate(values, start=1):
            events += [_step(i, 2.0 - 0.01 * i, logit=1.0, hard_label=1.0)
                       for i in range((k - 1) * 10 + 1, k * 10 + 1)]
            events.append(Eval(step=k * 10, metrics={"accuracy": v}))
        return _feed(_watch(), events)

    out = run([0.6, 0.7, 0.75, 0.70, 0.68])
    assert [h.alarm for h in out] == ["quality_falling"]
    assert "step 30" in out[0].message and out[0].setting == "training.max_steps"
    # Wobbles inside the noise (1%) are not a fall.
    assert run([0.6, 0.7, 0.75, 0.7451, 0.746]) == []
    # Lower is better (perplexity): a rise is the fall.
    w = _watch(headline=("perplexity", False))
    events = [Eval(step=0, metrics={"perplexity": 300.0})]
    for k, v in enumerate([200.0, 170.0, 160.0, 175.0, 180.0], start=1):
        events.append(Eval(step=k * 10, metrics={"perplexity": v}))
    assert [h.alarm for h in _feed(w, events)] == ["quality_falling"]


def test_repeating_continuations_are_collapse_and_the_teacher_sets_the_bar():
    loop = "the cat sat on the mat " * 6
    fine = "we walked to the harbour and watched the boats come in before the rain started"
    assert repeated_share(loop) > 0.7
    assert repeated_share(fine) == 0.0
    assert repeated_share("sport") == 0.0  # a class name is not a loop
    samples = [{"input": "p", "student": loop, "teacher": fine}] * 3
    out = _feed(_watch(), [Eval(step=10, metrics={}, samples=samples)])
    assert [h.alarm for h in out] == ["repetition"]
    # A teacher that loops as much raises nothing: the student copies it faithfully.
    same = [{"input": "p", "student": loop, "teacher": loop}] * 3
    assert _feed(_watch(), [Eval(step=10, metrics={}, samples=same)]) == []


def test_entropy_far_below_the_teachers_is_collapse():
    w = _watch(headline=("perplexity", False))
    out = _feed(w, [Eval(step=0, metrics={"entropy": 3.0}, teacher_metrics={"entropy": 3.2}),
                    Eval(step=10, metrics={"entropy": 1.2})])
    assert [h.alarm for h in out] == ["entropy_collapse"]
    assert _feed(_watch(), [Eval(step=0, metrics={}, teacher_metrics={"entropy": 3.2}),
                            Eval(step=10, metrics={"entropy": 2.5})]) == []


def test_sentence_vectors_all_alike_are_collapse():
    w = _watch(headline=("knn_accuracy", True), terms=[])
    out = _feed(w, [Eval(step=0, metrics={"embedding_spread": 0.6},
                         teacher_metrics={"embedding_spread": 0.7}),
                    Eval(step=10, metrics={"embedding_spread": 0.01})])
    assert [h.alarm for h in out] == ["embedding_collapse"]
    assert out[0].setting == "method.similarity_weight"


def test_a_student_that_does_not_learn_is_noticed_after_a_third_of_the_steps():
    events = [Eval(step=0, metrics={"accuracy": 0.5})]
    for k in range(1, 5):
        events += [_step(i, 2.0 + 0.001 * (i % 3), logit=1.0, hard_label=1.0)
                   for i in range((k - 1) * 10 + 1, k * 10 + 1)]
        events.append(Eval(step=k * 10, metrics={"accuracy": 0.5}))
    out = _feed(_watch(), events)
    assert [h.alarm for h in out] == ["not_learning"]
    assert out[0].step == 40  # not before a third of the 100 steps


def test_worse_than_plain_training_is_noticed_at_the_end():
    s = {"steps": 100, "student_metrics": {"accuracy": 0.70}, "baseline_metrics": {"accuracy": 0.80}}
    out = _feed(_watch(), [Finished(status="finished", run_dir="", summary=s)])
    assert [h.alarm for h in out] == ["worse_than_plain"]
    better = {**s, "student_metrics": {"accuracy": 0.85}}
    assert _feed(_watch(), [Finished(status="finished", run_dir="", summary=better)]) == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_health_events_round_trip_through_the_metrics_file(value):
    from kdstudio.core.events import event_from_record

    w = _watch()
    (h,) = w(_step(1, value, logit=value, hard_label=1.0))
    back = event_from_record(h.to_dict())
    assert back == h


def test_a_fall_within_the_evaluations_own_noise_is_not_called_a_fall():
    """The embedding demo's topic accuracy went 0.709, 0.700, 0.685, 0.674 on 340 sentences:
    a 3.5-point fall, inside the noise of a share measured on 340 texts (about 7 points for
    a difference of two), so no alarm; on 10,000 texts the same fall is real."""
    def run(n):
        w = HealthWatch(headline=("knn_accuracy", True), terms=[], total_steps=180,
                        eval_samples=n)
        values = [0.6618, 0.7088, 0.7, 0.6853, 0.6735]
        return _feed(w, [Eval(step=50 * i, metrics={"knn_accuracy": v})
                         for i, v in enumerate(values)])

    assert run(340) == []
    assert [h.alarm for h in run(10_000)] == ["quality_falling"]



def one_of_each() -> dict[str, Health]:
    """Every alarm of the watch, each raised by the event pattern it names."""
    loop = "the cat sat on the mat " * 6

    def evals(metric, values, higher=True, loss=lambda i, k: 2.0 - 0.01 * i):
        events = [Eval(step=0, metrics={metric: values[0]})]
        for k, v in enumerate(values[1:], start=1):
            events += [_step(i, loss(i, k), logit=1.0, hard_label=1.0)
                       for i in range((k - 1) * 10 + 1, k * 10 + 1)]
            events.append(Eval(step=k * 10, metrics={metric: v}))
        return events

    streams = [
        [_step(1, float("nan"), logit=float("nan"), hard_label=1.0)],
        evals("accuracy", [0.5, 0.55, 0.6, 0.65, 0.7], loss=lambda i, k: 1.2 ** k),
        [_step(i, 100.0, logit=0.001, hard_label=200.0) for i in range(1, 21)],
        evals("accuracy", [0.5, 0.6, 0.7, 0.75, 0.70, 0.68]),
        [Eval(step=10, metrics={}, samples=[{"input": "p", "student": loop, "teacher": "x"}])],
        [Eval(step=0, metrics={"entropy": 3.0}, teacher_metrics={"entropy": 3.2}),
         Eval(step=10, metrics={"entropy": 1.0})],
        [Eval(step=10, metrics={"embedding_spread": 0.01})],
        [Finished(status="finished", run_dir="", summary={
            "student_metrics": {"accuracy": 0.5}, "baseline_metrics": {"accuracy": 0.9}})],
        evals("accuracy", [0.5] * 5, loss=lambda i, k: 2.0 + 0.001 * (i % 3)),
    ]
    seen: dict[str, Health] = {}
    for events in streams:
        for h in _feed(_watch(), events):
            seen.setdefault(h.alarm, h)
    return seen


def test_every_alarm_is_provoked_by_its_pattern_and_names_its_setting():
    seen = one_of_each()
    assert sorted(seen) == sorted(ALARMS)
    for alarm, h in seen.items():
        assert h.setting == ALARMS[alarm] and h.message and h.advice


def test_alarms_speak_plain_words_and_carry_the_setting_apart():
    """The app shows message and advice as they are: no config syntax in them; the setting
    (config syntax, for the command line and the app's button) travels in its own field."""
    for h in one_of_each().values():
        for text in (h.message, h.advice):
            assert "method." not in text and "training." not in text and " = " not in text, text
        assert h.setting.split(".")[0] in ("method", "training")
