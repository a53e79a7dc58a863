"""Make a small student from a big model: keep some of its decoder layers, or a random model of that shape.

A truncated copy keeps the teacher's embeddings, tokenizer and final norm, so logit-level
distillation works out of the box (same vocabulary) and the student starts far better than a
random initialisation (the DistilBERT recipe, Sanh et al. 2019, which keeps every other layer).
`random_student` is that baseline: same architecture and vocabulary, fresh weights.
"""

from __future__ import annotations

import copy

from torch import nn

from attune.errors import AttuneError


def _check_layers(model: nn.Module, n: int) -> int:
    total = len(model.get_decoder().layers)
    if not 0 < n <= total:
        raise AttuneError(f"truncate_layers: n must be between 1 and {total} (the model's layer count), got {n}")
    return total


def _spread(total: int, n: int) -> list[int]:
    """n evenly spaced layer indices out of `total`, first and last included."""
    return [round(i * (total - 1) / max(n - 1, 1)) for i in range(n)] if n > 1 else [0]


def _shrink_config(config, keep: list[int]):
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    return config


def random_student(model: nn.Module, n: int) -> nn.Module:
    """A freshly initialised model with `model`'s architecture and vocabulary but `n` layers."""
    import torch

    keep = _spread(_check_layers(model, n), n)
    config = _shrink_config(copy.deepcopy(model.config), keep)
    param = next(model.parameters())
    with torch.device(param.device):
        student = type(model)(config)
    return student.to(param.dtype)


def truncate_layers(model: nn.Module, n: int, pick: str = "spread") -> nn.Module:
    """A copy of a decoder-only transformers model with `n` of its layers.

    `pick="spread"` keeps evenly spaced layers (first and last included); `"first"` keeps the
    first n. The config's `num_hidden_layers` (and per-layer lists like `layer_types`) follow.
    """
    total = _check_layers(model, n)
    if pick == "first":
        keep = list(range(n))
    elif pick == "spread":
        keep = _spread(total, n)
    else:
        raise AttuneError(f"truncate_layers: pick must be 'spread' or 'first', got {pick!r}")
    student = copy.deepcopy(model)
    decoder = student.get_decoder()
    decoder.layers = nn.ModuleList([decoder.layers[i] for i in keep])
    for new_idx, layer in enumerate(decoder.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx  # the KV cache is indexed by layer
    _shrink_config(student.config, keep)
    return student
