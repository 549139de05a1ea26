import json
import threading

import pytest
import torch

from kdstudio.core import events as ev
from kdstudio.core.errors import CompatibilityError, ConfigError, DataError, ModelError
from kdstudio.core.runs import Run, list_runs
from kdstudio.core.trainer import run_training
from tests.conftest import tiny_config


class Recorder:
    def __init__(self, stop_at_step=None, stop=None):
        self.events = []
        self.stop_at_step, self.stop = stop_at_step, stop

    def __call__(self, e):
        self.events.append(e)
        if self.stop_at_step and isinstance(e, ev.Step) and e.step == self.stop_at_step:
            self.stop.set()

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]


def _check_run_folder(result, task):
    run = Run(result.run_dir)
    for name in ("config.toml", "metrics.jsonl", "summary.json", "README.md"):
        assert (run.path / name).exists(), name
    assert (run.student_dir / "config.json").exists()
    assert run.latest_checkpoint() is not None
    kinds = [json.loads(line)["kind"] for line in run.metrics_path.read_text().splitlines()]
    assert kinds[0] == "stage" and "started" in kinds and kinds[-1] == "finished"
    s = run.summary()
    assert s["status"] == "finished" and s["task"] == task
    assert s["student_params"] < s["teacher_params"]
    assert s["teacher_latency_ms"] > 0 and s["student_latency_ms"] > 0 and s["speedup"] > 0
    assert s["student_size_mb"] < s["teacher_size_mb"]
    assert s["quality_retained"] is not None
    return run, s


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["gpt2", "llama"])
def test_causal_lm_logit_and_hidden(tiny, shape):
    cfg = tiny_config("causal-lm", tiny[shape],
                      method={"logit_weight": 1.0, "hard_label_weight": 0.5, "hidden_weight": 0.5,
                              "logit_loss": "jsd"},
                      student={"layers": 2})
    rec = Recorder()
    result = run_training(cfg, rec)
    run, s = _check_run_folder(result, "causal-lm")
    steps = rec.of(ev.Step)
    assert [e.step for e in steps] == [1, 2, 3, 4]
    assert set(steps[0].losses) == {"logit", "hard_label", "hidden", "total"}
    assert all(e.lr >= 0 and e.samples_per_s > 0 and e.tokens_per_s > 0 for e in steps)
    # entropy: the run-health watch's figure (a student far surer than its teacher collapses).
    assert set(s["student_metrics"]) == {"perplexity", "top1_agreement", "kl_to_teacher",
                                         "entropy"}
    assert s["teacher_metrics"]["perplexity"] > 1
    # Each figure but the health watch's carries its 95% interval, bootstrapped over the blocks.
    assert set(s["intervals"]) >= {"perplexity", "top1_agreement", "kl_to_teacher",
                                   "teacher.perplexity", "quality_retained"}
    lo, hi = s["intervals"]["perplexity"]
    assert lo <= s["student_metrics"]["perplexity"] <= hi
    started = rec.of(ev.Started)[0]
    assert started.total_steps == 4 and started.student_params < started.teacher_params
    from transformers import AutoModelForCausalLM, AutoTokenizer

    student = AutoModelForCausalLM.from_pretrained(run.student_dir)
    tok = AutoTokenizer.from_pretrained(run.student_dir)
    assert student.config.num_hidden_layers == 2
    assert student(**tok(["hello there"], return_tensors="pt")).logits.shape[-1] >= len(tok)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "skew_kl", "skew_reverse_kl"])
def test_each_logit_loss_trains(tiny, loss):
    cfg = tiny_config("causal-lm", tiny["gpt2"], method={"logit_loss": loss},
                      training={"max_steps": 2, "eval_every": 0})
    rec = Recorder()
    run_training(cfg, rec)
    values = [e.losses["logit"] for e in rec.of(ev.Step)]
    assert len(values) == 2 and all(v > 0 and v == v for v in values)


@pytest.mark.slow
def test_padded_vocab_student(tiny):
    cfg = tiny_config("causal-lm", tiny["gpt2"], student={"name": str(tiny["gpt2-padded"])},
                      training={"max_steps": 2})
    result = run_training(cfg)
    assert Run(result.run_dir).summary()["status"] == "finished"


