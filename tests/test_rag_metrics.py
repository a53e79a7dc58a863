"""Retrieval metrics and citation handling against hand-computed values."""

from __future__ import annotations

import math

import pytest

from attune.rag.answer import clean_citations, strip_citations
from attune.rag.metrics import citation_precision, hit_at_k, ndcg_at_k, recall_at_k, reciprocal_rank

RANKING = ["a", "b", "a", "c", "d"]  # the repeated "a" (a second chunk of one document) counts once
RELEVANT = {"c", "x"}


def test_hit_recall_mrr_ndcg_by_hand():
    assert hit_at_k(RANKING, RELEVANT, 2) == 0.0
    assert hit_at_k(RANKING, RELEVANT, 3) == 1.0  # unique ranking a, b, c, d: c is 3rd
    assert recall_at_k(RANKING, RELEVANT, 3) == 0.5
    assert recall_at_k(RANKING, {"a", "b"}, 2) == 1.0
    assert reciprocal_rank(RANKING, RELEVANT) == pytest.approx(1 / 3)
    assert reciprocal_rank(RANKING, {"zz"}) == 0.0
    # DCG = 1/log2(3+1) = 0.5; ideal with 2 relevant = 1/log2(2) + 1/log2(3)
    assert ndcg_at_k(RANKING, RELEVANT, 3) == pytest.approx(0.5 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["c", "x"], RELEVANT, 5) == pytest.approx(1.0)
    assert ndcg_at_k(RANKING, set(), 5) == 0.0


def test_citation_precision_counts_cited_passages_that_hold_the_answer():
    cited = ["The Hub X2 connects up to 64 devices.", "The Camera C5 records at 20 frames per second."]
    assert citation_precision(cited, "64") == 0.5
    assert citation_precision(cited[:1], "64 devices") == 1.0
    assert citation_precision([], "64") is None
    assert citation_precision(["The Thermostat T7 accepts targets from 7 degrees."], "7") == 1.0
    assert citation_precision(["The Thermostat T7 has an eco mode."], "7") == 0.0  # whole words, not "T7"
    assert citation_precision(["enter a correction of up to ±4 °C."], "4") == 1.0


def test_invalid_citations_are_removed_and_counted():
    text, cited, dropped = clean_citations("It lasts 9 hours [2]. See also [7] and [1, 9]. Not [0].", 3)
    assert text == "It lasts 9 hours [2]. See also and [1]. Not."
    assert cited == [2, 1] and dropped == 3
    assert clean_citations("No markers here.", 3) == ("No markers here.", [], 0)
    assert strip_citations("64 devices [1][2].") == "64 devices."
