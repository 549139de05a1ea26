"""setup.Setup: everything a run builds before its first step, in named parts."""

import dataclasses
from types import SimpleNamespace

import pytest

from kdstudio.core.setup import Data, Evaluation, Models, Setup, Targets, Training


def test_setup_and_its_parts_take_keywords_only():
    for cls in (Setup, Models, Data, Training, Evaluation, Targets):
        fields = [f for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        with pytest.raises(TypeError):
            cls(*[None] * len(fields))
    su = Setup(task=None, models=None, data=None, targets=Targets(plan=None),
               training=Training(distiller=None, opt=None, total_steps=3), evaluation=None)
    assert su.training.total_steps == 3 and su.targets.cache is None


def test_targets_record_names_the_cache_a_resume_reads_again():
    plan = SimpleNamespace(mode="cache", line="Teacher: cache")
    assert Targets(plan=plan).record() == {"mode": "cache", "why": "Teacher: cache",
                                           "teacher_weights": "loaded"}
    cache = SimpleNamespace(key="abc", k=8)
    assert Targets(plan=plan, cache=cache).record() == {"mode": "cache", "why": "Teacher: cache",
                                                        "teacher_weights": "loaded",
                                                        "key": "abc", "k": 8}
