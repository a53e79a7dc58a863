"""Bootstrap intervals and the paired test against hand-computed values and plain numpy loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attune.evaluate.stats import bootstrap_interval, paired_test, resampled, statistic


def test_statistic_is_the_mean_of_task_means():
    assert statistic([[1, 0, 1, 1], [0, 0]]) == pytest.approx((0.75 + 0.0) / 2)


def test_resampling_equals_a_plain_loop_with_the_same_draws():
    groups = [[1.0, 0.0, 1.0, 1.0, 0.0], [0.2, 0.9, 0.4]]
    rng = np.random.default_rng(7)
    draws = [rng.integers(0, len(g), (50, len(g))) for g in groups]
    expected = [np.mean([np.mean([groups[t][i] for i in draws[t][r]]) for t in range(2)]) for r in range(50)]
    assert resampled(groups, 50, seed=7) == pytest.approx(expected)
    assert list(resampled(groups, 50, seed=7)) == list(resampled(groups, 50, seed=7))  # seeded


def test_two_examples_by_hand():
    """Scores [0, 1]: the resampled mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4."""
    draws = resampled([[0.0, 1.0]], 20000, seed=0)
    assert np.mean(draws == 0.5) == pytest.approx(0.5, abs=0.015)
    assert np.mean(draws == 0.0) == pytest.approx(0.25, abs=0.015)
    ci = bootstrap_interval([[0.0, 1.0]])
    assert (ci.mean, ci.low, ci.high) == (0.5, 0.0, 1.0)


def test_interval_matches_the_normal_approximation_for_a_proportion():
    scores = [1.0] * 200 + [0.0] * 200  # p = 0.5, n = 400
    ci = bootstrap_interval([scores], resamples=4000)
    assert ci.half_width == pytest.approx(1.96 * math.sqrt(0.25 / 400), rel=0.1)
    assert ci.contains(0.5)


def test_paired_test_by_hand():
    same = paired_test([[1, 0, 1]], [[1, 0, 1]])
    assert same.tied and same.p_value == 1.0 and (same.difference.low, same.difference.high) == (0.0, 0.0)
    apart = paired_test([[1.0] * 10], [[0.0] * 10])
    assert not apart.tied and apart.p_value == 0.0 and apart.difference.mean == 1.0
    # per-example differences [1, 0]: resampled mean difference 0 w.p. 1/4, so p = 2 x 1/4
    half = paired_test([[1.0, 1.0]], [[0.0, 1.0]], resamples=20000)
    assert half.p_value == pytest.approx(0.5, abs=0.03) and half.tied
    shifted = paired_test([[1, 0, 1]], [[1, 0, 1]], shift=0.3)
    assert shifted.difference.mean == pytest.approx(0.3) and shifted.p_value == 0.0 and not shifted.tied


def test_pairing_separates_what_separate_intervals_cannot():
    """b equals a except 10 of 100 examples a gets right: separate intervals overlap, the paired one excludes 0."""
    rng = np.random.default_rng(1)
    b = (rng.random(100) < 0.5).astype(float)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:10]] = 1.0
    ia, ib = bootstrap_interval([a]), bootstrap_interval([b])
    assert ia.low < ib.high  # the intervals overlap
    test = paired_test([a], [b])
    assert not test.tied and test.difference.low > 0 and test.p_value < 0.05


def test_unpaired_inputs_are_refused():
    with pytest.raises(ValueError, match="same examples"):
        paired_test([[1, 0]], [[1, 0, 1]])
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_interval([[]])


def _candidate(name, scores, latency=1.0, tokens=100.0):
    from attune.evaluate.results import CandidateResult
    from attune.evaluate.runner import TaskResult

    rows = [{"scores": {"exact_match": s}, "prediction": "", "reference": ""} for s in scores]
    task = TaskResult("t", "generate", {"exact_match": sum(scores) / len(scores)}, rows)
    return CandidateResult(name, "m", None, "zero-shot", [task], cost={"latency_per_query": latency, "prompt_tokens_per_query": tokens})


def test_standings_mark_ties_and_the_verdict_names_the_cheapest_tied():
    from attune.evaluate.significance import standings, verdict

    rng = np.random.default_rng(0)
    base = (rng.random(60) < 0.45).astype(float)
    lora = base.copy()
    lora[np.flatnonzero(base == 0)[:2]] = 1.0  # 2 more right out of 60: not significant
    zero = np.zeros(60)
    cands = [_candidate("zero-shot", list(zero), 0.3, 90), _candidate("lora", list(lora), 0.9, 98),
             _candidate("few-shot", list(base), 0.5, 430)]
    stands = standings(cands)
    assert [s.best for s in stands] == [False, True, False]
    assert [s.tied for s in stands] == [False, True, True]
    assert stands[1].interval.mean == pytest.approx(lora.mean())
    text = verdict(cands, stands)
    assert text.startswith(f"lora scores best ({lora.mean():.2f} ± ") and "few-shot is statistically tied" in text
    assert "cheaper (0.50 s and 430 prompt tokens per query vs 0.90 s and 98)" in text
    alone = standings(cands[:2])
    assert "significantly above every other candidate" in verdict(cands[:2], alone)


def test_field_breakdown_by_hand():
    from attune.evaluate.fields import MISSING, NOT_JSON, field_breakdown

    ref = '{"category": "billing", "priority": "high", "note": "free text %d"}'
    rows = [
        {"reference": ref % 1, "prediction": '{"category": "billing", "priority": "low"}'},
        {"reference": ref % 2, "prediction": '{"category": "billing", "priority": "high"}'},
        {"reference": '{"category": "shipping", "priority": "high", "note": "x"}', "prediction": '{"category": "billing"}'},
        {"reference": '{"category": "shipping", "priority": "low", "note": "y"}', "prediction": "billing, low"},
    ]
    fields = {f.field: f for f in field_breakdown(rows)}
    assert set(fields) == {"category", "priority"}  # "note" is free text: every value differs
    cat = fields["category"]
    assert cat.accuracy == 0.5 and cat.n == 4
    assert cat.labels == ["billing", "shipping"] and cat.predicted == ["billing", "shipping", NOT_JSON]
    assert cat.matrix == [[2, 0, 0], [1, 0, 1]]
    pri = fields["priority"]
    assert pri.accuracy == 0.25 and pri.predicted == ["high", "low", MISSING, NOT_JSON]
    assert pri.matrix == [[1, 1, 1, 0], [0, 0, 0, 1]]
    assert field_breakdown([{"reference": "Paris", "prediction": "Paris"}]) == []
