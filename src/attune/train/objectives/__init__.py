"""The objective registry: name -> the `Objective` subclass (see `attune.train.objective` for the seam).

Adding an objective = its module (an `Objective` subclass) + one line below. Classes are
imported when first asked for, so listing the names costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from attune.errors import unknown

if TYPE_CHECKING:
    from attune.train.objective import Objective

OBJECTIVES: dict[str, str] = {
    "sft": "attune.train.objectives.sft:SFT",
    "cpt": "attune.train.objectives.cpt:CPT",
    "distill": "attune.train.objectives.distill:Distill",
    "reward": "attune.train.objectives.reward:Reward",
    "dpo": "attune.train.objectives.dpo:DPO",
    "ppo": "attune.train.objectives.ppo:PPO",
    "grpo": "attune.train.objectives.grpo:GRPO",
}


def get_objective(name: str) -> type[Objective]:
    """The class implementing objective `name`."""
    if name not in OBJECTIVES:
        raise unknown("objective", name, OBJECTIVES)
    module, _, cls = OBJECTIVES[name].partition(":")
    return getattr(importlib.import_module(module), cls)
