"""Re-record a demo's events for the run-health replay test (tests/core/test_health_demos.py).

    .venv/bin/python packaging/record_demo_events.py causal-lm

runs `kdstudio demo --task TASK` in a fresh KDSTUDIO_HOME (a whole run, minutes to tens of
minutes on a CPU), then writes the run's Started, Step, Eval and Finished records from its
metrics.jsonl to tests/core/demo_events/TASK.jsonl. Re-record a demo whenever its recipe or
what its evaluations report changes; the alarms the run raised are printed (there should be
none: the replay test checks the same).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "core" / "demo_events"
KEPT = ("started", "step", "eval", "finished")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", help="the demo: sentence-embedding, sequence-classification, "
                                "token-classification or causal-lm")
    p.add_argument("--home", help="KDSTUDIO_HOME for the run (default: a new temporary folder; "
                                  "reuse one to keep a prepared teacher)")
    p.add_argument("--from-run", metavar="RUN_DIR",
                   help="take the events of a finished `kdstudio demo --task TASK` run instead "
                        "of running the demo again")
    args = p.parse_args()
    if args.from_run:
        run = Path(args.from_run)
        problem = _not_the_demo(run, args.task)
        if problem:
            print(problem, file=sys.stderr)
            return 1
    else:
        home = Path(args.home or tempfile.mkdtemp(prefix="kdstudio-record-"))
        kdstudio = Path(sys.executable).with_name("kdstudio")
        env = {**os.environ, "KDSTUDIO_HOME": str(home)}
        before = set((home / "runs").glob("*")) if (home / "runs").is_dir() else set()
        subprocess.run([str(kdstudio), "demo", "--task", args.task], env=env, check=True)
        runs = sorted(set((home / "runs").glob("*")) - before)
        if not runs:
            print(f"The demo wrote no run under {home / 'runs'}.", file=sys.stderr)
            return 1
        run = runs[-1]
    records = [json.loads(line) for line in
               (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    alarms = [r for r in records if r.get("kind") == "health"]
    kept = [r for r in records if r.get("kind") in KEPT]
    target = OUT / f"{args.task}.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    print(f"{len(kept)} records of {run} written to {target.relative_to(ROOT)}")
    for a in alarms:
        print(f"alarm at step {a['step']}: {a['alarm']}: {a['message']}")
    return 0


def _not_the_demo(run: Path, task: str) -> str:
    """Why RUN_DIR is not a whole, finished run of the demo's own config ('' when it is)."""
    from dataclasses import asdict

    from kdstudio.core.config import load_config
    from kdstudio.core.errors import ConfigError

    try:
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        ran = asdict(load_config(run / "config.toml"))
    except (OSError, ValueError, ConfigError) as e:
        return f"{run} is not a run folder ({e})."
    if summary.get("status") != "finished":
        return f"{run} did not finish (status {summary.get('status')!r})."
    shipped = asdict(load_config(ROOT / "resources" / "demos" / f"{task}.toml"))
    if (ran["name"], ran["task"]) != (shipped["name"], shipped["task"]):
        return (f"{run} is the run {ran['name']!r} ({ran['task']}), not the {task} demo "
                f"{shipped['name']!r}.")
    changed = sorted(f"{section}.{key}" for section, values in shipped.items()
                     if isinstance(values, dict) for key, value in values.items()
                     if ran[section][key] != value)
    if changed:
        return f"{run} ran the demo with other settings: {', '.join(changed)}."
    return ""


if __name__ == "__main__":
    sys.exit(main())
