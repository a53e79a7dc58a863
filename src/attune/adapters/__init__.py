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
