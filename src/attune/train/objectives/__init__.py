"""The objective seam: one module per training objective, registered here by name.

An objective module exposes:
  Options          a `TrainConfig` subclass with the objective's own settings (validated from `train:`)
  RECORD_KINDS     the canonical record kinds it trains on (see `attune.data.records`)
  prepare(records, tokenizer, options, context) -> list[dict]   tokenize records into examples
  collate(examples, options, pad_id) -> dict                   build one micro-batch
  loss(model, batch, context) -> (loss tensor, {metric: float})
and optionally (read by `attune.train.pipeline`):
  stream(recipe, stage, tokenizer, context) -> (ExampleStream, val examples)   when `train.streaming` (cpt)
  student(model, stage) -> model                 the model the stage trains, made from the starting one (distill)

The loop (`attune.train.loop`) owns everything else: batching, optimisation, checkpoints,
logging, distribution. Adding an objective = one module + one line below.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from attune.errors import unknown

OBJECTIVES: dict[str, str] = {
    "sft": "attune.train.objectives.sft",
    "cpt": "attune.train.objectives.cpt",
    "distill": "attune.train.objectives.distill",
    "reward": "attune.train.objectives.reward",
    "dpo": "attune.train.objectives.dpo",
    "ppo": "attune.train.objectives.ppo",
    "grpo": "attune.train.objectives.grpo",
}


def get_objective(name: str) -> ModuleType:
    """Import and return the module implementing objective `name`."""
    if name not in OBJECTIVES:
        raise unknown("objective", name, OBJECTIVES)
    return importlib.import_module(OBJECTIVES[name])
