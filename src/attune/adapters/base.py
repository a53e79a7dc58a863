"""The adapter-shape seam: a pydantic config plus `apply(model, cfg) -> model`, registered by name.

A new shape is one module in this package that defines a config subclass and decorates its
`apply` with `@register` (giving `save` / `load` / `merge` only when PEFT's do not fit), plus its
name in the import line of `adapters/__init__.py`; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from attune.config import StrictModel
from attune.errors import AttuneError, unknown

if TYPE_CHECKING:
    from torch import nn


class AdapterConfig(StrictModel):
    """Common fields of every adapter shape. `type` selects the shape."""

    type: str


ApplyFn = Callable[[Any, Any], Any]


def no_load_kwargs(cfg: AdapterConfig) -> dict[str, Any]:
    return {}


def save_pretrained(model: nn.Module, out_dir: Path) -> None:
    """PEFT adapters (adapter_config.json + adapter_model.safetensors) or full weights, as transformers writes them."""
    model.save_pretrained(str(out_dir), safe_serialization=True)


def load_peft(model: nn.Module, path: Path, name: str = "default", trainable: bool = False) -> nn.Module:
    """Wrap `model` with the PEFT adapter at `path` (or add it as `name` to an existing PeftModel)."""
    from peft import PeftModel

    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(path), adapter_name=name, is_trainable=trainable)
            return model
        return PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=trainable)
    except RuntimeError as exc:
        if "size mismatch" in str(exc):
            raise AttuneError(f"adapter {path} does not fit this base model (tensor shapes differ)") from exc
        raise


def merge_peft(model: nn.Module) -> nn.Module:
    """Fold a PEFT adapter into the base weights: a plain transformers model with the same function."""
    return model.merge_and_unload()


@dataclass(frozen=True)
class AdapterShape:
    """One adaptation shape: its config, how it is applied, and how its result is saved, loaded and merged.

    Training, export, chaining and serving call these and never ask which shape they hold.
    """

    name: str
    config: type[AdapterConfig]
    apply: ApplyFn
    output: Literal["adapter", "model"] = "adapter"
    """adapter/: a small adapter read back onto its base with `load`; model/: the whole model (full, freeze)."""
    marker: str = "adapter_config.json"
    """The file that identifies this shape's adapter directory."""
    weights: str = "adapter_model.*"
    """Glob of the adapter's weight files (a directory without them is refused)."""
    load_kwargs: Callable[[Any], dict[str, Any]] = no_load_kwargs
    """Extra `from_pretrained` kwargs the base needs at load time (QLoRA's 4-bit quantization)."""
    save: Callable[[Any, Path], None] = save_pretrained
    load: Callable[..., Any] = load_peft
    """`load(base_model, adapter_dir, name="default", trainable=False)` -> the model with the adapter on."""
    merge: Callable[[Any], Any] | None = merge_peft
    """base+adapter -> a plain transformers model computing the same function; None when that cannot exist."""

    def merged(self, model: nn.Module) -> nn.Module:
        if self.merge is None:
            raise AttuneError(f"{self.name} adapters cannot be merged into the base weights: {_WHY_NO_MERGE.get(self.name, '')}")
        return self.merge(model)


_WHY_NO_MERGE = {
    "prefix": "the prefix is extra key/value vectors, not a change of any weight",
    "prompt": "the soft prompt is extra input embeddings, not a change of any weight",
    "bottleneck": "each adapter is a nonlinear residual block, which no weight of the base model can express",
}

REGISTRY: dict[str, AdapterShape] = {}


def register(name: str, config: type[AdapterConfig], **behaviour: Any) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator: register `apply` as the adapter shape `name` with its config class.

    `behaviour` overrides `AdapterShape`'s defaults (PEFT format, mergeable): `output`, `marker`,
    `weights`, `load_kwargs`, `save`, `load`, `merge`.
    """

    def wrap(fn: ApplyFn) -> ApplyFn:
        REGISTRY[name] = AdapterShape(name, config, fn, **behaviour)
        return fn

    return wrap


def shape_of_dir(path: Path) -> AdapterShape:
    """The shape whose adapter directory `path` is (by its marker file), or a clear error."""
    for s in REGISTRY.values():
        if s.output == "adapter" and (Path(path) / s.marker).is_file():
            return s
    raise AttuneError(f"{path}: not an adapter directory (no adapter_config.json)")


def shape(name: str) -> AdapterShape:
    if name not in REGISTRY:
        raise unknown("adapter type", name, REGISTRY)
    return REGISTRY[name]


def parse_adapter(data: dict[str, Any] | AdapterConfig) -> AdapterConfig:
    """Validate a raw adapter mapping into its shape's config class."""
    if isinstance(data, AdapterConfig):
        return data
    if not isinstance(data, dict) or "type" not in data:
        raise AttuneError("adapter: expected a mapping with a 'type' (e.g. {type: lora, r: 16})")
    return shape(str(data["type"])).config.model_validate(data)


def apply_adapter(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    """Apply the configured shape to `model`; returns the model to train."""
    return shape(cfg.type).apply(model, cfg)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel()
        # bitsandbytes 4-bit params store two values per byte
        if p.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
