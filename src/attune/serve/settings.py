"""Everything `attune serve` is configured with, typed; the CLI and the tests build one of these."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from attune.config import StrictModel

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServeSettings(StrictModel):
    """Server configuration. Limits are per request unless said otherwise."""

    model: str
    """The base model reference (builtin:NAME, a directory, a .gguf file, a hub id)."""
    served_model_name: list[str] = Field(default_factory=list)
    """The names clients send as `model` for the base (vLLM's `--served-model-name`); the first is the
    canonical one. Default: the `model` reference exactly as given, plus its short alias (last path part)."""
    adapters: dict[str, str] = Field(default_factory=dict)
    """Adapters served from the start: name -> PEFT adapter directory."""
    describe: dict[str, str] = Field(default_factory=dict)
    """Router profiles: adapter name -> a description, or `@path` to its training data."""
    routes: dict[str, list[str]] = Field(default_factory=dict)
    """`route:NAME` -> the adapters it chooses between."""
    rag: dict[str, str] = Field(default_factory=dict)
    """`rag:NAME` -> a RAG index directory (built with `attune rag index`)."""
    rag_k: int = Field(4, ge=1)
    """Passages retrieved per `rag:` question."""
    backend: Literal["transformers", "vllm"] = "transformers"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list)
    """Bearer tokens accepted. None configured is allowed only on a loopback host."""
    admin_keys: list[str] = Field(default_factory=list)
    """Bearer tokens for the admin endpoints (they are also valid API keys). None = admin endpoints off."""
    adapter_dirs: list[str] = Field(default_factory=list)
    """The only directories POST /v1/adapters may load from. None = runtime loading off."""
    max_adapters: int = Field(8, ge=1)
    """Adapters (and mixes) resident at once; the least recently used unpinned one is evicted."""
    max_batch: int = Field(16, ge=1)
    """Sequences decoded together in one forward pass."""
    max_queue: int = Field(64, ge=0)
    """Requests waiting for a batch slot; beyond it, 429 with Retry-After."""
    max_prompt_tokens: int = Field(4096, ge=1)
    max_output_tokens: int = Field(1024, ge=1)
    """Upper bound for max_tokens, and the default when a chat request sets none."""
    max_body_bytes: int = Field(1_000_000, ge=1024)
    log_prompts: bool = False
    """Log prompt and completion text (off: logs hold ids, sizes and timings only)."""

    @property
    def base_names(self) -> list[str]:
        """What a client may send as `model` for the base, canonical name first (vLLM's convention)."""
        if self.served_model_name:
            return list(dict.fromkeys(self.served_model_name))
        from attune.models.reference import parse_model_ref

        return list(dict.fromkeys([self.model, parse_model_ref(self.model).name]))

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK
