"""Adaptation shapes: one module each, registered by name (see `base.py` for the seam)."""

# Importing a shape module registers it.
from attune.adapters import bottleneck, dora, freeze, full, ia3, lora, prefix, prompt, qlora  # noqa: E402,F401
from attune.adapters.base import (
    REGISTRY,
    AdapterConfig,
    AdapterShape,
    apply_adapter,
    count_parameters,
    parse_adapter,
    register,
    shape,
    shape_of_dir,
)

__all__ = [
    "REGISTRY",
    "AdapterConfig",
    "AdapterShape",
    "apply_adapter",
    "count_parameters",
    "parse_adapter",
    "register",
    "shape",
    "shape_of_dir",
]
