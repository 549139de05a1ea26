"""The run-health watch stays quiet on the four built-in demos: it replays the Step, Eval
and Finished events that a full run of each demo recorded (tests/core/demo_events, written
by `packaging/record_demo_events.py TASK`, a whole `kdstudio demo --task TASK` run), with the
demo's own loss terms and headline figure. Each recording must carry the figures that the
alarms for its task read, or the replay would be quiet for want of them."""

import json
from pathlib import Path

import pytest

from kdstudio.core.config import load_config
from kdstudio.core.events import Eval, Finished, Step, event_from_record
from kdstudio.core.health import watch_for
from kdstudio.core.runs import resources_dir
from kdstudio.core.tasks import get_task

HERE = Path(__file__).parent / "demo_events"
DEMOS = ["sentence-embedding", "sequence-classification", "causal-lm", "token-classification"]
# What each demo's recording must carry beyond losses and the headline figure: the sentence
# vectors' spread (embedding collapse), the pinned prompts' answers (repetition), the student's
# entropy (entropy collapse) and the plain-training baseline (worse than plain).
CARRIES = {"sentence-embedding": {"embedding_spread"}, "sequence-classification": set(),
           "causal-lm": {"samples", "baseline_metrics", "entropy"},
           "token-classification": set()}


def _carried(evals, finished) -> set[str]:
    out = set()
    for name in ("embedding_spread", "entropy"):
        if all(name in e.metrics for e in evals) and name in evals[0].teacher_metrics:
            out.add(name)
    if all(e.samples for e in evals):
        out.add("samples")
    if "baseline_metrics" in finished.summary:
        out.add("baseline_metrics")
    return out


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
    finished = next(e for e in events if isinstance(e, Finished))
    assert CARRIES[task] <= _carried(evals, finished)
    started = next(r for r in records if r.get("kind") == "started")
    watch = watch_for(get_task(task), cfg.method, headline, steps[-1].total_steps,
                      started["eval_samples"])
    raised = []
    for e in events:
        raised += watch(e)
    assert [(h.alarm, h.message) for h in raised] == []
