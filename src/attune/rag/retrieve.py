"""Search an opened index: dense, BM25, or both fused by reciprocal rank; metadata filters; optional rerank.

Hybrid fusion is reciprocal rank fusion (Cormack, Clarke & Buettcher 2009): a passage scores
sum over retrievers of 1 / (k + rank), k = 60 as in the paper. It needs no score calibration
between cosine similarities and BM25 scores, which live on unrelated scales. Each retriever
contributes its top `candidates(k)`, so a passage ranked well by only one of them still
reaches the fused list.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from attune.errors import AttuneError
from attune.rag.passage import Passage

if TYPE_CHECKING:
    from collections import Counter

    import numpy as np

    from attune.rag.bm25 import Bm25Index
    from attune.rag.chunking import Chunk
    from attune.rag.rerank import Reranker
    from attune.rag.stores import VectorStore

Mode = Literal["hybrid", "dense", "bm25"]
MODES = ("hybrid", "dense", "bm25")
RRF_K = 60


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked lists of ids (rank 1 = first): (id, fused score), best first.

    Ties keep the order in which ids were first seen (the first list wins), so fusion is deterministic.
    """
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def candidates(k: int) -> int:
    """How deep each retriever looks before fusion or reranking."""
    return max(4 * k, 20)


class RagIndex:
    """An opened index version: chunks, vectors and keyword index, ready to search."""

    def __init__(self, path: Path, manifest: dict[str, Any], chunks: list[Chunk], store: VectorStore, bm25: Bm25Index) -> None:
        self.path = path
        self.manifest = manifest
        self.chunks = chunks
        self.store = store
        self.bm25 = bm25
        self.reranker: Reranker | None = None
        self._embedder = None
        self._doc_freq: Counter[str] | None = None

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def embedder(self):
        """The embedder the index was built with (loaded on first dense query)."""
        if self._embedder is None:
            from attune.models.embedding import load_embedder

            self._embedder = load_embedder(self.manifest["embedder"])
        return self._embedder

    def _allowed(self, filters: dict[str, Any] | None) -> np.ndarray | None:
        """Rows whose doc/metadata match every filter (a list value = any of those values)."""
        import numpy as np

        if not filters:
            return None
        known = {"doc", "id"} | {key for c in self.chunks for key in c.metadata}
        for key in filters:
            if key not in known:
                from attune.errors import did_you_mean

                hint = did_you_mean(key, known)
                raise AttuneError(f"filter field {key!r} is not in this index{hint}; fields: {', '.join(sorted(known))}")

        def value(c: Chunk, key: str) -> Any:
            return c.doc if key == "doc" else c.id if key == "id" else c.metadata.get(key)

        wanted = {k: (v if isinstance(v, (list, tuple, set)) else [v]) for k, v in filters.items()}
        rows = [i for i, c in enumerate(self.chunks) if all(value(c, k) in vs for k, vs in wanted.items())]
        return np.asarray(rows, dtype=np.int64)

    def _dense(self, query: str, k: int, rows) -> list[tuple[int, float]]:
        return self.store.search(self.embedder.encode([query])[0], k, rows)

    def search(self, query: str, k: int = 5, mode: Mode = "hybrid", filters: dict[str, Any] | None = None) -> list[Passage]:
        """The k best passages for `query`; `scores` on each passage holds every retriever's own score."""
        if mode not in MODES:
            raise AttuneError(f"unknown retrieval mode {mode!r}; known: {', '.join(MODES)}")
        if k < 1:
            raise AttuneError(f"k must be at least 1, got {k}")
        rows = self._allowed(filters)
        if rows is not None and len(rows) == 0:
            return []
        depth = candidates(k) if (mode == "hybrid" or self.reranker) else k
        per: dict[int, dict[str, float]] = {}
        rankings = []
        if mode in ("dense", "hybrid"):
            hits = self._dense(query, depth, rows)
            rankings.append([r for r, _ in hits])
            for r, s in hits:
                per.setdefault(r, {})["dense"] = s
        if mode in ("bm25", "hybrid"):
            hits = self.bm25.search(query, depth, rows)
            rankings.append([r for r, _ in hits])
            for r, s in hits:
                per.setdefault(r, {})["bm25"] = s
        if mode == "hybrid":
            ranked = rrf(rankings)
            for r, s in ranked:
                per[r]["rrf"] = s
        else:
            ranked = [(r, per[r][mode]) for r in rankings[0]]
        passages = [self._passage(r, s, per[r]) for r, s in ranked]
        if self.reranker is not None:
            passages = self.reranker.rerank(query, passages)
        return passages[:k]

    def _passage(self, row: int, score: float, scores: dict[str, float]) -> Passage:
        c = self.chunks[row]
        return Passage(c.id, c.doc, c.text, score, dict(c.metadata), dict(scores))

    def relevance(self, query: str, filters: dict[str, Any] | None = None) -> float:
        """Cosine similarity of the query to the closest chunk: what the "I don't know" threshold compares."""
        hits = self._dense(query, 1, self._allowed(filters))
        return hits[0][1] if hits else 0.0

    def keyword_coverage(self, query: str, passages: list[Passage]) -> float:
        """The largest share of the query's keywords, weighted by BM25's inverse document frequency,
        that one passage contains: 1.0 when a passage has every keyword, 0.0 when none has any.

        BM25 scores themselves have no fixed scale (they grow with query length and corpus
        statistics), so the "I don't know" rule reads this bounded share instead. Keywords absent
        from the corpus weigh the most: a question about something the documents never mention
        stays uncovered however many common words it shares with them.
        """
        import math

        from attune.rag.bm25 import keywords as terms

        keywords = set(terms([query])[0])
        if not keywords or not passages:
            return 0.0
        if self._doc_freq is None:
            from collections import Counter

            self._doc_freq = Counter(t for words in terms([c.text for c in self.chunks]) for t in set(words))
        n = len(self.chunks)
        idf = {t: math.log(1 + (n - self._doc_freq[t] + 0.5) / (self._doc_freq[t] + 0.5)) for t in keywords}
        total = sum(idf.values())
        return max(sum(idf[t] for t in keywords & set(words)) / total for words in terms([p.text for p in passages]))

    def close(self) -> None:
        self.store.close()
