"""Multi-process runs through Accelerate on this machine's CPU: 2 processes, gloo.

Each test starts real processes (``kdstudio run --processes 2`` or ``accelerate launch``
itself) on a tiny GPT-2 without dropout (dropout draws different masks in a process of 8
rows than in one of 16, so only a model without it can match a single process number for
number), and each is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdstudio.core import dist_control, dist_share, distributed
from kdstudio.core.runs import Run
from tests.conftest import _bpe_tokenizer, _save, tiny_config

TIMEOUT = 240


@pytest.fixture(scope="module")
def gpt2_nodrop(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    bpe = _bpe_tokenizer(400)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(bpe), n_positions=64, n_embd=32, n_layer=4, n_head=2, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=bpe.eos_token_id,
        eos_token_id=bpe.eos_token_id, pad_token_id=bpe.pad_token_id))
    return _save(model, bpe, tmp_path_factory.mktemp("nodrop") / "gpt2")


def _config(folder: Path, tmp_path: Path, **training) -> Path:
    cfg = tiny_config("causal-lm", folder,
                      training={"max_steps": 10, "batch_size": 8, "eval_every": 0,
                                "save_every": 0, **training},
                      # Packed rows of equal length: each process's mean over its tokens is
                      # then the mean over the whole batch's.
                      data={"pack": True}, student={"layers": 2},
                      method={"logit_weight": 1.0, "hard_label_weight": 0.5},
                      evaluation={"baseline": False})
    path = tmp_path / "run.toml"
    path.write_text(cfg.to_toml(), encoding="utf-8")
    return path


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _kdstudio(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kdstudio.cli", *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _end(proc: subprocess.Popen) -> None:
    """A test that failed half-way leaves no processes behind: SIGTERM makes the parent end
    its launch at once."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _only_run(home: Path) -> Run:
    runs = [p for p in (home / "runs").iterdir() if (p / "config.toml").exists()]
    assert len(runs) == 1, runs  # only the main process wrote a run folder
    return Run(runs[0])


def _steps(run: Run) -> list[dict]:
    return [e for e in run.events() if e.get("kind") == "step"]


def _wait_for(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _one_process(cfg_path: Path, batch_size: int, steps: int):
    """The same config in this process, one process with the whole global batch."""
    from kdstudio.core.config import load_config
    from kdstudio.core.trainer import run_training

    cfg = load_config(cfg_path).with_overrides([f"training.batch_size={batch_size}",
                                                f"training.max_steps={steps}"])
    return run_training(cfg)


def _student_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "student" / "model.safetensors"))


@pytest.mark.slow
def test_two_processes_match_one(gpt2_nodrop, tmp_path, kd_home):
    """10 steps at a global batch of 16 (8 per process x 2) give the losses of one process at
    16, within 1e-4 a step; only the main process writes; the global batch is shown first."""
    cfg = _config(gpt2_nodrop, tmp_path)
    proc = _kdstudio("run", str(cfg), "--processes", "2")
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, out
    assert "8 rows per process x 2 processes x 1 accumulation = 16 rows" in out
    two = _only_run(kd_home)
    s = two.summary()
    assert s["status"] == "finished" and s["distributed"] == {
        "processes": 2, "per_process_batch": 8, "global_batch": 16}
    assert len(two.checkpoints()) == 1
    logs = [e["message"] for e in two.events() if e.get("kind") == "log"]
    assert any("= 16 rows per optimizer step" in m for m in logs)

    one = Run(_one_process(cfg, 16, 10).run_dir)
    a, b = _steps(two), _steps(one)
    assert [e["step"] for e in a] == list(range(1, 11)) == [e["step"] for e in b]
    worst = 0.0
    for x, y in zip(a, b):
        assert set(x["losses"]) == set(y["losses"])
        for k in x["losses"]:
            worst = max(worst, abs(x["losses"][k] - y["losses"][k]))
    print(f"\nparity, 2 processes x 8 against 1 x 16: largest per-step loss difference {worst:.3g}"
          f" (losses around {b[-1]['losses']['total']:.3f})")
    assert worst < 1e-4
    assert a[0]["samples_per_s"] > 0


