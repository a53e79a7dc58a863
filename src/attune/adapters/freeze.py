"""Freeze-tuning: train only the last N transformer blocks and/or modules matching name patterns.

A cheap middle ground between LoRA and full fine-tuning: the early layers (general features)
stay intact, the top layers (task-specific features) adapt fully.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Literal

from pydantic import Field, model_validator

from attune.adapters.base import AdapterConfig, register
from attune.errors import AttuneError


class FreezeConfig(AdapterConfig):
    type: Literal["freeze"] = "freeze"
    last_blocks: int = Field(2, ge=0, description="train the last N decoder blocks")
    modules: list[str] = Field(default_factory=list, description="also train parameters matching these glob patterns, e.g. '*.norm.*'")

    @model_validator(mode="after")
    def _something(self) -> "FreezeConfig":
        if self.last_blocks == 0 and not self.modules:
            raise ValueError("freeze: nothing to train (set last_blocks > 0 or modules)")
        return self


@register("freeze", FreezeConfig, output="model")
def apply(model, cfg: FreezeConfig):
    blocks = sorted({int(m.group(1)) for n, _ in model.named_parameters() if (m := re.search(r"\.layers\.(\d+)\.", n))})
    if cfg.last_blocks > len(blocks):
        raise AttuneError(f"freeze: last_blocks={cfg.last_blocks} but the model has {len(blocks)} blocks")
    train_blocks = set(blocks[len(blocks) - cfg.last_blocks :]) if cfg.last_blocks else set()
    matched = False
    for name, p in model.named_parameters():
        m = re.search(r"\.layers\.(\d+)\.", name)
        by_block = m is not None and int(m.group(1)) in train_blocks
        by_name = any(fnmatch.fnmatch(name, pat) for pat in cfg.modules)
        matched |= by_name
        p.requires_grad_(by_block or by_name)
    if cfg.modules and not matched:
        raise AttuneError(f"freeze: no parameter matches {cfg.modules}")
    return model
