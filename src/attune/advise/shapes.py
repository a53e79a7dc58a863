"""A model's shape (parameters, layers, hidden size, vocabulary) read from its config.

The cost model needs exact counts, so the config is instantiated on PyTorch's `meta` device
(no memory, no weights) and the parameters and linear layers are counted from the modules
themselves: that is exact for every architecture transformers knows, where a hand formula
would be exact only for the one it was written for.

A model can be named by reference (`builtin:NAME`, a local dir, a hub id found in the local HF
cache) or only by size (`7b`): then the nearest of a few well-known open configurations stands
in for it; their values are copied from each model's published config.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from attune.errors import AttuneError


@dataclass(frozen=True)
class ModelShape:
    """What the cost formulas read from a model."""

    name: str
    params: int  # all parameters, tied embeddings counted once
    embedding_params: int  # the input embedding table
    head_params: int  # an untied LM head; 0 when tied to the embeddings
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_dim: int  # key/value width (heads_kv x head_dim); < hidden with grouped-query attention
    vocab: int
    block_linears: tuple[tuple[int, int], ...]  # (in, out) of every linear layer in one decoder block

    @property
    def linear_params(self) -> int:
        """Weights of the decoder blocks' linear layers: what LoRA adapts and QLoRA quantizes."""
        return self.layers * sum(i * o for i, o in self.block_linears)

    @property
    def compute_params(self) -> int:
        """Parameters that cost matmul FLOPs per token: all but the embedding lookup, plus the LM head."""
        return self.params - self.embedding_params + (self.head_params or self.vocab * self.hidden)

    def lora_params(self, r: int) -> int:
        """Trainable parameters of LoRA rank `r` on every linear layer of every block (`all-linear`)."""
        return self.layers * sum(r * (i + o) for i, o in self.block_linears)

    def describe(self) -> str:
        return (f"{self.name}: {self.params / 1e6:,.0f}M parameters, {self.layers} layers, hidden {self.hidden}, "
                f"vocab {self.vocab:,}")


# Published config.json values (hidden, layers, intermediate, heads, kv heads, vocab, tied).
KNOWN: dict[str, dict[str, Any]] = {
    "smollm2-360m": dict(model_type="llama", hidden_size=960, num_hidden_layers=32, intermediate_size=2560,
                         num_attention_heads=15, num_key_value_heads=5, vocab_size=49152, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, num_hidden_layers=24, intermediate_size=4864,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, intermediate_size=8192,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, intermediate_size=8960,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "llama-3.2-3b": dict(model_type="llama", hidden_size=3072, num_hidden_layers=28, intermediate_size=8192,
                         num_attention_heads=24, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, num_hidden_layers=32, intermediate_size=14336,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False),
    "llama-3.1-8b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32, intermediate_size=14336,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    "qwen2.5-14b": dict(model_type="qwen2", hidden_size=5120, num_hidden_layers=48, intermediate_size=13824,
                        num_attention_heads=40, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False),
    "qwen2.5-32b": dict(model_type="qwen2", hidden_size=5120, num_hidden_layers=64, intermediate_size=27648,
                        num_attention_heads=40, num_key_value_heads=8, vocab_size=152064, tie_word_embeddings=False),
    "llama-3.1-70b": dict(model_type="llama", hidden_size=8192, num_hidden_layers=80, intermediate_size=28672,
                          num_attention_heads=64, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}


def parse_size(text: str) -> float:
    """'7b', '1.5B', '135m' -> parameter count."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mMbB])\s*", str(text))
    if not m:
        raise AttuneError(f"model_size {text!r}: expected a number with M or B, e.g. 135m, 1.5b, 7b")
    return float(m.group(1)) * (1e6 if m.group(2).lower() == "m" else 1e9)


def shape_from_config(config: Any, name: str) -> ModelShape:
    """Count parameters and linear layers of `config` on the meta device (no memory used)."""
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    untied = head is not None and head.weight is not emb
    blocks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == config.num_hidden_layers]
    if not blocks:
        raise AttuneError(f"{name}: cannot find the decoder blocks of a {type(model).__name__}")
    linears = tuple((m.in_features, m.out_features) for m in blocks[0][0].modules() if isinstance(m, nn.Linear))
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return ModelShape(
        name=name, params=params, embedding_params=emb.numel(), head_params=head.weight.numel() if untied else 0,
        layers=config.num_hidden_layers, hidden=config.hidden_size, intermediate=config.intermediate_size,
        heads=heads, kv_dim=kv_heads * head_dim, vocab=config.vocab_size, block_linears=linears,
    )


@lru_cache(maxsize=32)
def _known_shape(key: str) -> ModelShape:
    from transformers import AutoConfig

    spec = dict(KNOWN[key])
    return shape_from_config(AutoConfig.for_model(spec.pop("model_type"), **spec), key)


@lru_cache(maxsize=32)
def _shape_from_dir(path: str, name: str) -> ModelShape:
    from transformers import AutoConfig

    return shape_from_config(AutoConfig.from_pretrained(path), name)


def _known_by_name(ref: str) -> str | None:
    flat = re.sub(r"[^a-z0-9.]", "", ref.lower().split("/")[-1])
    for key in KNOWN:
        if re.sub(r"[^a-z0-9.]", "", key) in flat:
            return key
    return None


def nearest_known(size: float) -> ModelShape:
    """The known configuration whose parameter count is closest (in ratio) to `size`."""
    import math

    key = min(KNOWN, key=lambda k: abs(math.log(_known_shape(k).params / size)))
    return _known_shape(key)


def truncated(shape: ModelShape, layers: int) -> ModelShape:
    """The same model keeping its first `layers` blocks (a distillation student, `distill`'s `student_layers`)."""
    from dataclasses import replace

    per_layer = (shape.params - shape.embedding_params - shape.head_params - shape.hidden) // shape.layers  # - final norm
    return replace(shape, name=f"{shape.name} truncated to {layers} layers", layers=layers,
                   params=shape.params - (shape.layers - layers) * per_layer)


def smaller_student(teacher: ModelShape) -> ModelShape:
    """A default student ~1/10 of the teacher: the nearest smaller known model, else the teacher cut to 2/5 of its layers."""
    import math

    smaller = [k for k in KNOWN if _known_shape(k).params <= teacher.params / 2]
    if smaller:
        return _known_shape(min(smaller, key=lambda k: abs(math.log(_known_shape(k).params / (teacher.params / 10)))))
    return truncated(teacher, max(1, round(teacher.layers * 0.4)))


def resolve_shape(model: str | None, size: str | None) -> ModelShape | None:
    """The shape of `model` (read from its config), else of the known model nearest `size`; None if neither."""
    if model:
        from attune.models import parse_model_ref

        ref = parse_model_ref(model)
        if ref.kind == "openai":
            return nearest_known(parse_size(size)) if size else None
        if ref.kind != "hub":
            from attune.models.loading import model_dir

            return _shape_from_dir(str(model_dir(ref)), ref.raw)
        try:
            return _shape_from_dir(ref.raw, ref.raw)  # the local HF cache, offline
        except (OSError, ValueError, json.JSONDecodeError):
            key = _known_by_name(ref.raw)
            if key:
                return _known_shape(key)
            if size:
                return nearest_known(parse_size(size))
            raise AttuneError(
                f"model {model!r}: its config is not in the local Hugging Face cache and it is not one of the known "
                f"configurations ({', '.join(KNOWN)}); pass a local model directory, or give `model_size` (e.g. 7b)"
            ) from None
    return nearest_known(parse_size(size)) if size else None
