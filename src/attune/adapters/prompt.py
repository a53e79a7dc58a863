"""Prompt tuning (Lester et al. 2021): a few trainable input embeddings prepended to every input.

The soft prompt can start from the embedding of a text (`init_text`), which the paper found
converges faster than random vectors. The tokenizer for that text is read from the model's own
directory (`model.config._name_or_path`), so the shape needs nothing but the model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from attune.adapters.base import AdapterConfig, register
from attune.adapters.lora import wrap


class PromptConfig(AdapterConfig):
    type: Literal["prompt"] = "prompt"
    virtual_tokens: int = Field(20, gt=0, description="soft prompt length")
    init_text: str | None = Field(None, description="initialise from the embeddings of this text (else random)")


@register("prompt", PromptConfig, merge=None)
def apply(model, cfg: PromptConfig):
    from peft import PromptTuningConfig, PromptTuningInit

    kwargs = {}
    if cfg.init_text:
        kwargs = {
            "prompt_tuning_init": PromptTuningInit.TEXT,
            "prompt_tuning_init_text": cfg.init_text,
            "tokenizer_name_or_path": model.config._name_or_path,
        }
    return wrap(model, PromptTuningConfig(num_virtual_tokens=cfg.virtual_tokens, task_type="CAUSAL_LM", **kwargs))
