"""Make a small student from a big model: keep some of its decoder layers.

A truncated copy keeps the teacher's embeddings, tokenizer and final norm, so logit-level
distillation works out of the box (same vocabulary) and the student starts far better than a
random initialisation (the DistilBERT recipe, Sanh et al. 2019, which keeps every other layer).
"""

from __future__ import annotations

import copy

from torch import nn

from attune.errors import AttuneError


def truncate_layers(model: nn.Module, n: int, pick: str = "spread") -> nn.Module:
    """A copy of a decoder-only transformers model with `n` of its layers.

    `pick="spread"` keeps evenly spaced layers (first and last included); `"first"` keeps the
    first n. The config's `num_hidden_layers` (and per-layer lists like `layer_types`) follow.
    """
    layers = model.get_decoder().layers
    total = len(layers)
    if not 0 < n <= total:
        raise AttuneError(f"truncate_layers: n must be between 1 and {total} (the model's layer count), got {n}")
    if pick == "first":
        keep = list(range(n))
    elif pick == "spread":
        keep = [round(i * (total - 1) / max(n - 1, 1)) for i in range(n)] if n > 1 else [0]
    else:
        raise AttuneError(f"truncate_layers: pick must be 'spread' or 'first', got {pick!r}")
    student = copy.deepcopy(model)
    decoder = student.get_decoder()
    decoder.layers = nn.ModuleList([decoder.layers[i] for i in keep])
    for new_idx, layer in enumerate(decoder.layers):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx  # the KV cache is indexed by layer
    config = student.config
    config.num_hidden_layers = n
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    return student