@pytest.mark.slow
def test_stop_file_then_resume_with_one_process(gpt2_nodrop, tmp_path, kd_home):
    """Paused, then stopped from outside (files in the run folder) after step 5: every process
    stops after the same step and one checkpoint is left; resumed with ONE process (16 rows
    where there were 2 x 8) it ends with the weights of an uninterrupted run."""
    cfg = _config(gpt2_nodrop, tmp_path, max_steps=40)
    proc = _kdstudio("run", str(cfg), "--processes", "2")
    try:
        run = _wait_for(lambda: (kd_home / "runs").is_dir() and next(
            (Run(p) for p in (kd_home / "runs").iterdir() if (p / "metrics.jsonl").exists()),
            None), TIMEOUT, "the run folder")
        _wait_for(lambda: len(_steps(run)) >= 5, TIMEOUT, "step 5")
        (run.path / dist_control.PAUSE_FILE).write_text("")
        # Paused: the steps stop coming (a step under way when the file appeared still ends).
        time.sleep(1.5)
        held = len(_steps(run))
        time.sleep(1.0)
        assert len(_steps(run)) == held, "the pause did not hold every process"
        (run.path / dist_control.STOP_FILE).write_text("")
        (run.path / dist_control.PAUSE_FILE).unlink()
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        _end(proc)
    assert proc.returncode == 0, out
    stopped_at = _steps(run)[-1]["step"]
    assert stopped_at == held and 5 <= stopped_at < 40
    assert run.summary()["status"] == "stopped"
    assert [p.name for p in run.checkpoints()] == [f"step-{stopped_at:06d}"]
    (run.path / dist_control.STOP_FILE).unlink()

    from kdstudio.core.trainer import resume_training

    resumed = resume_training(run.path)
    assert resumed.status == "finished"
    logs = [e["message"] for e in run.events() if e.get("kind") == "log"]
    assert any("with 1 each takes 16 rows" in m for m in logs), logs
    whole = _one_process(cfg, 16, 40)
    got, want = _student_weights(run.path), _student_weights(whole.run_dir)
    worst = max(float((got[k] - want[k]).abs().max()) for k in want)
    print(f"\nstopped at step {stopped_at} of 40 with 2 processes, resumed with 1: largest weight "
          f"difference from an uninterrupted run {worst:.3g}")
    assert worst < 1e-5


