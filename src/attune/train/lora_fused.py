"""A plain LoRA linear layer as one autograd function, used by the loop while it trains.

PEFT computes `base(x) + lora_B(lora_A(dropout(x))) * scaling` as five autograd nodes: two
full-size (tokens x out) intermediates in forward (the LoRA product and its scaled copy), one
more in backward (the scaled gradient), and autograd sums the two gradients of `x`. Here the
LoRA product is accumulated into the base output in place (`addmm_`) and the gradient of `x`
into the base gradient, so each layer writes its (tokens x out) output once and its (tokens x in)
input gradient once. The maths is PEFT's (tests compare outputs and gradients with PEFT's forward).

Only the common case takes this path: one active plain-LoRA adapter (no DoRA or other variant),
dropout 0, an unmerged frozen `nn.Linear` base, no autocast. Anything else (disabled adapters
for a reference model, mixed adapter batches, quantized bases) runs PEFT's own forward.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class _LoraLinear(torch.autograd.Function):
    """y = x W^T + b + s (x A^T) B^T with W, b frozen; saves x and x A^T (as PEFT's graph does)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float):  # type: ignore[override]
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        xa = x2 @ lora_a.t()  # (N, r)
        # written through a 2-D view of the final tensor: an output that is itself a view may not be
        # modified in place by the caller (Llama 4 does), and a copy would cost a full-size tensor
        out = x2.new_empty(*x.shape[:-1], weight.shape[0])
        flat = out.view(-1, weight.shape[0])  # (N, out)
        if bias is None:
            torch.mm(x2, weight.t(), out=flat)
        else:
            torch.addmm(bias, x2, weight.t(), out=flat)
        flat.addmm_(xa, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(x2, xa, weight, lora_a, lora_b)
        ctx.scaling = scaling
        ctx.in_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x2, xa, weight, lora_a, lora_b = ctx.saved_tensors
        g = grad_out.reshape(-1, grad_out.shape[-1])  # (N, out)
        need_x, _, _, need_a, need_b, _ = ctx.needs_input_grad
        grad_x = grad_a = grad_b = None
        if need_b:
            grad_b = (g.t() @ xa).mul_(ctx.scaling)  # (out, r)
        if need_x or need_a:
            g_xa = (g @ lora_b).mul_(ctx.scaling)  # (N, r)
            if need_a:
                grad_a = g_xa.t() @ x2  # (r, in)
            if need_x:
                grad_x = (g @ weight).addmm_(g_xa, lora_a).view(ctx.in_shape)
        return grad_x, None, None, grad_a, grad_b, None


def _fusable(module: nn.Module) -> bool:
    """Whether this PEFT LoRA layer's forward is exactly the plain LoRA maths computed above."""
    from peft.tuners.lora.layer import Linear

    if type(module) is not Linear or type(module.get_base_layer()) is not nn.Linear:
        return False
    base = module.get_base_layer()
    if hasattr(base.weight, "ds_id"):  # ZeRO-3 gathers weights in each submodule's own forward
        return False
    return not base.weight.requires_grad and (base.bias is None or not base.bias.requires_grad)


def _fused_forward(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    active = [a for a in self.active_adapters if a in self.lora_A]
    if args or kwargs or self.disable_adapters or self.merged or len(active) != 1 or torch.is_autocast_enabled(x.device.type):
        return type(self).forward(self, x, *args, **kwargs)
    name = active[0]
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    base = self.get_base_layer()
    if name in self.lora_variant or not isinstance(self.lora_dropout[name], nn.Identity) or not (
        x.dtype == base.weight.dtype == a.dtype == b.dtype
    ):
        return type(self).forward(self, x, *args, **kwargs)
    return _LoraLinear.apply(x, base.weight, base.bias, a, b, float(self.scaling[name]))


@contextmanager
def fused_lora(model: nn.Module) -> Iterator[int]:
    """Route every fusable LoRA linear layer of `model` through `_LoraLinear`; yields how many."""
    layers = [m for m in model.modules() if _fusable(m)]
    for m in layers:
        m.forward = types.MethodType(_fused_forward, m)
    try:
        yield len(layers)
    finally:
        for m in layers:
            del m.forward
