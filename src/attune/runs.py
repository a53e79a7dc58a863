"""Where a run's artefacts live, so training, evaluation, compare and serving agree.

    runs/<recipe-name>/<YYYYmmdd-HHMMSS>/
      recipe.yaml              the resolved recipe (every default filled in)
      provenance.json          library versions, command line, host
      stages/<stage>/
        adapter/               PEFT-format adapter (adapter shapes built on PEFT)
        model/                 full weights (full / freeze / bottleneck shapes, or merged)
        checkpoints/step-N/    resumable training state (atomic, keep-last-N)
        metrics.jsonl          one JSON object per logged step
        summary.json           trainable params, tokens seen, wall time, final losses
        tb/                    TensorBoard event files
      eval.json, compare.json, report.md, report.html, plots/
      train.pid, .train.lock   while a process trains it (a second trainer is refused)
    runs/<recipe-name>/latest -> the newest run dir
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from attune.errors import AttuneError


@dataclass(frozen=True)
class StageOutput:
    """What one finished stage left behind."""

    dir: Path

    @property
    def adapter(self) -> Path | None:
        p = self.dir / "adapter"
        return p if (p / "adapter_config.json").is_file() or (p / "bottleneck_config.json").is_file() else None

    @property
    def model(self) -> Path | None:
        p = self.dir / "model"
        return p if (p / "config.json").is_file() else None

    @property
    def summary(self) -> dict:
        p = self.dir / "summary.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    @property
    def metrics_file(self) -> Path:
        return self.dir / "metrics.jsonl"


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    """Create runs/<name>/<time>/ and point runs/<name>/latest at it."""
    base = Path(output_dir) / name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = base / stamp
    n = 1
    while run.exists():
        n += 1
        run = base / f"{stamp}-{n}"
    run.mkdir(parents=True)
    latest = base / "latest"
    tmp = base / f".latest-{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(run.name)
    os.replace(tmp, latest)
    return run


def stage_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / "stages" / stage


def stage_output(run_dir: str | Path, stage: str) -> StageOutput:
    """The finished output of `stage` in `run_dir`, or a clear error if it has none."""
    d = stage_dir(run_dir, stage)
    out = StageOutput(d)
    if out.adapter is None and out.model is None:
        raise AttuneError(f"run {run_dir} has no finished output for stage {stage!r} (looked in {d})")
    return out


def latest_run(output_dir: str | Path, name: str) -> Path | None:
    p = Path(output_dir) / name / "latest"
    return p.resolve() if p.exists() else None


def training_pid(run_dir: str | Path) -> int | None:
    """The id of the live process training `run_dir` now, or None."""
    try:
        pid = int((Path(run_dir) / "train.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def busy_error(run_dir: Path, pid: int | None) -> AttuneError:
    who = f"process {pid}" if pid else "another process"
    return AttuneError(f"{run_dir} is already being trained by {who}; wait for it to finish or stop it, "
                       "then resume (two trainers on one run dir would overwrite each other's checkpoints)")


def check_not_training(run_dir: str | Path) -> None:
    """Refuse to start on a run dir another process is training (the message `training_lock` gives)."""
    if (pid := training_pid(run_dir)) is not None:
        raise busy_error(Path(run_dir), pid)


@contextmanager
def training_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold `run_dir`'s lock while training; a second trainer gets a clear error and writes nothing."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    lock = FileLock(str(run_dir / ".train.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise busy_error(run_dir, training_pid(run_dir)) from None
    pid_file = run_dir / "train.pid"
    pid_file.write_text(str(os.getpid()))
    try:
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()
