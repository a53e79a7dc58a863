"""Retrieval metrics with binary relevance, and citation precision for grounded answers.

A ranking is a list of ids (chunk ids, or document names when relevance is per document);
repeats are dropped before scoring, so several chunks of one relevant document count once.
Definitions follow Manning, Raghavan & Schütze, "Introduction to Information Retrieval" ch. 8:

- hit@k: 1 if any relevant id is in the top k
- recall@k: share of the relevant ids found in the top k
- MRR: 1 / rank of the first relevant id (0 if none), averaged over queries
- nDCG@k: sum over relevant ranks i <= k of 1/log2(i+1), divided by the same sum for the ideal ranking
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Sequence


def _unique(ranking: Iterable[Hashable]) -> list[Hashable]:
    seen: set = set()
    return [x for x in ranking if not (x in seen or seen.add(x))]


def hit_at_k(ranking: Sequence[Hashable], relevant: set, k: int) -> float:
    return float(any(x in relevant for x in _unique(ranking)[:k]))


def recall_at_k(ranking: Sequence[Hashable], relevant: set, k: int) -> float:
    if not relevant:
        return 0.0
    return len(set(_unique(ranking)[:k]) & relevant) / len(relevant)


def reciprocal_rank(ranking: Sequence[Hashable], relevant: set) -> float:
    for rank, x in enumerate(_unique(ranking), 1):
        if x in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranking: Sequence[Hashable], relevant: set, k: int) -> float:
    dcg = sum(1.0 / math.log2(i + 1) for i, x in enumerate(_unique(ranking)[:k], 1) if x in relevant)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def contains_answer(text: str, answer: str) -> bool:
    """Whether a passage holds the answer as whole words, after SQuAD normalisation.

    Whole words, not a substring: the answer "7" is not in "Thermostat T7" (plain substring
    matching would make every chunk about the T7 "contain" it).
    """
    from attune.evaluate.metrics import normalize

    return re.search(rf"(?<!\w){re.escape(normalize(answer))}(?!\w)", normalize(text)) is not None


def citation_precision(cited_texts: Sequence[str], answer: str) -> float | None:
    """Share of the cited passages that contain the reference answer; None when nothing was cited."""
    if not cited_texts:
        return None
    return sum(contains_answer(t, answer) for t in cited_texts) / len(cited_texts)
