"""What retrieval returns: a chunk of a document with its score."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Passage:
    """One retrieved chunk.

    `score` is the ranking score of the mode that produced the list (cosine for dense, BM25 for
    bm25, reciprocal-rank fusion for hybrid, the cross-encoder's logit after reranking);
    `scores` keeps each retriever's own score, e.g. `scores["dense"]`, the cosine similarity
    the "I don't know" threshold reads.
    """

    id: str
    doc: str
    text: str
    score: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "doc": self.doc, "text": self.text, "score": self.score, "metadata": self.metadata, "scores": self.scores}
