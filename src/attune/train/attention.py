"""Causal attention per packed example, instead of SDPA over a dense block-diagonal mask.

With packed rows transformers builds a (T x T) block-diagonal mask and SDPA falls back to a
kernel that computes every masked-out block (`benchmarks/packed_attention.py`: 57 tok/s for
3x1024 packed rows vs 74 tok/s for the same tokens unpacked). Here each packed example runs
SDPA with `is_causal=True` (the flash kernel, no mask tensor), and no mask is built.
Registered with transformers' AttentionInterface and switched on by the loop only while it
trains packed rows (no padding mask, position ids restarting per example).

Sliding-window layers (Mistral, Qwen2, Starcoder2, Gemma 3...) get the window the model passes
(`sliding_window=N`: a query sees the N most recent keys, itself included) as a banded mask on
examples longer than N. Attention soft-capping, sinks and chunked attention are not implemented:
`models/architecture.py` keeps such models on their own attention, and a call carrying them fails loudly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

NAME = "attune_packed"


def _segment_lengths(positions: torch.Tensor, rows: int) -> list[int]:
    """Lengths of the packed examples over all rows laid end to end (B*T tokens)."""
    positions = positions.expand(rows, -1)
    starts = positions == 0
    starts[:, 0] = True  # a row always starts a segment, even if it does not start at position 0
    at = starts.flatten().nonzero().flatten()
    return torch.diff(at, append=at.new_tensor([positions.numel()])).tolist()


def packed_causal_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """(B, H, T, D) query/key/value -> (B, T, H, D), attending only within each packed example.

    The rows are flattened to (B*T, H, D) and split into examples with `split` (a view per
    example; its backward is one `cat`), never sliced per example: the backward of a slice
    allocates and zero-fills a full-size gradient per example, which cost more than the
    attention itself. Grouped-query heads are shared through SDPA's `enable_gqa`, not copied.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    if attention_mask is not None or position_ids is None or query.shape[2] != position_ids.shape[-1]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    for name in ("softcap", "s_aux", "sinks", "attention_chunk_size"):
        if kwargs.get(name) is not None:
            raise RuntimeError(f"attune's packed attention does not implement {name}; models/architecture.py should have kept it off")
    B, H, T, D = query.shape
    lengths = _segment_lengths(position_ids, B)
    p = dropout if module.training else 0.0
    # the window arrives as an argument (Mistral, Gemma 3) or lives only on the module and in the mask (Qwen2-MoE)
    window = kwargs["sliding_window"] if "sliding_window" in kwargs else getattr(module, "sliding_window", None)

    def pieces(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # (B, h, T, D) -> (B*T, h, D), a view when the projection wrote (B, T, h, D) as transformers does
        return x.transpose(1, 2).reshape(B * T, x.shape[1], D).split(lengths)

    out = [
        F.scaled_dot_product_attention(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
            attn_mask=_band(q.shape[0], window, q.device), is_causal=window is None or q.shape[0] <= window,
            scale=scaling, dropout_p=p, enable_gqa=key.shape[1] != H,
        )[0].transpose(0, 1)  # (L, H, D)
        for q, k, v in zip(pieces(query), pieces(key), pieces(value))
    ]
    return torch.cat(out).view(B, T, H, D), None


def _band(length: int, window: int | None, device: torch.device) -> torch.Tensor | None:
    """(L, L) boolean mask: key j visible to query i iff i - window < j <= i; None when plain causal covers it."""
    if window is None or length <= window:
        return None
    i = torch.arange(length, device=device)
    offset = i[:, None] - i[None, :]
    return (offset >= 0) & (offset < window)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_causal_attention)
    AttentionMaskInterface.register(NAME, lambda *args, **kwargs: None)  # the segments are the mask


@contextmanager
def packed_attention(model: nn.Module) -> Iterator[None]:
    """Use per-example causal attention inside the block; restore the model's own afterwards.

    A model whose attention this does not implement (`arch.packed_attention_ok`) keeps its own.
    """
    from attune.models.architecture import packed_attention_ok
    from attune.train.logprobs import unwrap

    inner = unwrap(model)
    config = inner.config
    previous = getattr(config, "_attn_implementation", None)
    if previous not in ("sdpa", "eager", None) or not packed_attention_ok(inner):
        yield  # flash-attention and other kernels already handle packed position ids
        return
    _register()
    inner.set_attn_implementation(NAME)
    try:
        yield
    finally:
        inner.set_attn_implementation(previous or "sdpa")
