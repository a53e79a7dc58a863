"""Bottleneck adapters between frozen blocks: Houlsby et al. 2019 and Pfeiffer et al. 2021.

Each adapter is down-projection -> nonlinearity -> up-projection, added to a sub-layer's output
(a residual, with the up-projection initialised to zero so training starts from the base model).
Houlsby places one after attention and one after the MLP of every block; Pfeiffer only after
the MLP. Why our own module: the maintained library for this (AdapterHub `adapters`) pins
transformers 4.x and does not install beside transformers 5; PEFT has no bottleneck adapters.
The adapters are attached with forward hooks, so any decoder whose blocks expose `self_attn`
and `mlp` works, and saved as two small files (config + safetensors), not as a whole model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from attune.adapters.base import AdapterConfig, register
from attune.errors import AttuneError

if TYPE_CHECKING:
    from torch import nn

CONFIG_FILE = "bottleneck_config.json"
WEIGHTS_FILE = "bottleneck.safetensors"
PREFIX = "attune_bottleneck_"


class BottleneckConfig(AdapterConfig):
    type: Literal["bottleneck"] = "bottleneck"
    variant: Literal["houlsby", "pfeiffer"] = Field("pfeiffer", description="after attention and MLP, or after MLP only")
    reduction: int = Field(16, gt=0, description="hidden size / bottleneck size (the papers use 16)")
    activation: Literal["relu", "gelu", "silu"] = "relu"


def _blocks(model: nn.Module) -> list[nn.Module]:
    blocks = [m for m in model.modules() if hasattr(m, "self_attn") and hasattr(m, "mlp")]
    if not blocks:
        raise AttuneError("bottleneck adapters need decoder blocks with `self_attn` and `mlp` sub-modules")
    return blocks


def attach(model: nn.Module, cfg: BottleneckConfig) -> nn.Module:
    from attune.adapters.bottleneck_layer import Bottleneck, residual_hook

    hidden = model.config.hidden_size
    size = max(1, hidden // cfg.reduction)
    places = ("self_attn", "mlp") if cfg.variant == "houlsby" else ("mlp",)
    for block in _blocks(model):
        for place in places:
            adapter = Bottleneck(hidden, size, cfg.activation).to(next(block.parameters()).device)
            block.add_module(PREFIX + place, adapter)
            getattr(block, place).register_forward_hook(residual_hook(adapter))
    model.attune_bottleneck_config = cfg
    return model


def apply(model: nn.Module, cfg: BottleneckConfig) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    attach(model, cfg)
    for name, p in model.named_parameters():
        p.requires_grad_(PREFIX in name)
    return model


def save_bottleneck(model: nn.Module, out_dir: Path) -> None:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if PREFIX in n}
    save_file(weights, str(out_dir / WEIGHTS_FILE))
    (out_dir / CONFIG_FILE).write_text(model.attune_bottleneck_config.model_dump_json(indent=2))


def load_bottleneck(model: nn.Module, adapter_dir: Path) -> nn.Module:
    """Attach saved bottleneck adapters to a freshly loaded base model (inference)."""
    from safetensors.torch import load_file

    cfg = BottleneckConfig.model_validate(json.loads((Path(adapter_dir) / CONFIG_FILE).read_text()))
    attach(model, cfg)
    weights = load_file(str(Path(adapter_dir) / WEIGHTS_FILE))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or any(PREFIX in k for k in missing):
        raise AttuneError(f"bottleneck adapter {adapter_dir} does not fit this model")
    return model


register("bottleneck", BottleneckConfig, uses_peft=False, save=lambda model, out: save_bottleneck(model, out))(apply)
