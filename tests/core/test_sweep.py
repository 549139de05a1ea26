"""Tradeoff sweeps: the queue on real tiny runs, and the figures on hand-made ones."""

import argparse
import csv
import json
import re
import os
import socket
import sys
import threading
import types
from pathlib import Path

import pytest

from kdstudio.cli.commands import main
from kdstudio.core import events as ev
from kdstudio.core.errors import ConfigError, ExportError, SweepError
from kdstudio.core.metrics import quality_retained
from kdstudio.core.plan.measured import Figures
from kdstudio.core.plan.memory import ModelShape
from kdstudio.core.runs import Run, list_runs, runs_dir
from kdstudio.core.sweep.budget import fit_budget
from kdstudio.core.sweep.figures import (
    TableRow,
    front_rows,
    pareto_front,
    summary_sentence,
    sweep_table,
    table_csv,
    write_csv,
)
from kdstudio.core.sweep.plan import estimate_time
from kdstudio.core.sweep.queue import export_int8, exports_todo, run_sweep
from kdstudio.core.sweep.spec import StudentSpec, derived
from kdstudio.core.sweep.store import Sweep, find_sweep, list_sweeps, unfinished_sweeps
from tests.conftest import tiny_config


def base_config(tiny, **training):
    return tiny_config("causal-lm", tiny["gpt2"], data={"max_eval_samples": 16},
                       evaluation={"max_samples": 16, "latency_repeats": 1},
                       training={"max_steps": 2, "eval_every": 0, **training})


class Recorder:
    """Collects events; sets ``stop`` at the first event ``when`` accepts."""

    def __init__(self, stop=None, when=None):
        self.events, self.stop, self.when = [], stop, when

    def __call__(self, e):
        self.events.append(e)
        if self.when is not None and self.when(e):
            self.stop.set()
            self.when = None

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]


# -- the queue on real runs ----------------------------------------------------------------------

@pytest.mark.slow
def test_three_tiny_students_stop_resume_table_and_chart(tiny, tmp_path):
    sweep = Sweep.new(base_config(tiny), derived(1, 2, 3), teacher_layers=4)
    assert [e.label for e in sweep.entries] == ["1 layer", "2 layers", "3 layers"]
    assert sweep.entries[1].name == f"sweep-{sweep.id}-2 layers"
    assert not sweep.folder.exists()  # planned, not written
    assert estimate_time(sweep).method == "rough"  # nothing measured yet
    sweep.save()
    assert (sweep.folder / "sweep.json").exists() and (sweep.folder / "base.toml").exists()

    # First process: the second student is stopped at its first step (a checkpoint is kept).
    stop = threading.Event()
    rec = Recorder(stop, lambda e: isinstance(e, ev.Step) and e.step == 1
                   and "2 layers" in rec.of(ev.SweepProgress)[-1].label)
    result = run_sweep(sweep, rec, stop)
    assert result.status == "stopped"
    assert [e.status for e in sweep.entries] == ["finished", "stopped", "pending"]
    assert [(p.label, p.status) for p in rec.of(ev.SweepProgress)] == [
        ("1 layer", "running"), ("1 layer", "finished"), ("2 layers", "running"),
        ("2 layers", "stopped")]
    assert len(list_runs()) == 2
    assert [s.id for s in unfinished_sweeps()] == [sweep.id]
    first_run = sweep.entries[0].run_dir

    # A fresh process: load the queue from disk; it resumes the second and runs the third.
    again = Sweep.load(sweep.folder)
    assert again.describe() == "1 of 3 runs finished, 1 stopped, 1 to run"
    est = estimate_time(again)
    assert est.method == "measured"  # the first run is a measurement
    assert est.per_entry[2] > est.per_entry[1] > 0 and "measured from 1 earlier run" in est.text
    rec2 = Recorder()
    assert run_sweep(again, rec2).status == "finished"
    started = rec2.of(ev.Started)
    assert [s.start_step for s in started] == [1, 0]  # resumed from its checkpoint, then fresh
    assert [p.label for p in rec2.of(ev.SweepProgress) if p.status == "running"] == ["2 layers", "3 layers"]
    assert again.entries[0].run_dir == first_run  # the first was not run again
    runs = list_runs()
    assert len(runs) == 3 and all(r.status == "finished" for r in runs)
    assert {r.name for r in runs} == {e.name for e in again.entries}
    assert unfinished_sweeps() == [] and not again.is_unfinished()
    saved = json.loads((again.folder / "sweep.json").read_text())
    assert [e["status"] for e in saved["entries"]] == ["finished"] * 3 and saved["runner"] == {}

    # The table: the teacher, then one row per student with its measured figures.
    rows = sweep_table(again)
    assert [r.label for r in rows] == ["teacher", "1 layer", "2 layers", "3 layers"]
    teacher, *students = rows
    assert teacher.quality_retained == 1.0 and teacher.params > max(s.params for s in students)
    assert [s.layers for s in students] == [1, 2, 3]
    assert students[0].params < students[1].params < students[2].params
    for s in students:
        summary = Run(s.run_dir).summary()
        assert s.quality_retained == pytest.approx(summary["quality_retained"])
        assert s.size_mb == summary["student_size_mb"] and s.latency_ms > 0
        assert s.params_share == pytest.approx(summary["student_params"] / summary["teacher_params"])
    path = write_csv(rows, again.folder / "table.csv", again.axis)
    table = list(csv.DictReader(path.open()))
    assert [t["label"] for t in table] == ["teacher", "1 layer", "2 layers", "3 layers"]
    assert table[2]["parameters"] == str(students[1].params)
    assert table[1]["run_dir"] == students[0].run_dir
    assert "layer student" in summary_sentence(rows)

    # Calling it again has nothing to do.
    assert run_sweep(Sweep.load(again.folder), Recorder()).status == "finished"
    assert len(list_runs()) == 3


