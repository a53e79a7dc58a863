"""Prefix tuning (Li & Liang 2021): trainable key/value vectors prepended at every layer.

A prompt-learning shape: PEFT adds the prefix inside its forward through the KV cache, so the
loop trains it unpacked, with a padding mask, through PEFT's forward.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from attune.adapters.base import AdapterConfig, register
from attune.adapters.lora import wrap


class PrefixConfig(AdapterConfig):
    type: Literal["prefix"] = "prefix"
    virtual_tokens: int = Field(20, gt=0, description="prefix length per layer (the paper uses 10-200)")
    projection: bool = Field(False, description="reparameterise the prefix through an MLP (the paper's stabiliser)")


@register("prefix", PrefixConfig, merge=None)
def apply(model, cfg: PrefixConfig):
    from peft import PrefixTuningConfig

    return wrap(
        model,
        PrefixTuningConfig(num_virtual_tokens=cfg.virtual_tokens, prefix_projection=cfg.projection, task_type="CAUSAL_LM"),
    )
