"""Adaptation shapes: one module each, registered by name (see `base.py` for the seam)."""

from attune.adapters.base import (
    REGISTRY,
    AdapterConfig,
    AdapterShape,
    apply_adapter,
    count_parameters,
    parse_adapter,
    register,
    shape,
)

# Importing a shape module registers it.
from attune.adapters import lora  # noqa: E402,F401

__all__ = [
    "REGISTRY",
    "AdapterConfig",
    "AdapterShape",
    "apply_adapter",
    "count_parameters",
    "parse_adapter",
    "register",
    "shape",
]