@pytest.mark.slow
def test_a_failing_student_is_recorded_and_the_queue_goes_on(tiny, tmp_path):
    students = [StudentSpec(name=str(tmp_path / "no-such-model")), StudentSpec(layers=1)]
    sweep = Sweep.new(base_config(tiny), students)
    sweep.save()
    rec = Recorder()
    result = run_sweep(sweep, rec)
    assert result.status == "incomplete"
    assert [e.status for e in sweep.entries] == ["failed", "finished"]
    assert "no-such-model" in sweep.entries[0].error
    failed = [p for p in rec.of(ev.SweepProgress) if p.status == "failed"]
    assert failed and "no-such-model" in failed[0].message
    assert not sweep.is_unfinished()  # a failure is not retried unless asked
    assert sweep.todo(retry_failed=True) == [sweep.entries[0]]


@pytest.mark.slow
def test_cli_sweep_end_to_end(tiny, tmp_path, capsys, kd_home):
    cfg_path = tmp_path / "base.toml"
    base_config(tiny).save(cfg_path)
    assert main(["sweep", str(cfg_path), "--layers", "1,2", "--set", "training.max_steps=1",
                 "--yes"]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "Run 1 of 2: 1 layer" in out and "Run 2 of 2: 2 layers" in out
    assert "Quality against size" in out
    # a tiny student may match the teacher within the uncertainty of its quality
    assert re.search(r"\d-layer student (keeps|matches the teacher)", out), out
    (sweep,) = list_sweeps()
    assert (sweep.folder / "table.csv").read_text().count("\n") == 4  # header, teacher, 2
    png = (sweep.folder / "chart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert len(list_runs()) == 2
    assert all(Run(e.run_dir).summary()["steps"] == 1 for e in sweep.entries)

    assert main(["sweep", "--resume", sweep.id[:8]]) == 0
    assert "nothing left to run" in capsys.readouterr().out
    assert main(["sweep", "--list"]) == 0
    assert sweep.id in capsys.readouterr().out
    assert main(["sweep", str(cfg_path), "--layers", "1,two"]) == 2
    assert "'two'" in capsys.readouterr().out
    assert main(["sweep", str(cfg_path), "--layers", "9", "--yes"]) == 2
    assert "only 4" in capsys.readouterr().out
    assert len(list_sweeps()) == 1


# -- planning and errors -------------------------------------------------------------------------

def test_expansion_with_a_second_axis_and_clear_errors(tiny):
    base = base_config(tiny)
    sweep = Sweep.new(base, [*derived(1, 2), StudentSpec(name="/models/tiny-gpt")],
                      "temperature", [1, 2.5])
    assert len(sweep.entries) == 6
    e = sweep.entries[3]
    assert e.label == "2 layers, T=2.5" and e.name == f"sweep-{sweep.id}-2 layers-T2.5"
    cfg = sweep.config_for(e)
    assert (cfg.student.name, cfg.student.layers, cfg.method.temperature) == ("", 2.0, 2.5)
    other = sweep.config_for(sweep.entries[4])
    assert other.student.name == "/models/tiny-gpt" and other.name.endswith("tiny-gpt-T1")
    methods = Sweep.new(base, derived(1), "method", ["forward_kl", "reverse_kl"])
    assert [methods.config_for(e).method.logit_loss for e in methods.entries] == ["forward_kl", "reverse_kl"]

    with pytest.raises(SweepError, match="no students"):
        Sweep.new(base, [])
    with pytest.raises(SweepError, match="only 4"):
        Sweep.new(base, derived(5), teacher_layers=4)
    with pytest.raises(SweepError, match="1.5 layers"):
        Sweep.new(base, derived(1.5))
    with pytest.raises(SweepError, match="'kl'.*forward_kl"):
        Sweep.new(base, derived(1), "method", ["kl"])
    with pytest.raises(SweepError, match="temperature -1"):
        Sweep.new(base, derived(1), "temperature", [-1])
    embed = tiny_config("sentence-embedding", tiny["bert"])
    with pytest.raises(SweepError, match="logit_weight is 0"):
        Sweep.new(embed, derived(1), "temperature", [1, 2])
    with pytest.raises(ConfigError, match="training.batch_size"):
        bad = base_config(tiny)
        bad.training.batch_size = 0
        Sweep.new(bad, derived(1))


def test_a_crashed_queue_is_interrupted_and_a_live_one_refused(tiny):
    sweep = Sweep.new(base_config(tiny), derived(1, 2))
    sweep.entries[0].status = "running"
    sweep.runner = {"pid": 2 ** 22 + 12345, "host": socket.gethostname()}  # no such process
    sweep.save()
    loaded = find_sweep(sweep.id)
    assert loaded.entry_status(loaded.entries[0]) == "interrupted"
    assert loaded.todo() == loaded.entries and [s.id for s in unfinished_sweeps()] == [sweep.id]
    loaded.runner = {"pid": os.getppid(), "host": socket.gethostname()}  # alive
    loaded.save()
    with pytest.raises(SweepError, match="already running in another process"):
        run_sweep(Sweep.load(sweep.folder))
    assert unfinished_sweeps() == []  # someone is on it
    with pytest.raises(SweepError, match="no sweep called 'nope'"):
        find_sweep("nope")
    (sweep.folder / "sweep.json").write_text("{ torn")
    with pytest.raises(SweepError, match="cannot be read"):
        Sweep.load(sweep.folder)
    assert list_sweeps() == []  # a damaged file is skipped, not fatal


# -- the figures on hand-made numbers ------------------------------------------------------------

def test_pareto_front_on_hand_made_points():
    points = [(10, 0.70), (20, 0.90), (15, 0.60), (30, 0.90), (40, 1.00), (25, 0.95),
              (None, 0.99), (5, None), (20, 0.90)]
    # (15, .6) is beaten by (10, .7); (30, .9) by (20, .9); the two (20, .9) are twins.
    assert pareto_front(points) == [0, 1, 8, 5, 4]
    assert pareto_front([]) == []
    assert pareto_front([(1, 0.5)]) == [0]
    assert pareto_front([(1, 0.5), (1, 0.7)]) == [1]  # same cost, better quality


def rows():
    return [
        TableRow("teacher", "teacher", params=100_000_000, size_mb=400.0, latency_ms=20.0,
                 quality_retained=1.0, speedup=1.0, params_share=1.0, size_share=1.0),
        TableRow("1 layer", "student", params=20_000_000, size_mb=80.0, latency_ms=5.0,
                 quality_retained=0.71, speedup=4.0, layers=1, params_share=0.2, size_share=0.2,
                 run_dir="/r/1"),
        TableRow("2 layers", "student", params=38_000_000, size_mb=152.0, latency_ms=7.7,
                 quality_retained=0.94, speedup=2.6, layers=2, params_share=0.38, size_share=0.38,
                 run_dir="/r/2"),
        TableRow("3 layers", "student", params=50_000_000, size_mb=200.0, latency_ms=4.0,
                 quality_retained=0.93, speedup=5.0, layers=3, params_share=0.5, size_share=0.5,
                 run_dir="/r/3"),
    ]


def test_front_summary_and_csv_on_hand_made_rows():
    r = rows()
    assert [x.label for x in front_rows(r, "params")] == ["1 layer", "2 layers", "teacher"]
    # By latency the 3-layer student (4 ms, 93%) beats the 1-layer one (5 ms, 71%).
    assert [x.label for x in front_rows(r, "latency")] == ["3 layers", "2 layers", "teacher"]
    assert summary_sentence(r) == ("The 2-layer student keeps 94% of the teacher's quality at 38% "
                                   "of its size and runs 2.6 times faster. The smallest, the "
                                   "1-layer student, keeps 71% of the teacher's quality at 20% "
                                   "of its size. The speeds come from separate runs, timed at "
                                   "different moments of the machine, so they are not comparable "
                                   "between students until they are timed together.")
    assert summary_sentence(r[:2]).startswith("No student keeps 90% of the teacher's quality; the "
                                              "best, the 1-layer student, keeps 71%")
    assert summary_sentence(r[:1]).startswith("No student has finished yet")
    r[2].axis_value = 2.0
    assert summary_sentence(r, "temperature").startswith("The 2-layer student at temperature 2 keeps")
    lines = table_csv(r, "temperature").splitlines()
    assert lines[0].startswith("label,role,layers") and len(lines) == 5
    assert lines[3].split(",")[:5] == ["2 layers", "student", "2", "", "T=2"]
    assert lines[3].split(",")[-4:-1] == ["yes", "yes", "yes"]  # params, latency, size fronts
    assert lines[2].split(",")[-4:-1] == ["yes", "no", "yes"]


def test_fit_budget_on_hand_made_figures(tiny):
    teacher = ModelShape(params=66_000_000, hidden_size=768, num_layers=6, vocab_size=30522,
                         layer_params=42_000_000)  # 7M per layer, 24M outside the blocks
    figs = Figures(teacher={"params": 66_000_000, "size_mb": 66_000_000 * 4 / 2**20,
                            "latency_ms": 12.0},
                   students={3: {"params": 45_000_000, "size_mb": 45_000_000 * 4 / 2**20,
                                 "latency_ms": 6.0}})
    size = fit_budget("size", 150, teacher, figures=figs)
    by = {c.layers: c for c in size.candidates}
    assert list(by) == [1, 2, 3, 4, 5]
    assert by[3].source == "measured" and by[3].value == pytest.approx(171.66, abs=0.01)
    assert not by[3].fits
    assert by[2].source == "estimated" and by[2].value == pytest.approx(38e6 * 4 / 2**20)
    assert size.proposed == [1, 2]
    assert "try 2 or 1 layers" in size.text and "(estimated)" in size.text and "3 layers would need" in size.text

    lat = fit_budget("latency", 8.5, teacher, figures=figs)
    # A line through (3 layers, 6 ms) and (6 layers, 12 ms): 2 ms per layer.
    assert {c.layers: round(c.value, 3) for c in lat.candidates} == {1: 2.0, 2: 4.0, 3: 6.0, 4: 8.0, 5: 10.0}
    assert lat.proposed == [2, 3, 4] and {c.layers: c.source for c in lat.candidates}[3] == "measured"
    only_teacher = fit_budget("latency", 5, teacher, figures=Figures(teacher={"latency_ms": 12.0}))
    assert only_teacher.proposed == [1, 2]  # 12 ms x layers / 6
    blind = fit_budget("latency", 5, teacher, figures=Figures())
    assert blind.proposed == [] and "cannot be estimated" in blind.text

    cfg = base_config(tiny)
    mem = fit_budget("memory", 10_000, teacher, config=cfg, device="cpu")
    values = [c.value for c in mem.candidates]
    assert values == sorted(values) and all(c.source == "estimated" for c in mem.candidates)
    assert mem.proposed == [3, 4, 5]
    tight = fit_budget("memory", 1, teacher, config=cfg)
    assert tight.proposed == [] and "Even a 1-layer student" in tight.text
    with pytest.raises(SweepError, match="'speed'"):
        fit_budget("speed", 1, teacher)
    with pytest.raises(SweepError, match="positive number of MB"):
        fit_budget("size", 0, teacher)


# -- int8 exports beside their students, on hand-made run folders ---------------------------------

TEACHER = {"perplexity": 40.0, "top1_agreement": 1.0}


def int8_entry(size_mb, value, latency_ms, student_latency_ms, **extra):
    """One summary.json["exports"] item as kdstudio.core.export records an int8 ONNX export."""
    return {"format": "onnx", "quantize": "int8", "path": "exports/onnx-int8",
            "size_bytes": int(size_mb * 2**20), "size_mb": size_mb, "size_ratio": 0.3,
            "max_abs_diff": 0.02, "latency_ms": latency_ms,
            "student_latency_ms": student_latency_ms, "metric": "perplexity", "value": value,
            "student_value": value * 0.99, "quality_kept": 0.99,
            "created": "2026-11-29T10:00:00", **extra}


def fake_run(name, *, layers, params, size_mb, latency_ms, perplexity, exports=()):
    """A finished run folder with the summary.json a real causal-LM run leaves (no model)."""
    path = runs_dir() / name
    path.mkdir(parents=True)
    (path / "config.toml").write_text(f'name = "{name}"\ntask = "causal-lm"\n')
    student = {"perplexity": perplexity, "top1_agreement": 0.5}
    summary = {
        "name": name, "status": "finished", "task": "causal-lm", "steps": 20,
        "created": "2026-11-29T09:00:00", "teacher": "/models/teacher", "student": "derived",
        "headline_metric": "perplexity", "teacher_metrics": TEACHER, "student_metrics": student,
        "quality_retained": quality_retained("perplexity", TEACHER, student),
        "teacher_params": 1_000_000, "student_params": params,
        "kept_layers": list(range(layers)), "teacher_size_mb": 4.0, "student_size_mb": size_mb,
        "teacher_latency_ms": 16.0, "student_latency_ms": latency_ms,
        "speedup": round(16.0 / latency_ms, 3), "duration_s": 30.0, "exports": list(exports)}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def fake_int8_sweep(base, *, with_exports=True):
    """A saved two-student sweep whose runs finished; the 2-layer one (and, with_exports, the
    1-layer one) has an int8 export, beside an fp16 one that is not charted."""
    sweep = Sweep.new(base, derived(1, 2), teacher_layers=4, quantize_int8=True)
    fp16 = {**int8_entry(1.0, 50.0, 3.0, 4.0), "quantize": "fp16", "path": "exports/onnx-fp16"}
    one = fake_run("one", layers=1, params=300_000, size_mb=1.2, latency_ms=5.0,
                   perplexity=80.0, exports=[int8_entry(0.4, 81.0, 1.5, 3.0)] if with_exports else [])
    two = fake_run("two", layers=2, params=500_000, size_mb=2.0, latency_ms=8.0, perplexity=44.0,
                   exports=[fp16, int8_entry(0.6, 44.44, 2.0, 5.0)] if with_exports else [fp16])
    for e, run in zip(sweep.entries, (one, two)):
        e.status, e.run_dir = "finished", str(run)
    sweep.save()
    return sweep


SEPARATE_RUNS = ("The speeds come from separate runs, timed at different moments of the "
                 "machine, so they are not comparable between students until they are timed "
                 "together.")


def int8_base():
    return tiny_config("causal-lm", "/models/teacher", data={"max_eval_samples": 16},
                       training={"max_steps": 2, "eval_every": 0})


def test_int8_exports_are_rows_on_the_front_in_the_summary_and_csv():
    sweep = fake_int8_sweep(int8_base())
    assert json.loads((sweep.folder / "sweep.json").read_text())["quantize_int8"] is True
    rows = sweep_table(Sweep.load(sweep.folder))
    assert [(r.label, r.role) for r in rows] == [
        ("teacher", "teacher"), ("1 layer", "student"), ("1 layer (int8)", "int8"),
        ("2 layers", "student"), ("2 layers (int8)", "int8")]
    teacher, one, one8, two, two8 = rows
    # Quality as the run's own: the teacher's perplexity over the export's (not the fp16's).
    assert two8.quality_retained == pytest.approx(40.0 / 44.44)
    assert two8.student_quality == pytest.approx(40.0 / 44.0)
    assert two8.headline_value == 44.44 and two8.headline_metric == "perplexity"
    assert (two8.size_mb, two8.params, two8.layers) == (0.6, two.params, 2)
    assert two8.size_share == pytest.approx(0.6 / 4.0) and two8.params_share == two.params_share
    # Latency on the student's footing: 8 ms x (2 ms ONNX / 5 ms PyTorch, timed side by side).
    assert two8.latency_ms == pytest.approx(3.2) and two8.speedup == pytest.approx(5.0)
    assert "side by side" in two8.note and two8.max_abs_diff == 0.02
    assert two8.run_dir == two.run_dir and two8.key != two.key and two8.is_int8

    # The front is over every point: by size and latency the int8 exports lead (the 2-layer
    # student stays on it, a little better than its export); by parameters, which an export
    # keeps, each student beats its own export.
    both = ["1 layer (int8)", "2 layers (int8)", "2 layers", "teacher"]
    assert [r.label for r in front_rows(rows, "size")] == both
    assert [r.label for r in front_rows(rows, "latency")] == both
    assert [r.label for r in front_rows(rows, "params")] == ["1 layer", "2 layers", "teacher"]
    # Without the sweep's timing session the speeds come from separate runs (and say so).
    text = summary_sentence(rows).removesuffix(" " + SEPARATE_RUNS)
    assert text.startswith("The 2-layer student keeps 91% of the teacher's quality at 50% ")
    assert text.endswith("Exported as int8 ONNX, the 2-layer student keeps 90% of the teacher's "
                         "quality (91% before) at 15% of its size and runs 5.0 times faster.")
    assert summary_sentence([teacher, one, one8]).removesuffix(" " + SEPARATE_RUNS).endswith(
        "No int8 export keeps 90% of the teacher's quality; the best, the 1-layer student as "
        "int8 ONNX, keeps 49% of the teacher's quality (50% before) at 10% of its size and "
        "runs 6.4 times faster.")

    table = list(csv.DictReader(write_csv(rows, sweep.folder / "table.csv").open()))
    assert [(t["label"], t["role"]) for t in table][1:] == [
        ("1 layer", "student"), ("1 layer (int8)", "int8"), ("2 layers", "student"),
        ("2 layers (int8)", "int8")]
    assert table[4]["size_mb"] == "0.6" and table[4]["run_dir"] == two.run_dir
    assert (table[4]["pareto_params"], table[4]["pareto_size"]) == ("no", "yes")
    assert table[4]["quality_retained"] == str(round(40.0 / 44.44, 6))


def test_an_int8_row_with_another_figure_and_an_axis_label():
    student = TableRow("distilgpt2, T=2", "student", params=80, size_mb=300.0, latency_ms=10.0,
                       quality_retained=0.8, speedup=2.0, headline_metric="cosine_to_teacher",
                       model="distilgpt2", axis_value=2.0, run_dir="/r/x")
    export = {"metric": "cosine_to_student", "value": 0.99, "quality_kept": 0.99,
              "size_bytes": 80 * 2**20, "latency_ms": 4.0}  # no student timing, no size_mb
    summary = {"teacher_metrics": {}, "teacher_size_mb": 400.0, "teacher_latency_ms": 20.0}
    from kdstudio.core.sweep.figures import int8_row

    row = int8_row(student, summary, export)
    assert row.label == "distilgpt2 (int8), T=2" and row.model == "distilgpt2"
    # Not the run's figure: the student's share of the teacher times what the export keeps.
    assert row.quality_retained == pytest.approx(0.8 * 0.99) and "keeps" in row.note
    assert row.headline_value is None and row.size_mb == 80.0 and row.size_share == 0.2
    assert row.latency_ms == 4.0 and row.speedup == 5.0  # the teacher's 20 ms over 4 ms
    assert "the student distilgpt2 at temperature 2" in summary_sentence(
        [TableRow("teacher", "teacher", quality_retained=1.0), student, row], "temperature")


def test_pareto_front_with_a_hand_made_int8_point():
    r = rows()
    int8 = TableRow("2 layers (int8)", "int8", params=38_000_000, size_mb=40.0, latency_ms=3.0,
                    quality_retained=0.93, speedup=6.7, layers=2, params_share=0.38,
                    size_share=0.1, run_dir="/r/2", student_quality=0.94)
    r.insert(3, int8)
    assert [x.label for x in front_rows(r, "size")] == ["2 layers (int8)", "2 layers", "teacher"]
    assert [x.label for x in front_rows(r, "latency")] == ["2 layers (int8)", "2 layers",
                                                           "teacher"]
    lines = table_csv(r).splitlines()
    assert lines[4].split(",")[:3] == ["2 layers (int8)", "int8", "2"]
    assert lines[4].split(",")[-4:] == ["no", "yes", "yes", "/r/2"]
    assert lines[2].split(",")[-4:-1] == ["yes", "no", "no"]  # the 1-layer one loses by size now


def test_old_sweeps_do_not_export_and_the_option_round_trips():
    sweep = Sweep.new(int8_base(), derived(1))
    sweep.save()
    assert Sweep.load(sweep.folder).quantize_int8 is False
    data = json.loads(sweep.path.read_text())
    del data["quantize_int8"]  # as a sweep from before the option
    sweep.path.write_text(json.dumps(data))
    old = Sweep.load(sweep.folder)
    assert old.quantize_int8 is False and exports_todo(old) == []
    on = Sweep.new(int8_base(), derived(1), quantize_int8=True)
    on.save()
    assert Sweep.load(on.folder).quantize_int8 and on.copy().quantize_int8


def test_cli_int8_option_plans_an_exporting_sweep(tmp_path):
    from kdstudio.cli.sweep import _plan, chart_axis

    cfg_path = tmp_path / "base.toml"
    int8_base().save(cfg_path)
    # Another model as the student: planning then reads no teacher.
    args = argparse.Namespace(config=str(cfg_path), set=[], layers="", students="/models/other",
                              temperatures="", methods="", int8=True, axis=None)
    sweep = _plan(args)
    assert sweep.quantize_int8 and chart_axis(args, sweep) == "size"
    args.int8 = False
    assert not _plan(args).quantize_int8 and chart_axis(args, _plan(args)) == "params"


def test_the_queue_exports_finished_students_and_keeps_a_failure_as_a_note(monkeypatch):
    sweep = fake_int8_sweep(int8_base(), with_exports=False)
    one, two = sweep.entries
    assert exports_todo(sweep) == [one, two]  # the fp16 export of 'two' is not the int8 one
    calls = []

    def fake_export_run(run_dir, fmt="onnx", quantize=None, out_dir=None, on_event=None, **kw):
        calls.append((Path(run_dir).name, fmt, quantize))
        if Path(run_dir).name == "two":
            raise ExportError("The graph could not be exported.", hint="Try fp32.")
        run = Run(run_dir)
        run.update_summary(exports=[*run.summary()["exports"], int8_entry(0.4, 81.0, 1.5, 3.0)])

    def no_training(*_a, **_k):
        raise AssertionError("every run has finished: nothing is trained again")

    # The engine's export and training modules, replaced: nothing is loaded for real here.
    monkeypatch.setitem(sys.modules, "kdstudio.core.export",
                        types.SimpleNamespace(export_run=fake_export_run))
    monkeypatch.setitem(sys.modules, "kdstudio.core.trainer",
                        types.SimpleNamespace(run_training=no_training))
    rec = Recorder()
    assert run_sweep(sweep, rec).status == "finished"  # a failed export fails nothing
    assert calls == [("one", "onnx", "int8"), ("two", "onnx", "int8")]
    assert [(p.label, p.status) for p in rec.of(ev.SweepProgress)] == [
        ("1 layer", "exporting"), ("1 layer", "exported"), ("2 layers", "exporting"),
        ("2 layers", "export failed")]
    saved = Sweep.load(sweep.folder)
    assert saved.entries[0].note == "" and [e.status for e in saved.entries] == ["finished"] * 2
    assert saved.entries[1].note.startswith("The int8 export failed (") and "graph" in saved.entries[1].note
    assert [r.label for r in sweep_table(saved)][1:] == ["1 layer", "1 layer (int8)", "2 layers"]

    # Not tried again unless asked; an export already there is never made twice.
    assert exports_todo(saved) == [] and exports_todo(saved, retry_failed=True) == [saved.entries[1]]
    assert run_sweep(saved, Recorder()).status == "finished" and len(calls) == 2
    assert export_int8(saved, saved.entries[0]) == "" and len(calls) == 2
    assert "graph" in export_int8(saved, saved.entries[1]) and len(calls) == 3
