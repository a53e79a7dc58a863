"""The bottleneck adapter module and the forward hook that adds it to a sub-layer's output.

Kept apart from `bottleneck.py` so reading a recipe (the shape's config) never imports torch.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """down-projection -> nonlinearity -> up-projection, added as a residual; starts as the identity."""

    def __init__(self, hidden: int, size: int, activation: str) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        self.act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "silu": nn.SiLU()}[activation]
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return h + self.up(self.act(self.down(h)))


def residual_hook(adapter: Bottleneck):
    """A forward hook that passes the sub-layer's output (or its first element) through `adapter`."""

    def add(_module: nn.Module, _args: object, output: object):
        if isinstance(output, tuple):
            return (adapter(output[0]), *output[1:])
        return adapter(output)

    return add
