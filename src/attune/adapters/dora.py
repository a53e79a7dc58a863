"""DoRA (Liu et al. 2024): LoRA on the direction of each weight, with a trainable magnitude vector.

Same settings as LoRA; PEFT's `use_dora=True`. Slower per step than LoRA (the weight norm is
recomputed every forward) and usually a little better at low rank.
"""

from __future__ import annotations

from typing import Literal

from attune.adapters.base import register
from attune.adapters.lora import LoraConfig, peft_lora_config, wrap


class DoraConfig(LoraConfig):
    type: Literal["dora"] = "dora"  # type: ignore[assignment]


@register("dora", DoraConfig)
def apply(model, cfg: DoraConfig):
    return wrap(model, peft_lora_config(cfg, use_dora=True))
