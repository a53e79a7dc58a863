"""Few-shot: k solved examples from a pool, as earlier chat turns, before the query.

Selection is `random` (seeded, the same shots for every query) or `similarity`: the k pool
examples whose inputs are closest to the query by cosine similarity of MiniLM embeddings
(Liu et al. 2022, "What Makes Good In-Context Examples for GPT-3?").
"""

from __future__ import annotations

import random
from typing import Any

from attune.errors import AttuneError
from attune.models.embedding import load_embedder
from attune.prompting.base import PromptedExample, StrategyContext, user_turns, with_system


class FewShot:
    name = "few-shot"

    def __init__(self, pool: list[dict[str, Any]], k: int, selection: str, system: str | None, context: StrategyContext) -> None:
        if not pool:
            raise AttuneError("few-shot needs an example pool (candidate `pool:` or the first stage's data)")
        self.pool = pool
        self.k = min(k, len(pool))
        self.selection = selection
        self.system = system
        self.context = context
        self._random = random.Random(context.seed).sample(range(len(pool)), self.k)
        self._embedder = None
        self._pool_vectors = None

    def _similar(self, query: str) -> list[int]:
        import numpy as np

        if self._embedder is None:
            self._embedder = load_embedder()
            self._pool_vectors = self._embedder.encode([p["query"] for p in self.pool])
        q = self._embedder.encode([query])[0]
        scores = self._pool_vectors @ q
        order = [int(i) for i in np.argsort(-scores) if self.pool[int(i)]["query"] != query]
        return order[: self.k]

    def build(self, query: str, example: dict[str, Any]) -> PromptedExample:
        chosen = self._similar(query) if self.selection == "similarity" else self._random
        shots = []
        for i in chosen:
            shot = self.pool[i]
            shots += [*user_turns(shot, self.context)[-1:], {"role": "assistant", "content": shot["reference"]}]
        messages = with_system(shots + user_turns(example, self.context), self.system)
        return PromptedExample(messages, {"shots": chosen})

    def extract(self, output: str) -> str:
        return output


K = 4
"""Shots per prompt when neither the candidate nor `attune eval --k` says."""
SELECTION = "similarity"
"""How shots are chosen by default, in `attune eval` and in a compare candidate alike (DESIGN: by similarity)."""


def build_strategy(options: dict[str, Any], context: StrategyContext) -> FewShot:
    return FewShot(
        context.pool or [], options.get("k") or K, options.get("selection") or SELECTION,
        options.get("system") or context.system, context,
    )