@pytest.mark.slow
def test_two_machines_on_localhost(gpt2_nodrop, tmp_path, kd_home):
    """num_machines 2, one process each, both on 127.0.0.1: accelerate launch runs our entry
    point unchanged and the run completes."""
    from kdstudio.cli.launch import free_port

    cfg = _config(gpt2_nodrop, tmp_path, max_steps=4)
    port = free_port()
    procs = []
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               "--mixed_precision", "no", "--dynamo_backend", "no",
               "--module", "kdstudio.cli", "run", str(cfg)]
        procs.append(subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    run = _only_run(kd_home)
    assert run.summary()["status"] == "finished"
    assert run.summary()["distributed"]["processes"] == 2
    assert [e["step"] for e in _steps(run)] == [1, 2, 3, 4]


def _worker(parent_pid: int, rank: int):
    import psutil

    for child in psutil.Process(parent_pid).children(recursive=True):
        try:
            env = child.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("RANK") == str(rank) and "kdstudio.cli" in " ".join(child.cmdline()):
            return child
    return None


@pytest.mark.slow
def test_a_killed_process_fails_the_run_with_its_reason(gpt2_nodrop, tmp_path, kd_home):
    cfg = _config(gpt2_nodrop, tmp_path, max_steps=100000)
    proc = _kdstudio("run", str(cfg), "--processes", "2")
    try:
        run = _wait_for(lambda: (kd_home / "runs").is_dir() and next(
            (Run(p) for p in (kd_home / "runs").iterdir() if (p / "metrics.jsonl").exists()),
            None), TIMEOUT, "the run folder")
        _wait_for(lambda: len(_steps(run)) >= 3, TIMEOUT, "step 3")
        victim = _wait_for(lambda: _worker(proc.pid, 1), 30, "process 1")
        os.kill(victim.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        _end(proc)
    assert proc.returncode == 2, out
    assert "Process 1 of 2 died" in out and "SIGKILL" in out
    # The launcher's raw reports stay out of the terminal, in the run's launch.log.
    assert "Traceback" not in out and "torch.distributed.elastic" not in out, out
    assert "launch.log" in out and "'kdstudio resume" in " ".join(out.split())
    log = (run.path / "launch.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" in log and "Root Cause" in log and "SIGKILL" in log
    s = run.summary()  # the store reads back
    assert s["status"] == "failed" and "Process 1 of 2 died" in s["error"]
    events = run.events()
    assert events[-1]["kind"] == "failed" and "Process 1 of 2" in events[-1]["message"]
    assert run.status() == "failed"


def test_batch_share_keeps_the_micro_batch_across_process_counts():
    same = dist_share.batch_share(8, 2, 2)
    assert (same.per_process, same.global_batch) == (8, 32) and not same.note
    fewer = dist_share.batch_share(8, 1, 1, {"processes": 2, "per_process_batch": 8})
    assert fewer.per_process == 16 and fewer.global_batch == 16 and "16 rows" in fewer.note
    more = dist_share.batch_share(16, 1, 4, {"processes": 1, "per_process_batch": 16})
    assert more.per_process == 4
    odd = dist_share.batch_share(8, 1, 3, {"processes": 2, "per_process_batch": 8})
    assert odd.per_process == 8 and "cannot" in odd.note


def test_shards_cover_the_global_batch():
    from kdstudio.core.data import BatchOrder

    order = BatchOrder(100, 16, seed=3)
    shards = [dist_share.ShardOrder(BatchOrder(100, 16, seed=3), r, 2) for r in (0, 1)]
    for i in range(12):
        assert shards[0].indices(i) + shards[1].indices(i) == order.indices(i)


def test_single_process_group_is_a_no_op():
    g = distributed.start(torch.device("cpu"))
    assert g is distributed.SINGLE and not g.multi and g.is_main
    assert g.mean({"a": 1.5}) == {"a": 1.5} and g.sum(3, 4) == [3, 4] and g.any(True) == [True]
    module = torch.nn.Linear(2, 2)
    assert g.wrap(module) is module and g.broadcast(7) == 7


def _failure(index: int, rank: int, exitcode: int, pid: int, traceback: str,
             second: int = 0) -> str:
    """One entry of torch's launcher report (torch.distributed.elastic's ChildFailedError)."""
    return f"""[{index}]:
  time      : 2026-01-01_00:00:{second:02d}
  host      : box
  rank      : {rank} (local_rank: {rank})
  exitcode  : {exitcode} (pid: {pid})
  error_file: <N/A>
  traceback : {traceback}
"""


def _report(root: str, others: str = "  <NO_OTHER_FAILURES>\n") -> str:
    """The launcher's report: the other failures, then the first one it observed."""
    rule = "-" * 60
    return (f"\n{'=' * 60}\nkdstudio.cli FAILED\n{rule}\nFailures:\n{others}{rule}\n"
            f"Root Cause (first observed failure):\n{root}{'=' * 60}\n")


KILLED = "Signal 9 (SIGKILL) received by PID 123"


def test_failure_reason_names_the_process():
    from kdstudio.cli.launch import failure_reason

    report = _report(_failure(0, 1, -9, 123, KILLED))
    reason = failure_reason(report, 2)
    assert reason.startswith("Process 1 of 2 died") and "SIGKILL" in reason
    crashed = _report(_failure(0, 1, 1, 123, (
        "Traceback (most recent call last):\n    raise RunError\n  "
        "kdstudio.core.errors.RunError: Process 1 cannot find the teacher cache")))
    assert "exited with code 1: kdstudio.core.errors.RunError: Process 1 cannot" in \
        failure_reason(crashed, 2)
    # Killed process 1 broke process 0's collective, and the launcher happened to observe
    # process 0's failure first: the killed process is still the one named.
    peer_first = _report(_failure(0, 0, 1, 122, "RuntimeError: Connection closed by peer"),
                         others=_failure(1, 1, -9, 123, KILLED, second=1))
    assert "rank      : 0" in peer_first.split("Root Cause")[1]  # the race, as reported
    reason = failure_reason(peer_first, 2)
    assert reason.startswith("Process 1 of 2 died") and "SIGKILL" in reason, reason
    # Or the launcher ended process 0 with SIGTERM and observed that first.
    terminated = _report(_failure(0, 0, -15, 122, "RuntimeError: Connection closed by peer"),
                         others=_failure(1, 1, -9, 123, KILLED, second=1))
    reason = failure_reason(terminated, 2)
    assert reason.startswith("Process 1 of 2 died") and "SIGKILL" in reason, reason


# -- gathered evaluation, FSDP2, a stop during setup, a sweep, each process's dropout ---------

def _metrics_at(run: Run) -> dict[int, dict]:
    return {e["step"]: e["metrics"] for e in run.events() if e.get("kind") == "eval"}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["causal-lm", "sentence-embedding", "sequence-classification"])
def test_gathered_evaluation_equals_one_process(task, gpt2_nodrop, tiny, tmp_path, kd_home):
    """Each process measures its share of the evaluation batches (3 rows a batch, so the
    processes get different numbers of them) and the figures are those of one process: the
    same weights give the very same numbers; after training (weights within ~1e-6 of one
    process's) the language model's figures agree to 1e-5."""
    from kdstudio.core.config import load_config

    if task == "causal-lm":
        cfg = _config(gpt2_nodrop, tmp_path, eval_every=5)
    else:  # the task's own figures from gathered outputs; BERT's dropout makes training differ
        cfg = tmp_path / "run.toml"
        cfg.write_text(tiny_config(task, tiny["bert"], student={"layers": 2},
                                   training={"max_steps": 4, "batch_size": 8, "eval_every": 0,
                                             "save_every": 0},
                                   evaluation={"baseline": False}).to_toml(), encoding="utf-8")
    cfg.write_text(load_config(cfg).with_overrides(["evaluation.batch_size=3"]).to_toml(),
                   encoding="utf-8")
    proc = _kdstudio("run", str(cfg), "--processes", "2")
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, out
    two = _only_run(kd_home)
    steps = load_config(cfg).training.max_steps
    one = Run(_one_process(cfg, 16, steps).run_dir)
    s2, s1 = two.summary(), one.summary()
    assert s2["teacher_metrics"] == s1["teacher_metrics"]
    # KL to the teacher before training is ~1e-8: a sum of float32 terms of size ~1 whose
    # order differs when two processes gather their rows, so equal within float32 rounding
    assert s2["student_metrics_before"] == pytest.approx(s1["student_metrics_before"],
                                                         rel=1e-6, abs=1e-6)
    print(f"\n{task}, 2 processes against 1: teacher and before-training figures identical "
          f"({s1['student_metrics_before']})")
    if task == "causal-lm":
        m2, m1 = _metrics_at(two), _metrics_at(one)
        assert sorted(m2) == sorted(m1) == [0, 5, 10]
        worst = max(abs(m2[st][k] - m1[st][k]) / max(abs(m1[st][k]), 1e-12)
                    for st in m1 for k in m1[st])
        print(f"   largest relative difference of the figures at steps 5 and 10: {worst:.3g}")
        assert worst < 1e-5


@pytest.mark.slow
def test_fsdp_matches_one_process_and_its_checkpoint_resumes_anywhere(gpt2_nodrop, tmp_path,
                                                                      kd_home):
    """--fsdp (FSDP2 over gloo): the losses of one process at the same global batch within
    1e-4 a step, the clipped steps and the student saved whole (the keys and shapes of one
    process's); its checkpoint (full weights, full optimizer state) resumes with one process
    and with two FSDP processes, both reaching the uninterrupted run's weights."""
    import shutil

    cfg = _config(gpt2_nodrop, tmp_path, max_steps=6, save_every=3, max_grad_norm=0.05,
                  keep_checkpoints=5)
    proc = _kdstudio("run", str(cfg), "--processes", "2", "--fsdp")
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, out
    fsdp = _only_run(kd_home)
    # Really sharded (Accelerate alone would quietly run DDP on a CPU).
    logs = [e["message"] for e in fsdp.events() if e.get("kind") == "log"]
    assert any(m.startswith("FSDP2: the student is one unit, sharded across 2") for m in logs)
    assert fsdp.summary()["status"] == "finished"
    one = Run(_one_process(cfg, 16, 6).run_dir)
    worst = max(abs(x["losses"][k] - y["losses"][k])
                for x, y in zip(_steps(fsdp), _steps(one)) for k in y["losses"])
    got, want = _student_weights(fsdp.path), _student_weights(one.path)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    w_worst = max(float((got[k] - want[k]).abs().max()) for k in want)
    print(f"\nFSDP2, 2 processes x 8 against 1 x 16: largest per-step loss difference {worst:.3g}, "
          f"largest weight difference {w_worst:.3g}")
    assert worst < 1e-4 and w_worst < 1e-5

    from kdstudio.core.trainer import resume_training

    for how in ("one", "fsdp"):
        copy = kd_home / "runs" / f"resume-{how}"
        shutil.copytree(fsdp.path, copy)
        shutil.rmtree(copy / "checkpoints" / "step-000006")
        shutil.rmtree(copy / "student")
        Run(copy).update_summary(status="stopped")
        if how == "one":
            assert resume_training(copy, checkpoint="step-3").status == "finished"
        else:
            p = _kdstudio("resume", str(copy), "--checkpoint", "step-3", "--processes", "2",
                          "--fsdp")
            o, _ = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, o
            assert "FSDP2: the student is one unit" in o
        again = _student_weights(copy)
        r_worst = max(float((again[k] - got[k]).abs().max()) for k in got)
        print(f"   FSDP checkpoint of step 3 resumed with {how}: largest weight difference from "
              f"the uninterrupted FSDP run {r_worst:.3g}")
        assert r_worst < 1e-6


@pytest.mark.slow
def test_fsdp_layer_by_layer_matches_one_process(gpt2_nodrop, tmp_path, kd_home):
    """An Accelerate config's layer-wise wrap policy (each GPT2Block its own FSDP2 unit): the
    evaluations between steps and the saved student still see the whole student, the losses
    are one process's within 1e-4 a step, and the plain-training baseline (the main process
    alone, on a fresh copy of the architecture, at the global batch) is one process's too."""
    from kdstudio.cli.launch import free_port
    from kdstudio.core.config import load_config

    cfg = _config(gpt2_nodrop, tmp_path, max_steps=4, eval_every=2)
    cfg.write_text(load_config(cfg).with_overrides(["evaluation.baseline=true"]).to_toml(),
                   encoding="utf-8")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2",
           "--num_machines", "1", "--machine_rank", "0", "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(free_port()), "--mixed_precision", "no",
           "--dynamo_backend", "no", "--use_fsdp", "--fsdp_version", "2",
           "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
           "--fsdp_transformer_layer_cls_to_wrap", "GPT2Block",
           "--module", "kdstudio.cli", "run", str(cfg)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:  # a process that hangs in a collective ignores SIGTERM: end the whole launch
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, out
    run = _only_run(kd_home)
    logs = [e["message"] for e in run.events() if e.get("kind") == "log"]
    assert any("in 3 units (GPT2Block and the rest)" in m for m in logs), logs
    one = Run(_one_process(cfg, 16, 4).run_dir)
    worst = max(abs(x["losses"][k] - y["losses"][k])
                for x, y in zip(_steps(run), _steps(one)) for k in y["losses"])
    assert sorted(_metrics_at(run)) == [0, 2, 4]
    got, want = _student_weights(run.path), _student_weights(one.path)
    assert sorted(got) == sorted(want)
    b2, b1 = (r.summary()["baseline_metrics"]["perplexity"] for r in (run, one))
    print(f"\nFSDP2 layer by layer against one process: largest per-step loss difference "
          f"{worst:.3g}; baseline perplexity {b2:.6g} against {b1:.6g}")
    assert worst < 1e-4
    assert abs(b2 - b1) / b1 < 1e-5


@pytest.mark.slow
def test_a_stop_file_during_setup_stops_every_process(gpt2_nodrop, tmp_path, kd_home):
    """The stop file is there before any process has loaded its data: every process stops at
    the first check they all make, before training began, and the launch ends cleanly."""
    from kdstudio.core.launch import start

    cfg = _config(gpt2_nodrop, tmp_path, max_steps=100000)
    launch = start(["run", str(cfg)], 2, env=_env(), stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT)
    launch.stop()
    try:
        out, _ = launch.proc.communicate(timeout=TIMEOUT)
    finally:
        launch.kill()
    out = out.decode("utf-8", errors="replace")
    assert launch.proc.returncode == 0, out
    assert "Stopped before training began" in out
    runs = kd_home / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if (p / "checkpoints").exists()]


@pytest.mark.slow
def test_sweep_runs_each_student_in_two_processes(gpt2_nodrop, tmp_path, kd_home):
    """kdstudio sweep --processes 2: each of two tiny students runs in two processes, one after
    the other, and the sweep's table has both."""
    from kdstudio.core.sweep.queue import list_sweeps

    cfg = _config(gpt2_nodrop, tmp_path, max_steps=3)
    proc = _kdstudio("sweep", str(cfg), "--layers", "1,2", "--processes", "2", "--yes")
    out, _ = proc.communicate(timeout=2 * TIMEOUT)
    assert proc.returncode == 0, out
    assert "Each student runs in 2 processes" in out
    (sweep,) = list_sweeps()
    assert [e.status for e in sweep.entries] == ["finished", "finished"]
    for e in sweep.entries:
        s = Run(e.run_dir).summary()
        assert s["status"] == "finished" and s["distributed"]["processes"] == 2
        assert [x["step"] for x in _steps(Run(e.run_dir))] == [1, 2, 3]
    assert (sweep.folder / "table.csv").exists()


def test_optimizer_state_by_name_and_back_is_the_same():
    """The form torch's distributed state-dict functions read (parameter names) and the form
    one process saves (numbers in group order) turn into each other without loss."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW([{"params": [model[0].weight, model[2].weight]},
                             {"params": [model[0].bias, model[1].weight, model[1].bias,
                                         model[2].bias], "weight_decay": 0.0}])
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    plain = opt.state_dict()
    named = distributed._by_name(plain, model, opt)
    assert set(named["state"]) == {n for n, _ in model.named_parameters()}
    assert named["param_groups"][0]["params"] == ["0.weight", "2.weight"]
    back = distributed._by_number(named)
    assert back["param_groups"] == plain["param_groups"]
    for i, st in plain["state"].items():
        for k, v in st.items():
            assert torch.equal(back["state"][i][k], v)


def test_each_process_draws_its_own_dropout_stream():
    """The main process keeps the random stream of one process; every other one gets its own,
    the same again for the same (seed, rank, step)."""
    from types import SimpleNamespace

    def draws(rank: int, step: int = 0) -> torch.Tensor:
        torch.manual_seed(5)
        group = SimpleNamespace(multi=True, is_main=rank == 0, rank=rank)
        dist_share.seed_process(group, 5, step)
        return torch.rand(8)

    torch.manual_seed(5)
    alone = torch.rand(8)
    assert torch.equal(draws(0), alone)
    assert not torch.equal(draws(1), alone) and not torch.equal(draws(1), draws(2))
    assert torch.equal(draws(1), draws(1)) and not torch.equal(draws(1, 3), draws(1))
    dist_share.seed_process(distributed.SINGLE, 5, 0)  # one process: nothing changes


@pytest.mark.parametrize("fails", [False, True])
def test_a_launched_process_leaves_its_group_however_it_ends(tmp_path, fails):
    """A process of a launch leaves its process group before it exits, after a run or after an
    error: left to the interpreter's exit, gloo's threads can abort a finished process."""
    import torch.distributed as dist

    from kdstudio.cli.launch import recorded_errors

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        assert dist.is_initialized()
        with pytest.raises(RuntimeError, match="boom") if fails else contextlib.nullcontext():
            with recorded_errors():
                dist.all_reduce(torch.ones(2))
                if fails:
                    raise RuntimeError("boom")
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("rank", [0, 1])
def test_the_setup_stop_of_the_main_process_sees_the_stop_file(tmp_path, monkeypatch, rank):
    """Inside the main process's own long passes (the teacher cache) the launch's stop file
    counts, without a collective; another process reads only its own Ctrl-C there."""
    import threading
    from types import SimpleNamespace

    stop_file = tmp_path / "stop"
    monkeypatch.setenv(dist_control.ENV_STOP_FILE, str(stop_file))
    group = SimpleNamespace(is_main=rank == 0)
    local = threading.Event()
    setup = dist_control.SetupStop(dist_control.SharedStop(group, local))
    assert not setup.is_set()
    stop_file.touch()
    assert setup.is_set() == (rank == 0)
    local.set()
    assert setup.is_set()


def test_a_sharded_student_is_not_trained_in_fp16(monkeypatch):
    """FSDP holds a shard of each gradient per process, and fp16's grad scaler would skip a step
    on one process and not another: fp16 is refused with FSDP, and 'auto' on a GPU without
    bf16 picks fp32 there; DDP keeps fp16."""
    from kdstudio.core.device import resolve_precision
    from kdstudio.core.errors import ConfigError

    gpu = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", gpu) == "fp16"
    assert resolve_precision("auto", gpu, sharded=True) == "fp32"
    assert resolve_precision("fp16", gpu) == "fp16"
    with pytest.raises(ConfigError, match="fp16.*FSDP") as err:
        resolve_precision("fp16", gpu, sharded=True)
    assert "bf16" in err.value.hint and "--fsdp" in err.value.hint
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", gpu, sharded=True) == "bf16"
    assert not distributed.SINGLE.fsdp
