"""Optional second stage: a cross-encoder reads (query, passage) pairs and re-scores the candidates.

attune ships no cross-encoder (none comes in a wheel, and nothing is downloaded), so reranking
runs only when the user gives a local sentence-transformers CrossEncoder model dir, e.g. a
saved `cross-encoder/ms-marco-MiniLM-L-6-v2`. Anything else is a clear error, never a silent
fall-back to unreranked results.
"""

from __future__ import annotations

from pathlib import Path

from attune.errors import AttuneError
from attune.rag.passage import Passage


class Reranker:
    def __init__(self, model, name: str) -> None:
        self.model = model
        self.name = name

    def rerank(self, query: str, passages: list[Passage]) -> list[Passage]:
        """Passages by cross-encoder score, best first; `scores["rerank"]` keeps the score."""
        if not passages:
            return []
        scores = self.model.predict([(query, p.text) for p in passages], show_progress_bar=False)
        for p, s in zip(passages, scores):
            p.score = float(s)
            p.scores["rerank"] = float(s)
        return sorted(passages, key=lambda p: -p.score)


def load_reranker(path: str) -> Reranker:
    """A cross-encoder from a local model dir (attune runs offline: hub names are not fetched)."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise AttuneError(
            f"reranker {path!r}: no local cross-encoder model there (a directory with config.json). attune ships none "
            "and downloads nothing; save one first, e.g. CrossEncoder('cross-encoder/ms-marco-MiniLM-L-6-v2').save(DIR) "
            "on a machine with network, or search without --rerank"
        )
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(str(folder), device="cpu")
    except (OSError, ValueError) as exc:
        raise AttuneError(f"reranker {path!r}: cannot load a cross-encoder from it ({exc})") from exc
    return Reranker(model, str(folder))
