"""Serving: an OpenAI-compatible API over a base model and many LoRA adapters (docs/serving.md).

`attune serve` is `commands.serve`; in Python, `Server(ServeSettings(...))` + `create_app(server)`.
Modules: settings, schemas, auth, registry (adapters, LRU), combine (`mix:`), router (`route:`),
server (state; `rag:`), app (HTTP), metrics, vllm (GPU backend). The continuous-batching engine the
server runs in its own thread is `attune.models.engine`, the one all local generation uses.
"""

from attune.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
