"""The adapter-shape seam: a pydantic config plus `apply(model, cfg) -> model`, registered by name.

A new shape is one module in this package that defines a config subclass and decorates its
`apply` with `@register`. Shapes are imported by `adapters/__init__.py`; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from attune.config import StrictModel
from attune.errors import AttuneError, unknown

if TYPE_CHECKING:
    from torch import nn


class AdapterConfig(StrictModel):
    """Common fields of every adapter shape. `type` selects the shape."""

    type: str


ApplyFn = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class AdapterShape:
    name: str
    config: type[AdapterConfig]
    apply: ApplyFn
    uses_peft: bool
    """True when the result is a PeftModel saved in PEFT format (loadable by plain PEFT)."""
    load_kwargs: Callable[[Any], dict[str, Any]] | None = None
    """Extra `from_pretrained` kwargs the shape needs at load time (QLoRA's 4-bit quantization)."""
    save: Callable[[Any, Any], None] | None = None
    """Custom writer for shapes with their own small file format (bottleneck adapters)."""


REGISTRY: dict[str, AdapterShape] = {}


def register(
    name: str,
    config: type[AdapterConfig],
    uses_peft: bool = True,
    load_kwargs: Callable[[Any], dict[str, Any]] | None = None,
    save: Callable[[Any, Any], None] | None = None,
) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator: register `apply` as the adapter shape `name` with its config class."""

    def wrap(fn: ApplyFn) -> ApplyFn:
        REGISTRY[name] = AdapterShape(name, config, fn, uses_peft, load_kwargs, save)
        return fn

    return wrap


def shape(name: str) -> AdapterShape:
    if name not in REGISTRY:
        raise unknown("adapter type", name, REGISTRY)
    return REGISTRY[name]


def parse_adapter(data: dict[str, Any] | AdapterConfig) -> AdapterConfig:
    """Validate a raw adapter mapping into its shape's config class."""
    if isinstance(data, AdapterConfig):
        return data
    if not isinstance(data, dict) or "type" not in data:
        raise AttuneError("adapter: expected a mapping with a 'type' (e.g. {type: lora, r: 16})")
    return shape(str(data["type"])).config.model_validate(data)


def apply_adapter(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    """Apply the configured shape to `model`; returns the model to train."""
    return shape(cfg.type).apply(model, cfg)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        # bitsandbytes 4-bit params store two values per byte
        if p.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
