"""Where a run's artefacts live, so training, evaluation, compare and serving agree.

    runs/<recipe-name>/<YYYYmmdd-HHMMSS>/
      recipe.yaml              the resolved recipe (every default filled in)
      provenance.json          library versions, command line, host
      stages/<stage>/
        adapter/               an adapter on its base: PEFT format, or the shape's own (bottleneck),
                               with attune_adapter.json (base fingerprint, stage, shape)
        model/                 full weights (full / freeze shapes)
        merged/                base + adapter merged, written once when a later stage starts from it
        checkpoints/step-N/    resumable training state (atomic, keep-last-N)
        metrics.jsonl          one JSON object per logged step
        summary.json           trainable params, tokens seen, wall time, final losses
        tb/                    TensorBoard event files
      eval.json, compare.json, report.md, report.html, plots/
    runs/<recipe-name>/latest -> the newest run dir
"""

from __future__ import annotations

import json
import os
import time
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
        return p if (p / "attune_adapter.json").is_file() else None

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
