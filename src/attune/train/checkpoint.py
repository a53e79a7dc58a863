"""Resumable checkpoints: written to a temp dir and renamed, keep-last-N, exact resume.

A checkpoint holds only what changes during training: the trainable parameters (for LoRA a few
MB, not the frozen base), optimizer and scheduler state, every RNG state, and the step. The
batch plan is a pure function of (seed, epoch), so a resumed run replays the same batches and
ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

PREFIX = "step-"


@dataclass
class TrainState:
    step: int
    best_eval: float | None = None
    evals_without_improvement: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    root: Path, model: nn.Module, optimizer: Any, scheduler: Any, state: TrainState, keep: int,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoints/step-N atomically and prune to the newest `keep`.

    `weights`: the trainable tensors when they are not the model's own (gathered from shards).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(trainable_state(model) if weights is None else weights, tmp / "trainable.pt")
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": state.__dict__,
            "rng": {
                "python": random.getstate(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        },
        tmp / "trainer.pt",
    )
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp dirs of a killed write are ignored)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "trainer.pt").is_file())


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: Any, scheduler: Any,
    assign: Callable[[dict], None] | None = None, load_optimizer: Callable[[dict], None] | None = None,
) -> TrainState:
    """Restore a checkpoint into live objects; returns the saved TrainState.

    `assign` / `load_optimizer` replace the plain copies when parameters and optimizer state are
    sharded over processes (`train/distributed.py`).
    """
    weights = torch.load(path / "trainable.pt", map_location="cpu")
    if assign is not None:
        assign(weights)
        weights = {}
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        from attune.errors import AttuneError

        raise AttuneError(f"checkpoint {path} does not match this model/adapter (e.g. {missing[0]})")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))
    trainer = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
    (load_optimizer or optimizer.load_state_dict)(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    random.setstate(trainer["rng"]["python"])
    torch.set_rng_state(trainer["rng"]["torch"])
    if trainer["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(trainer["rng"]["cuda"])
    return TrainState(**trainer["state"])
