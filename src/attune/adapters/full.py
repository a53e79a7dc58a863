"""Full fine-tuning: every weight trains. Highest capacity, highest memory (weights + gradients +
two AdamW moments = 16 bytes per parameter in fp32) and the highest risk of forgetting."""

from __future__ import annotations

from typing import Literal

from attune.adapters.base import AdapterConfig, register


class FullConfig(AdapterConfig):
    type: Literal["full"] = "full"


@register("full", FullConfig, output="model")
def apply(model, cfg: FullConfig):
    for p in model.parameters():
        p.requires_grad_(True)
    return model
