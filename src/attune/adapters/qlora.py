"""QLoRA (Dettmers et al. 2023): LoRA on a base quantized to 4-bit NF4 with bitsandbytes.

Quantization happens when the model is loaded, so the shape gives the loader its
`quantization_config` (`load_kwargs`). Compute dtype: bf16 on GPUs, fp32 on CPU (bitsandbytes
0.50 runs NF4 on CPU; bf16 compute there is ~12x slower). Double quantization of the scales
saves ~0.4 bit per parameter (the paper's setting).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from attune.adapters.base import register
from attune.adapters.lora import LoraConfig, peft_lora_config, wrap
from attune.errors import AttuneError


class QLoraConfig(LoraConfig):
    type: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type (NF4 is the paper's)")
    double_quant: bool = Field(True, description="quantize the quantization constants too")


def load_kwargs(cfg: QLoraConfig) -> dict[str, Any]:
    from attune.bitsandbytes_gate import let_bitsandbytes_in

    try:
        let_bitsandbytes_in()
        import bitsandbytes  # noqa: F401
        import torch
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise AttuneError("qlora needs bitsandbytes: pip install 'attune-llm[qlora]'") from exc
    compute = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.quant_type,
            bnb_4bit_use_double_quant=cfg.double_quant,
            bnb_4bit_compute_dtype=compute,
        ),
        "device_map": {"": 0} if torch.cuda.is_available() else {"": "cpu"},
    }


def _apply(model, cfg: QLoraConfig):
    from peft import prepare_model_for_kbit_training

    if getattr(model, "quantization_method", None) is None and not getattr(model, "is_loaded_in_4bit", False):
        raise AttuneError("qlora: the base model was not loaded in 4-bit (load it with the shape's load_kwargs)")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    keep_trainable_layout(model)
    return wrap(model, peft_lora_config(cfg))


def keep_trainable_layout(model) -> None:
    """bitsandbytes 0.50, on a CPU with AVX512-BF16, repacks a 4-bit weight for a faster kernel at the
    layer's first eval-mode forward without gradients (validation, rollouts, generation). That kernel has
    no backward: every later training step silently passes no gradient through the layer to the LoRA
    layers below it (and it computes in bf16). Training keeps the layout that backpropagates."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


apply = register("qlora", QLoraConfig, load_kwargs=load_kwargs)(_apply)