@pytest.mark.slow
def test_sequence_classification_prepares_and_reuses_teacher(tiny, kd_home):
    cfg = tiny_config("sequence-classification", tiny["bert"])
    rec = Recorder()
    result = run_training(cfg, rec)
    run, s = _check_run_folder(result, "sequence-classification")
    assert {"accuracy", "macro_f1", "agreement"} <= set(s["student_metrics"])
    assert {"accuracy", "macro_f1"} <= set(s["teacher_metrics"])
    prep = [e for e in rec.of(ev.Progress) if e.stage == "prepare teacher"]
    assert prep and prep[-1].current == prep[-1].total
    teachers = list((kd_home / "teachers").iterdir())
    assert len(teachers) == 1 and (teachers[0] / "prepared.json").exists()
    # A second run reuses the prepared teacher instead of fine-tuning again.
    rec2 = Recorder()
    run_training(cfg, rec2)
    assert any("Reusing the prepared teacher" in e.message for e in rec2.of(ev.Log))
    from transformers import AutoModelForSequenceClassification

    student = AutoModelForSequenceClassification.from_pretrained(run.student_dir)
    assert student.config.num_labels == 10 and student.config.id2label[0] == "arts"


@pytest.mark.slow
def test_sentence_embedding_saves_a_sentence_transformers_model(tiny):
    cfg = tiny_config("sentence-embedding", tiny["bert"], method={"hidden_weight": 1.0,
                                                                  "hidden_loss": "cosine"})
    rec = Recorder()
    result = run_training(cfg, rec)
    run, s = _check_run_folder(result, "sentence-embedding")
    assert {"cosine_to_teacher", "neighbour_agreement", "spearman", "knn_accuracy"} <= set(s["student_metrics"])
    assert set(rec.of(ev.Step)[0].losses) == {"embedding", "hidden", "total"}
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from kdstudio.core.losses import mean_pool

    st = SentenceTransformer(str(run.student_dir), device="cpu")
    texts = ["The train was late again.", "A sunny day at the beach."]
    st_emb = st.encode(texts, convert_to_tensor=True)
    tok = AutoTokenizer.from_pretrained(run.student_dir)
    model = AutoModel.from_pretrained(run.student_dir).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])
    assert torch.allclose(st_emb, ours, atol=1e-5)


@pytest.mark.slow
def test_narrower_student_with_projection(tiny):
    cfg = tiny_config("sentence-embedding", tiny["bert"],
                      student={"layers": 2, "hidden_size": 16}, method={"hidden_weight": 0.5})
    rec = Recorder()
    result = run_training(cfg, rec)
    assert any("pruned from the teacher" in e.message for e in rec.of(ev.Log))  # its best channels
    s = Run(result.run_dir).summary()
    assert s["status"] == "finished" and s["student_metrics"]["cosine_to_teacher"] == \
        s["student_metrics"]["cosine_to_teacher"]  # not NaN: the projection maps widths


@pytest.mark.slow
def test_embedding_distillation_across_tokenizers(tiny):
    """Pooled embeddings can be compared even when the two tokenizers differ."""
    cfg = tiny_config("sentence-embedding", tiny["bert"], student={"name": str(tiny["gpt2-othertok"])})
    rec = Recorder()
    result = run_training(cfg, rec)
    s = Run(result.run_dir).summary()
    assert s["status"] == "finished" and "cosine_to_teacher" in s["student_metrics"]
    assert rec.of(ev.Step)[-1].losses["embedding"] > 0


@pytest.mark.slow
def test_incompatible_vocab_is_refused_before_training(tiny, kd_home):
    cfg = tiny_config("causal-lm", tiny["gpt2"], student={"name": str(tiny["gpt2-othertok"])})
    rec = Recorder()
    with pytest.raises(CompatibilityError, match="tokenizers differ"):
        run_training(cfg, rec)
    failed = rec.of(ev.Failed)
    assert failed and failed[0].title == "Teacher and student do not fit together"
    assert list_runs() == []  # nothing half-made is left in the run store


