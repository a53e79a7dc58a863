"""Which of attune's fast paths may run on a model, read off its config and its modules.

It lives in `models/` because adapters read it too (`router_modules`: what `all-linear` must skip).

Three fast paths replace part of a model's own computation while training or scoring:
- packing: several examples in one row, separated only by position ids restarting at 0 (the
  model's own masking must see them as separate documents);
- per-example packed attention (`train/attention.py`) instead of the model's attention kernel;
- the chunked LM head (`train/logprobs.py`: fused head + cross-entropy, token log-probs) instead of
  the model's head, reading the final hidden states off the decoder body.

Each is exact only for the features it implements. A family the architecture matrix
(tests/test_arch_matrix.py) has proved takes every fast path that implements its features and
the model's own path for the rest; any other family takes the model's own path everywhere
(no packing, its own attention, its own logits) and says so once in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

log = logging.getLogger("attune.models")

# Families the matrix test proves, by `config.model_type`. Adding one: add its tiny config to
# tests/test_arch_matrix.py, run it, and list it here (and in docs/architectures.md).
COVERED = frozenset({
    "llama", "mistral", "ministral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi", "phi3",
    "gemma", "gemma2", "gemma3_text", "granite", "cohere", "cohere2", "olmo2", "olmo3", "gpt_neox", "stablelm",
    "smollm3", "glm4", "falcon", "starcoder2", "exaone4", "gpt_oss", "llama4_text",
})
# Covered families whose own masking does not separate packed examples by position ids:
# gpt_oss builds its masks without the position ids.
NO_PACKING = frozenset({"gpt_oss"})

_warned: set[str] = set()


@dataclass(frozen=True)
class Features:
    """What a model computes beyond a Llama-shaped decoder, as far as the fast paths care."""

    family: str
    covered: bool
    sliding_window: int | None = None  # some layers attend only to the last N tokens
    chunked_attention: int | None = None  # some layers attend only within fixed chunks (Llama 4)
    attention_softcap: float | None = None  # tanh soft-capping of attention scores (Gemma 2)
    sinks: bool = False  # a learned per-head sink logit in the attention softmax (gpt-oss)
    final_softcap: float | None = None  # logits = c * tanh(logits / c) (Gemma 2)
    logit_multiplier: float | None = None  # logits *= m (Cohere `logit_scale`; Granite 1 / `logits_scaling`)
    head_bias: bool = False  # the LM head adds a bias (Phi)


def unwrap(model: nn.Module, *, keep_peft: bool = False) -> nn.Module:
    """The transformers model under DDP/FSDP/accelerate wrappers, and under PEFT's unless `keep_peft`.

    Keep PEFT's wrapper to generate or to switch the adapter off; drop it to reach the decoder, heads and config.
    """
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    if not keep_peft and hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def router_modules(model: nn.Module) -> list[str]:
    """Qualified names of MoE routers and gates: the leaf children of a block that holds `experts`.

    `targets: all-linear` must adapt projections, never the routing decision (PEFT's all-linear
    picks Mixtral's, Qwen3-MoE's and Llama 4's routers).
    """
    names = []
    for block_name, block in unwrap(model).named_modules():
        if isinstance(getattr(block, "experts", None), nn.Module):
            names += [f"{block_name}.{n}" for n, child in block.named_children()
                      if n != "experts" and next(child.children(), None) is None]
    return names


def all_linear_targets(model: nn.Module) -> list[str]:
    """What `targets: all-linear` adapts: every linear projection but the LM head and MoE routers.

    PEFT's own "all-linear" also adapts a transformers-5 MoE router (`gate.weight`) and the fused
    expert tensors through `ParamWrapper`, which cannot serve mixed-adapter batches. Here the
    experts' fused tensors are left alone too; name them in `targets` to adapt them. Leaf names
    when they are unambiguous (the usual `q_proj`, ...), full names otherwise.
    """
    from transformers.pytorch_utils import Conv1D

    inner = unwrap(model)
    head = inner.get_output_embeddings()
    skip = set(router_modules(inner)) | {n for n, m in inner.named_modules() if m is head}
    picked = [n for n, m in inner.named_modules() if isinstance(m, (nn.Linear, Conv1D)) and n not in skip]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in picked})
    if any(n == leaf or n.endswith("." + leaf) for n in skip for leaf in leaves):
        return picked
    return leaves


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def features(model: nn.Module) -> Features:
    """The features of `model` (any wrapper: PEFT, DDP) that change attention or the head."""
    inner = unwrap(model)
    config = _text_config(inner.config)
    family = str(getattr(config, "model_type", type(inner).__name__))
    layer_types = list(getattr(config, "layer_types", None) or [])
    window = getattr(config, "sliding_window", None)
    slides = "sliding_attention" in layer_types or (
        window is not None and not layer_types and getattr(config, "use_sliding_window", True)
    )
    chunk = getattr(config, "attention_chunk_size", None)
    multiplier = None
    if getattr(config, "logits_scaling", None) not in (None, 1, 1.0):
        multiplier = 1.0 / float(config.logits_scaling)
    elif getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        multiplier = float(config.logit_scale)
    head = inner.get_output_embeddings()
    return Features(
        family=family,
        covered=family in COVERED,
        sliding_window=int(window) if slides and window else None,
        chunked_attention=int(chunk) if chunk and (not layer_types or "chunked_attention" in layer_types) else None,
        attention_softcap=getattr(config, "attn_logit_softcapping", None),
        sinks=any(isinstance(getattr(m, "sinks", None), nn.Parameter) for m in inner.modules()),
        final_softcap=getattr(config, "final_logit_softcapping", None),
        logit_multiplier=multiplier,
        head_bias=getattr(head, "bias", None) is not None,
    )


def _uncovered(f: Features) -> bool:
    if f.covered:
        return False
    if f.family not in _warned:
        _warned.add(f.family)
        log.warning(
            "architecture %r is not in attune's tested matrix: training it without packing, with the model's own "
            "attention and its own logits (exact, slower); see docs/architectures.md to add it", f.family,
        )
    return True


def is_prompt_learning(model: nn.Module) -> bool:
    """Prefix / prompt tuning add virtual tokens inside PEFT's forward (and `generate`): no packing for
    them in training, and no shared KV cache stepped outside PEFT in generation (`models/engine.py`)."""
    config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", "default"))
    return bool(getattr(config, "is_prompt_learning", False))


def packing_ok(model: nn.Module) -> bool:
    """Whether packed rows (position ids restarting per example) give the model's own per-example maths."""
    f = features(model)
    return not _uncovered(f) and f.family not in NO_PACKING


def packed_attention_ok(model: nn.Module) -> bool:
    """Whether `train/attention.py` computes this model's attention exactly (it implements sliding windows)."""
    f = features(model)
    return not _uncovered(f) and f.attention_softcap is None and not f.sinks and f.chunked_attention is None


def chunked_head_ok(model: nn.Module) -> bool:
    """Whether the chunked head on the decoder body's hidden states gives the model's own logits.

    The head path implements a head bias, a logit multiplier and final soft-capping; a family
    outside the matrix gets the model's own forward instead.
    """
    return not _uncovered(features(model))
