"""The run-health watch stays quiet on the three built-in demos: it replays the Step, Eval
and Finished events that a full run of each demo recorded (tests/core/demo_events, written
by `kdstudio demo --task TASK` on this code), with the demo's
own loss terms and headline figure."""

import json
from pathlib import Path

import pytest

from kdstudio.core.config import load_config
from kdstudio.core.events import Eval, Finished, Step, event_from_record
from kdstudio.core.health import watch_for
from kdstudio.core.runs import resources_dir
from kdstudio.core.tasks import get_task

HERE = Path(__file__).parent / "demo_events"
DEMOS = ["sentence-embedding", "sequence-classification", "causal-lm"]


@pytest.mark.parametrize("task", DEMOS)
def test_the_watch_is_quiet_on_the_demo(task):
    cfg = load_config(resources_dir() / "demos" / f"{task}.toml")
    records = [json.loads(line) for line in (HERE / f"{task}.jsonl").read_text().splitlines()]
    events = [e for e in map(event_from_record, records) if isinstance(e, (Step, Eval, Finished))]
    steps = [e for e in events if isinstance(e, Step)]
    assert steps and steps[-1].step == steps[-1].total_steps  # a whole run, not a part
    evals = [e for e in events if isinstance(e, Eval)]
    headline = get_task(task).headline(True)[0]
    assert headline in evals[-1].metrics
    started = next(r for r in records if r.get("kind") == "started")
    watch = watch_for(get_task(task), cfg.method, headline, steps[-1].total_steps,
                      started["eval_samples"])
    raised = []
    for e in events:
        raised += watch(e)
    assert [(h.alarm, h.message) for h in raised] == []
