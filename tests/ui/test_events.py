"""A past run's metrics.jsonl lines come back as the typed events a live run sends."""

import json

from kdstudio.core import events as ev
from kdstudio.ui.events import event_from_record, events_from_records

EVENTS = [
    ev.Log("hello", "warning"),
    ev.Stage("load models", "teacher"),
    ev.Progress("download", 3, 10, "MB", {"loss": 1.5}),
    ev.Started("/runs/x", "causal-lm", "cpu", "float32", "t", "s", 100, 10, 6, 0, 96, 40),
    ev.Step(1, 6, {"total": 1.0, "logit": 1.0}, 1e-3, 10.0, 100.0, 12.0, 0.5, 2.5),
    ev.Eval(2, {"perplexity": 40.0}, {"perplexity": 20.0}, [{"input": "a", "student": "b"}]),
    ev.Checkpoint(2, "/runs/x/checkpoints/step-2"),
    ev.Finished("finished", "/runs/x", {"steps": 6}),
    ev.Failed("ConfigError", "Invalid run configuration", "bad key"),
    ev.SweepProgress("sw", 0, 3, "2 layers", "running"),
]


def test_every_event_survives_the_file():
    lines = [json.loads(json.dumps(e.to_dict())) for e in EVENTS]
    assert [event_from_record(d) for d in lines] == EVENTS
    assert events_from_records(lines) == EVENTS


def test_unknown_or_incomplete_lines_are_skipped():
    step = ev.Step(1, 6, {"total": 1.0}, 1e-3, 10.0, 100.0, 12.0, 0.5, 2.5).to_dict()
    newer = {**step, "grad_norm": 0.3}  # a field a later version adds is ignored
    assert event_from_record(newer) == event_from_record(step)
    del step["lr"]
    assert event_from_record(step) is None
    assert event_from_record({"kind": "weather"}) is None
    assert event_from_record({"step": 1}) is None
    assert events_from_records([{"kind": "weather"}, newer]) == [event_from_record(newer)]
