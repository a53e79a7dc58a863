"""`route:NAME` model names: send each request to the adapter it is most similar to.

A route is a set of adapters; each adapter has a profile: its description and/or examples of its
training data. The builtin MiniLM embedder turns each profile into one unit vector (the
normalized mean of its texts' embeddings); a request's last user message is embedded the same
way and the adapter with the highest cosine similarity answers. This is a request-level mixture
of LoRA experts: one expert per request, chosen without touching the base model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attune.errors import AttuneError

PROFILE_EXAMPLES = 64  # training records read per adapter; more barely moves a mean embedding


@dataclass
class Choice:
    """The adapter a route picked, and every candidate's similarity (reported to the client)."""

    adapter: str
    scores: dict[str, float]


def profile_texts(description: str) -> list[str]:
    """The texts of one adapter's profile: `@path` reads training data (prompts only), else the text itself."""
    if not description.startswith("@"):
        return [description]
    from attune.data import load_records

    texts = []
    for record in load_records(Path(description[1:]), limit=PROFILE_EXAMPLES):
        texts.append(_prompt_text(record))
    return [t for t in texts if t.strip()]


def _prompt_text(record: Any) -> str:
    """What a user would send for this training record (the reply is not part of the query)."""
    if record.kind == "chat":
        users = [m["content"] for m in record.messages if m["role"] == "user"]
        return users[-1] if users else ""
    if record.kind == "completion":
        return record.prompt
    if record.kind == "text":
        return record.text[:1000]
    users = [m["content"] for m in record.prompt if m["role"] == "user"]
    return users[-1] if users else ""


class Router:
    """Named routes over adapters, sharing one embedder (loaded once, on first use)."""

    def __init__(self, routes: dict[str, list[str]], profiles: dict[str, list[str]], embedder: Callable[[], Any] | None = None):
        for route, adapters in routes.items():
            missing = [a for a in adapters if not profiles.get(a)]
            if missing:
                raise AttuneError(
                    f"route {route!r}: adapter(s) {', '.join(missing)} have no description; "
                    f"give each one with --describe NAME='what it is for' or --describe NAME=@training-data.jsonl"
                )
            if len(adapters) < 2:
                raise AttuneError(f"route {route!r}: needs at least two adapters to choose between")
        self.routes = routes
        self.profiles = profiles
        self._make_embedder = embedder or _builtin_embedder
        self._embedder = None
        self._vectors: dict[str, Any] = {}
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Load the embedder and embed every profile now (at startup, so the first request is not slow)."""
        import numpy as np

        with self._lock:
            if self._embedder is not None:
                return
            self._embedder = self._make_embedder()
            for name in {a for adapters in self.routes.values() for a in adapters}:
                vectors = self._embedder.encode(self.profiles[name])  # unit vectors
                mean = vectors.mean(axis=0)
                self._vectors[name] = mean / np.linalg.norm(mean)

    def choose(self, route: str, text: str) -> Choice:
        if route not in self.routes:
            from attune.serve.errors import ServeError

            raise ServeError(404, f"no route named {route!r}; routes: {', '.join(sorted(self.routes)) or 'none'}", "model")
        self.prepare()
        with self._lock:  # the embedder is not documented as thread-safe
            query = self._embedder.encode([text])[0]
        scores = {name: round(float(self._vectors[name] @ query), 4) for name in self.routes[route]}
        return Choice(max(scores, key=scores.__getitem__), scores)


def _builtin_embedder():
    from attune.models.embedding import load_embedder

    return load_embedder()  # shared with RAG and few-shot: one MiniLM per process
