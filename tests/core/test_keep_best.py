"""training.keep = "best": validation rows apart from the training and held-out rows, the best
student chosen on them, kept through a resume, and its figures reported."""

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdstudio.core import checkpoints
from kdstudio.core import events as ev
from kdstudio.core.config import DataConfig, TrainingConfig
from kdstudio.core.data import load_text_data, validation_wanted
from kdstudio.core.runs import Run
from kdstudio.core.tasks.embedding import Embedding
from kdstudio.core.trainer import run_training
from tests.conftest import tiny_config


def test_validation_rows_only_leave_the_training_rows_and_follow_the_seed():
    cfg = DataConfig(eval_fraction=0.2, validation_fraction=0.1)
    plain = load_text_data(cfg, "sequence-classification", seed=1)
    val = load_text_data(cfg, "sequence-classification", seed=1, validation=True)
    assert plain.val_texts is None
    # The held-out rows are the same; the validation rows come out of the training rows only.
    assert val.eval_texts == plain.eval_texts and val.eval_labels == plain.eval_labels
    assert len(val.val_texts) == round(0.1 * len(plain.train_texts))
    rest = iter(val.train_texts)
    kept = [t for t in plain.train_texts if t not in set(val.val_texts)]
    assert kept == list(rest)  # the training rows left keep their order
    assert not set(val.val_texts) & set(plain.eval_texts)
    assert len(val.train_labels) == len(val.train_texts) and len(val.val_labels) == len(val.val_texts)
    again = load_text_data(cfg, "sequence-classification", seed=1, validation=True)
    other = load_text_data(cfg, "sequence-classification", seed=2, validation=True)
    assert again.val_texts == val.val_texts and other.val_texts != val.val_texts
    capped = load_text_data(cfg, "sequence-classification", seed=1, validation=True,
                            validation_cap=40)
    assert len(capped.val_texts) == 40  # at most evaluation.max_samples


def test_a_data_sets_own_validation_split_is_used(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    for name, n in (("train", 60), ("validation", 12), ("test", 10)):
        rows = "\n".join(f"{name} sentence {i},{'ab'[i % 2]}" for i in range(n))
        (folder / f"{name}.csv").write_text("text,label\n" + rows + "\n")
    cfg = DataConfig(dataset=str(folder), eval_split="test")
    plain = load_text_data(cfg, "sequence-classification")
    d = load_text_data(cfg, "sequence-classification", validation=True)
    assert d.train_texts == plain.train_texts  # nothing carved out of the training split
    assert d.val_texts == [f"validation sentence {i}" for i in range(12)]
    assert d.val_labels == [i % 2 for i in range(12)] and "validation" in d.val_source


def test_only_a_best_keeping_run_that_evaluates_sets_rows_apart():
    assert validation_wanted(TrainingConfig())
    assert not validation_wanted(TrainingConfig(keep="last"))
    assert not validation_wanted(TrainingConfig(eval_every=0))
    assert not validation_wanted(TrainingConfig(), multi=True)
    # No validation share, no own split: nothing is carved, the run keeps its last student.
    d = load_text_data(DataConfig(validation_fraction=0.0), "sentence-embedding", validation=True)
    assert d.val_texts is None


class _Recorder:
    def __init__(self, stop_at=0):
        self.events, self.stop_at, self.stop = [], stop_at, threading.Event()

    def __call__(self, e):
        self.events.append(e)
        if self.stop_at and isinstance(e, ev.Step) and e.step == self.stop_at:
            self.stop.set()

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]


@pytest.fixture
def lowest_cosine(monkeypatch):
    """Choose by the lowest cosine to the teacher: training raises it, so an early student
    is the best and the run must load it back (a choice against the training's direction)."""
    monkeypatch.setattr(Embedding, "selection_figure", lambda self: ("cosine_to_teacher", False))
    saved = []
    real = checkpoints.save_best

    def spy(run_dir, distiller, info, model_state=None):
        saved.append((info["step"], {k: v.clone() for k, v in distiller.student.state_dict().items()}))
        return real(run_dir, distiller, info, model_state)
    monkeypatch.setattr(checkpoints, "save_best", spy)
    return saved


def _config(tiny, **training):
    return tiny_config("sentence-embedding", tiny["bert"],
                       training={"max_steps": 6, "eval_every": 2, **training})


def test_the_best_student_on_the_validation_rows_is_kept_and_reported(tiny, lowest_cosine):
    rec = _Recorder()
    result = run_training(_config(tiny), rec)
    keep = result.summary["keep"]
    scored = {e.step: e.validation["cosine_to_teacher"] for e in rec.of(ev.Eval) if e.validation}
    assert sorted(scored) == [2, 4, 6]
    assert keep["step"] == min(scored, key=scored.get) == 2 and keep["last_step"] == 6
    assert keep["best"]["validation"]["cosine_to_teacher"] == scored[2]
    assert keep["last"]["validation"]["cosine_to_teacher"] == scored[6]
    # The held-out figures: the kept student's in student_metrics, the last one's beside them.
    assert result.summary["student_metrics"] == keep["best"]["metrics"]
    assert keep["last"]["metrics"] != keep["best"]["metrics"]
    assert rec.of(ev.Eval)[-1].metrics == keep["last"]["metrics"]  # the curve ends at the last
    assert "step 2 (of 6)" in keep["why"] and any(keep["why"] == e.message for e in rec.of(ev.Log))
    # The student folder holds the best's weights; the copy of them is gone once finished.
    best_state = dict(lowest_cosine)[2]
    on_disk = load_file(str(Path(result.run_dir) / "student" / "model.safetensors"))
    name = "embeddings.word_embeddings.weight"
    assert torch.equal(on_disk[name], best_state[name])
    assert not (Path(result.run_dir) / checkpoints.BEST_DIR).exists()
    assert result.summary["intervals"]["cosine_to_teacher"][0] <= \
        result.summary["student_metrics"]["cosine_to_teacher"] <= \
        result.summary["intervals"]["cosine_to_teacher"][1]


def test_the_best_so_far_survives_a_resume(tiny, lowest_cosine):
    whole = run_training(_config(tiny), _Recorder())
    rec = _Recorder(stop_at=4)
    stopped = run_training(_config(tiny, save_every=2), rec, rec.stop)
    assert stopped.status == "stopped"
    assert checkpoints.best_info(stopped.run_dir)["step"] == 2
    resumed = run_training(None, _Recorder(), resume=stopped.run_dir)
    assert resumed.status == "finished"
    assert resumed.summary["keep"]["step"] == whole.summary["keep"]["step"] == 2
    for k, v in whole.summary["student_metrics"].items():
        # The same weights measured on the same rows; float32 sums in the same order.
        assert resumed.summary["student_metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-6)


def test_keep_last_sets_no_rows_apart_and_keeps_the_last_student(tiny):
    rec = _Recorder()
    result = run_training(_config(tiny, keep="last"), rec)
    keep = result.summary["keep"]
    assert keep["mode"] == "last" and keep["step"] == 6
    assert all(not e.validation for e in rec.of(ev.Eval))
    assert not any("validation rows" in e.message and "Keeping" in e.message
                   for e in rec.of(ev.Log))
    assert not (Run(result.run_dir).path / checkpoints.BEST_DIR).exists()
