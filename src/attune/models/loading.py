"""Load a model reference into a (model, tokenizer) pair ready to train or generate.

Everything that needs weights goes through `load_model`; everything that only needs text
generation goes through `models.generation.load_generator`, which also accepts API-only models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attune.errors import AttuneError
from attune.models.builtin import builtin_gguf, dequantized_dir
from attune.models.reference import ModelRef, parse_model_ref

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LoadedModel:
    """A model with its tokenizer and the reference it came from (for provenance)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    ref: ModelRef
    source: str

    @property
    def name(self) -> str:
        return self.ref.raw


def as_ref(ref: str | ModelRef) -> ModelRef:
    return ref if isinstance(ref, ModelRef) else parse_model_ref(ref)


def model_source(ref: str | ModelRef) -> str:
    """A directory or hub id that `from_pretrained` can read for this reference."""
    ref = as_ref(ref)
    if ref.kind == "openai":
        raise AttuneError(
            f"model {ref.raw!r} is API-only: it can be prompted, evaluated and used as a teacher, "
            "but not trained or loaded as weights. Use an open-weights model for training stages."
        )
    if ref.kind == "builtin":
        return str(dequantized_dir(builtin_gguf(ref.name), ref.name))
    if ref.kind == "gguf":
        assert ref.path is not None
        return str(dequantized_dir(ref.path, ref.path.stem))
    if ref.kind == "local":
        return str(ref.path)
    return ref.raw


def _hub_error(ref: ModelRef, exc: Exception) -> AttuneError:
    return AttuneError(
        f"could not load {ref.raw!r} from the Hugging Face hub ({type(exc).__name__}). Without network, "
        "download it on a connected machine (`huggingface-cli download "
        f"{ref.raw} --local-dir DIR`) and pass the directory instead, or use builtin:smollm2-135m-instruct."
    )


def load_tokenizer(ref: str | ModelRef) -> PreTrainedTokenizerBase:
    """The tokenizer (with chat template) of a model reference."""
    from transformers import AutoTokenizer

    ref = as_ref(ref)
    source = model_source(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        if ref.kind == "hub":
            raise _hub_error(ref, exc) from exc
        raise
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def default_dtype(device: str | torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are ~400x slower there), bf16 on GPUs that support it."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_model(
    ref: str | ModelRef,
    *,
    dtype: torch.dtype | None = None,
    device: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load weights and tokenizer. `model_kwargs` go to `from_pretrained` (e.g. a quantization config)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar on every load is noise next to attune's own progress
    ref = as_ref(ref)
    source = model_source(ref)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = dict(model_kwargs or {})
    kwargs.setdefault("dtype", dtype or default_dtype(device))
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        if ref.kind == "hub":
            raise _hub_error(ref, exc) from exc
        raise
    if "quantization_config" not in kwargs and "device_map" not in kwargs:
        model.to(device)
    tokenizer = load_tokenizer(ref)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, ref, source)


def model_dir(ref: str | ModelRef) -> Path:
    """A local directory holding config.json for a reference (builds the builtin cache if needed)."""
    source = model_source(ref)
    path = Path(source)
    if not path.is_dir():
        raise AttuneError(f"{source!r} is not a local directory")
    return path
