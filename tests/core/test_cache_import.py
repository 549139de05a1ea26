"""`kdstudio cache import FILE --config RUN.toml`: an axolotl top-k log-probability file becomes
the teacher cache a run of that config reads, and a file of other rows is refused."""

import json

import torch

from kdstudio.cli.commands import main
from kdstudio.core import events as ev
from kdstudio.core.data import load_text_data, validation_wanted
from kdstudio.core.models import load_model
from kdstudio.core.runs import Run
from kdstudio.core.tasks import get_task
from kdstudio.core.teacher_cache import list_caches
from kdstudio.core.trainer import run_training
from tests.core.test_teacher_cache_runs import lm_config, logs
from tests.core.test_trainer import Recorder

K = 8


def _axolotl_file(cfg, teacher_dir, path, corrupt=False):
    """The config's training rows with the teacher's top-K log-probabilities, one JSON line per
    row as axolotl's KD v2 data sets hold them (entry i: token i given the tokens before it)."""
    task = get_task("causal-lm")
    data = load_text_data(cfg.data, task, seed=cfg.training.seed,
                          validation=validation_wanted(cfg.training, False),
                          validation_cap=cfg.evaluation.max_samples)
    loaded = load_model(str(teacher_dir), task, role="teacher")
    tok, model = loaded.tokenizer, loaded.model.eval()
    _, make = task.batch_maker(data.train_texts, data.train_labels, student_tok=tok,
                               teacher_tok=tok, same_tok=True, max_length=cfg.data.max_length,
                               pack=cfg.data.pack, device="cpu")
    with open(path, "w", encoding="utf-8") as fh:
        for n, row in enumerate(make.cache_rows):
            ids = list(row)
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            top = lp.topk(K, dim=-1)
            if corrupt and n == 0:
                ids[1] = (ids[1] + 1) % len(tok)
            fh.write(json.dumps({
                "input_ids": ids,
                "target_token_ids": [[]] + top.indices[:-1].tolist(),
                "target_logprobs": [[]] + top.values[:-1].tolist()}) + "\n")
    return len(make.cache_rows)


def test_an_imported_file_is_the_cache_the_run_reads(tiny, tmp_path, capsys):
    cfg = lm_config(tiny, "auto")
    cfg.teacher.cache_k = K
    toml = tmp_path / "run.toml"
    toml.write_text(cfg.to_toml(), encoding="utf-8")

    wrong = tmp_path / "other.jsonl"
    _axolotl_file(cfg, tiny["gpt2"], wrong, corrupt=True)
    assert main(["cache", "import", str(wrong), "--config", str(toml)]) == 2
    out = capsys.readouterr().out
    assert "Cannot import" in out and "training row 0" in out and "is not in" in out
    assert list_caches() == []  # nothing written

    good = tmp_path / "topk.jsonl"
    n = _axolotl_file(cfg, tiny["gpt2"], good)
    assert main(["cache", "import", str(good), "--config", str(toml)]) == 0
    out = capsys.readouterr().out
    assert f"Imported {n:,} rows" in out and "read it instead of running the teacher" in out
    (info,) = list_caches()
    assert info.k == K

    rec = Recorder()
    result = run_training(cfg, rec)
    summary = Run(result.run_dir).summary()["teacher_targets"]
    assert summary["mode"] == "cache" and summary["key"] == info.key
    assert any(m.startswith("Teacher cache found:") for m in logs(rec))
    # No teacher pass over the training rows: the answers came from the file.
    assert not any("training rows" in s.detail for s in rec.of(ev.Stage) if s.name == "teacher cache")