@pytest.mark.slow
def test_bad_inputs_raise_clear_errors(tiny, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        run_training(tiny_config("causal-lm", tiny["gpt2"], data={"dataset": str(tmp_path / "x.csv")}))
    with pytest.raises(ModelError, match="does not exist"):
        run_training(tiny_config("causal-lm", str(tmp_path / "no-model")))
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        run_training(tiny_config("causal-lm", tiny["gpt2"], training={"device": "cuda"}))
    with pytest.raises(ConfigError, match="fp16"):
        run_training(tiny_config("causal-lm", tiny["gpt2"], training={"precision": "fp16"}))


@pytest.mark.slow
def test_stop_leaves_checkpoint_and_resume_matches_uninterrupted(tiny):
    base = dict(training={"max_steps": 6, "eval_every": 0, "save_every": 0})
    full = run_training(tiny_config("causal-lm", tiny["gpt2"], **base))
    stop = threading.Event()
    rec = Recorder(stop_at_step=3, stop=stop)
    part = run_training(tiny_config("causal-lm", tiny["gpt2"], **base), rec, stop)
    assert part.status == "stopped"
    run = Run(part.run_dir)
    assert run.status() == "stopped" and [e.step for e in rec.of(ev.Step)] == [1, 2, 3]
    assert run.latest_checkpoint().name == "step-000003"
    assert (run.student_dir / "config.json").exists()  # a usable student even when stopped
    rec2 = Recorder()
    resumed = run_training(None, rec2, resume=run.path)
    assert resumed.status == "finished" and resumed.run_dir == run.path
    assert [e.step for e in rec2.of(ev.Step)] == [4, 5, 6]
    assert rec2.of(ev.Started)[0].start_step == 3
    from safetensors.torch import load_file

    a = load_file(Run(full.run_dir).student_dir / "model.safetensors")
    b = load_file(run.student_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


@pytest.mark.slow
def test_stop_before_training(tiny):
    stop = threading.Event()
    stop.set()
    result = run_training(tiny_config("causal-lm", tiny["gpt2"]), None, stop)
    assert result.status == "stopped"


@pytest.mark.slow
def test_grad_accumulation_and_checkpoint_rotation(tiny):
    cfg = tiny_config("causal-lm", tiny["gpt2"],
                      training={"max_steps": 5, "grad_accum_steps": 2, "save_every": 1,
                                "keep_checkpoints": 2, "eval_every": 0})
    rec = Recorder()
    result = run_training(cfg, rec)
    run = Run(result.run_dir)
    assert [p.name for p in run.checkpoints()] == ["step-000004", "step-000005"]
    assert [e.step for e in rec.of(ev.Checkpoint)] == [1, 2, 3, 4, 5]
    assert all(e.samples_per_s > 0 for e in rec.of(ev.Step))


@pytest.mark.slow
def test_runs_listing(tiny):
    run_training(tiny_config("sentence-embedding", tiny["bert"], name="listed-run",
                             training={"max_steps": 1}))
    infos = list_runs()
    assert len(infos) == 1
    i = infos[0]
    assert i.name == "listed-run" and i.status == "finished" and i.task == "sentence-embedding"
    assert i.headline == "knn_accuracy" and i.headline_value is not None


@pytest.mark.slow
@pytest.mark.parametrize("precision,teacher_dtype", [("bf16", "auto"), ("fp32", "bfloat16")])
def test_reduced_precision_on_cpu(tiny, precision, teacher_dtype):
    cfg = tiny_config("causal-lm", tiny["llama"], training={"precision": precision, "max_steps": 2},
                      teacher={"dtype": teacher_dtype}, method={"hidden_weight": 0.5})
    rec = Recorder()
    result = run_training(cfg, rec)
    s = Run(result.run_dir).summary()
    assert s["status"] == "finished" and s["precision"] == precision
    assert all(v == v for e in rec.of(ev.Step) for v in e.losses.values())  # no NaN


def test_hub_data_set_failure_is_a_data_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub (offline mode)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    from kdstudio.core.config import DataConfig
    from kdstudio.core.data import load_text_data

    with pytest.raises(DataError, match="Could not load the Hub data set 'someone/reviews' "
                                        "\\(config 'en'\\).*ConnectionError"):
        load_text_data(DataConfig(dataset="someone/reviews", config_name="en"), "causal-lm")
