"""IA3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning"): learned vectors that rescale keys, values and the MLP's intermediate activations.

Far fewer parameters than LoRA (hidden-size vectors, not matrices). Defaults follow the paper's
choice of modules for decoder models: k_proj, v_proj and down_proj (feed-forward input scaled).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from attune.adapters.base import AdapterConfig, register
from attune.adapters.lora import wrap


class IA3Config(AdapterConfig):
    type: Literal["ia3"] = "ia3"
    targets: list[str] = Field(default_factory=lambda: ["k_proj", "v_proj", "down_proj"], description="modules to rescale")
    feedforward: list[str] = Field(
        default_factory=lambda: ["down_proj"], description="targets whose input (not output) is rescaled"
    )


@register("ia3", IA3Config)
def apply(model, cfg: IA3Config):
    from peft import IA3Config as PeftIA3Config

    return wrap(model, PeftIA3Config(target_modules=cfg.targets, feedforward_modules=cfg.feedforward, task_type="CAUSAL_LM"))
