"""Resumable checkpoints: written to a temp dir and renamed, keep-last-N, exact resume, nothing unpickled.

A checkpoint holds only what changes during training: the trainable parameters (for LoRA a few
MB, not the frozen base), optimizer and scheduler state, every RNG state, and the step. The
batch plan is a pure function of (seed, epoch), so a resumed run replays the same batches and
ends with the same weights as an uninterrupted one.

Files of `checkpoints/step-N/`, none of which can run code when read:
    trainable.safetensors   the trainable parameters
    optimizer.pt            optimizer + scheduler state and torch RNG states: tensors, numbers and
                            containers only, read with `torch.load(weights_only=True)`
    state.json              the step counters (`TrainState`) and Python's RNG state
    manifest.json           size and SHA-256 of each file above; written last, so a checkpoint
                            without it (or whose files do not match it) is partial or corrupt

`--resume` takes the newest intact checkpoint; each newer one that is not intact is named with
the reason, and resume falls back past it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attune.errors import AttuneError

PREFIX = "step-"
WEIGHTS, TRAINER, STATE, MANIFEST = "trainable.safetensors", "optimizer.pt", "state.json", "manifest.json"


@dataclass
class TrainState:
    step: int
    best_eval: float | None = None
    evals_without_improvement: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0


class CorruptCheckpoint(AttuneError):
    """A checkpoint that is partial, damaged or not a checkpoint attune wrote; the message says which file."""


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    root: Path, model: nn.Module, optimizer: Any, scheduler: Any, state: TrainState, keep: int
) -> Path:
    """Write checkpoints/step-N atomically and prune to the newest `keep`."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), tmp / WEIGHTS)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        tmp / TRAINER,
    )
    version, internal, gauss = random.getstate()
    (tmp / STATE).write_text(json.dumps({"state": state.__dict__, "python_rng": [version, list(internal), gauss]}))
    manifest = {"files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                          for name in (WEIGHTS, TRAINER, STATE)}}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories, oldest first (temp dirs of a killed write are ignored); see `resume_latest`
    for which of them are intact."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and p.is_dir())


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(weights, trainer state, json state) of one checkpoint, all checked; raises `CorruptCheckpoint`."""
    from safetensors.torch import load_file

    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpoint(f"{path}: no readable {MANIFEST} (the checkpoint was not finished writing)") from exc
    for name in (WEIGHTS, TRAINER, STATE):
        file = path / name
        expected = files.get(name) if isinstance(files, dict) else None
        if not file.is_file() or not isinstance(expected, dict):
            raise CorruptCheckpoint(f"{file}: missing")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise CorruptCheckpoint(f"{file}: {size} bytes, the manifest says {expected.get('bytes')} (truncated or changed)")
        if _sha256(file) != expected.get("sha256"):
            raise CorruptCheckpoint(f"{file}: contents do not match the manifest's SHA-256 (corrupt or changed)")
    try:
        weights = load_file(path / WEIGHTS)
        trainer = torch.load(path / TRAINER, map_location="cpu", weights_only=True)
        meta = json.loads((path / STATE).read_text())
        TrainState(**meta["state"])
        version, internal, gauss = meta["python_rng"]
        if not isinstance(trainer, dict) or not {"optimizer", "scheduler", "torch_rng"} <= set(trainer):
            raise ValueError(f"{TRAINER} lacks the optimizer, scheduler or RNG state")
    except Exception as exc:  # weights_only refuses any object that is not plain data
        raise CorruptCheckpoint(f"{path}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    return weights, trainer, meta


def load_checkpoint(path: Path, model: nn.Module, optimizer: Any, scheduler: Any) -> TrainState:
    """Restore a checkpoint into live objects (only after every file was read and checked)."""
    weights, trainer, meta = read_checkpoint(path)
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise AttuneError(f"checkpoint {path} does not match this model/adapter (e.g. {missing[0]})")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(trainer["torch_rng"])
    if trainer.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(trainer["cuda_rng"])
    return TrainState(**meta["state"])


def resume_latest(root: Path, model: nn.Module, optimizer: Any, scheduler: Any) -> TrainState | None:
    """Restore the newest intact checkpoint under `root` (None if there is none at all).

    Each newer checkpoint that is partial or corrupt is named on stderr with the reason; if no
    checkpoint is intact, the error lists every one."""
    found = list_checkpoints(root)
    skipped: list[str] = []
    for path in reversed(found):
        try:
            state = load_checkpoint(path, model, optimizer, scheduler)
        except CorruptCheckpoint as exc:
            skipped.append(str(exc))
            print(f"attune: skipping checkpoint {path.name}: {exc}", file=sys.stderr)
            continue
        if skipped:
            print(f"attune: resuming from {path} (the newest intact checkpoint)", file=sys.stderr)
        return state
    if skipped:
        raise AttuneError(f"{root}: no intact checkpoint to resume from:\n  " + "\n  ".join(skipped))
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
