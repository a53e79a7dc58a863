"""The runs under the studio's runs root, read through the run-dir layout of `attune.runs`.

A run's status comes from what is on disk, so runs started from the CLI show up as well:
`running` (a live process holds it, `runs.training_pid`), `finished` (every stage has its
summary), `stopped` (checkpoints, no live process: resumable), `failed` (the studio's job for it
exited with an error) or `incomplete`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from attune.runs import stage_dir, training_pid
from attune.train.checkpoint import list_checkpoints

JOB_FILE = "studio-job.json"  # written by attune.studio.jobs next to the run's own files


@dataclass
class StageView:
    name: str
    objective: str
    done: bool
    steps: int = 0
    total_steps: int | None = None
    seconds_left: float | None = None
    last: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunView:
    id: str  # the run dir relative to the runs root: NAME/TIME
    name: str
    path: Path
    model: str
    status: str
    stages: list[StageView]
    pid: int | None
    has_report: bool
    job: dict[str, Any]


def read_metrics(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of `path` from byte `offset` on, and the offset after the last one.

    A line still being written (no newline yet) is left for the next read. A file shorter than
    `offset` was rewritten (a resume truncates it): the caller starts again from 0.
    """
    if not path.is_file():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    end = chunk.rfind(b"\n") + 1
    rows = [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]
    return rows, offset + end


def _total_steps(stage: dict[str, Any], rows: list[dict[str, Any]]) -> int | None:
    """Planned optimizer steps, from the recipe's train options and the logged epoch fraction."""
    train = stage.get("train") or {}
    if train.get("max_steps"):
        return int(train["max_steps"])
    last = rows[-1] if rows else None
    if last and last.get("epoch") and train.get("epochs"):
        per_epoch = last["step"] / last["epoch"]
        return max(1, math.ceil(float(train["epochs"]) * round(per_epoch)))
    return None


def stage_view(run: Path, stage: dict[str, Any]) -> StageView:
    name = stage.get("name") or stage["objective"]
    d = stage_dir(run, name)
    rows, _ = read_metrics(d / "metrics.jsonl")
    total = _total_steps(stage, rows)
    steps = rows[-1]["step"] if rows else 0
    left = None
    if rows and total and steps < total:
        per_step = sum(r.get("seconds", 0) for r in rows) / max(len(rows), 1)
        left = round(per_step * (total - steps), 1)
    return StageView(name, stage["objective"], (d / "summary.json").is_file(), steps, total, left, rows[-1] if rows else {})


def read_job(run: Path) -> dict[str, Any]:
    p = run / JOB_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def run_view(runs_root: Path, run: Path, live_pids: dict[Path, int] | None = None) -> RunView:
    """What the runs page shows of one run dir; `live_pids` are the studio's own running jobs."""
    try:
        recipe = yaml.safe_load((run / "recipe.yaml").read_text()) or {}
    except yaml.YAMLError:  # being rewritten by the trainer at this instant: show it without stages this once
        recipe = {}
    stages = [stage_view(run, s) for s in recipe.get("stages", [])]
    job = read_job(run)
    pid = training_pid(run) or (live_pids or {}).get(run.resolve())
    if pid:
        status = "running"
    elif stages and all(s.done for s in stages):
        status = "finished"
    elif job.get("exit_code") not in (None, 0) and not job.get("stop_requested"):
        status = "failed"
    elif any(list_checkpoints(stage_dir(run, s.name) / "checkpoints") for s in stages):
        status = "stopped"
    else:
        status = "incomplete"
    return RunView(str(run.relative_to(runs_root)), recipe.get("name", run.parent.name), run, str(recipe.get("model", "")),
                   status, stages, pid, (run / "report.html").is_file(), job)


def list_runs(runs_root: Path, live_pids: dict[Path, int] | None = None) -> list[RunView]:
    """Every runs/NAME/TIME/ with a recipe.yaml, newest first (the `latest` links are skipped)."""
    if not runs_root.is_dir():
        return []
    found = [p for p in runs_root.glob("*/*") if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
             and not p.parent.name.startswith(".") and (p / "recipe.yaml").is_file()]
    found.sort(key=lambda p: (p / "recipe.yaml").stat().st_mtime, reverse=True)
    return [run_view(runs_root, p, live_pids) for p in found]
