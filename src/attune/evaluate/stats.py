"""Bootstrap statistics for eval scores: an interval per score, a paired test between two candidates.

A candidate's headline score is the mean over tasks of each task's mean example score, so the
bootstrap resamples examples *within* each task (stratified) and recomputes that same statistic
(Efron & Tibshirani 1993, ch. 13, percentile intervals). Two candidates scored on the same
examples are compared by the paired bootstrap (Koehn 2004, "Statistical Significance Tests for
Machine Translation Evaluation"; Berg-Kirkpatrick et al. 2012): the same resampled indices are
applied to both, so the interval is that of the per-example *difference*, which is far
narrower than two separate intervals when the candidates agree on most examples. The
difference is significant at level 1 - `level` when its interval excludes 0; otherwise the two
are tied.

Everything is seeded: the same scores give the same intervals on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95

Groups = Sequence[Sequence[float]]  # per task, the score of each example


@dataclass(frozen=True)
class Interval:
    """A statistic and its bootstrap percentile interval."""

    mean: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        """What `0.48 ± 0.12` shows: half the interval's width (the interval itself may be asymmetric)."""
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class PairedTest:
    """The paired difference a - b with its interval and two-sided bootstrap p-value."""

    difference: Interval
    p_value: float

    @property
    def tied(self) -> bool:
        """No significant difference: the interval of a - b contains 0."""
        return self.difference.contains(0.0)


def _arrays(groups: Groups) -> list[np.ndarray]:
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("every task needs at least one example score")
    return arrays


def statistic(groups: Groups) -> float:
    """The headline score: the mean over tasks of each task's mean."""
    return float(np.mean([a.mean() for a in _arrays(groups)]))


def resampled(groups: Groups, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The statistic on `resamples` stratified bootstrap samples, shape (resamples,).

    Task t draws its indices as `rng.integers(0, n_t, (resamples, n_t))`, tasks in order, from
    one `numpy.random.default_rng(seed)`: equal inputs and seed give the same draws, which is
    what makes the paired test paired.
    """
    rng = np.random.default_rng(seed)
    means = [a[rng.integers(0, a.size, (resamples, a.size))].mean(axis=1) for a in _arrays(groups)]
    return np.mean(means, axis=0)


def _interval(point: float, draws: np.ndarray, level: float) -> Interval:
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(point, float(low), float(high))


def bootstrap_interval(groups: Groups, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> Interval:
    """The score with its `level` percentile bootstrap interval."""
    return _interval(statistic(groups), resampled(groups, resamples, seed), level)


def paired_test(a: Groups, b: Groups, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0, shift: float = 0.0) -> PairedTest:
    """Paired bootstrap of a - b over the same examples (a[t][i] and b[t][i] score the same example).

    `shift` is a constant added to the difference (a per-candidate penalty such as the advisor's
    forgetting term, which does not vary by example). The p-value is two-sided: twice the share
    of bootstrap differences on the far side of 0 from the observed one (capped at 1).
    """
    arrays_a, arrays_b = _arrays(a), _arrays(b)
    if [x.size for x in arrays_a] != [x.size for x in arrays_b]:
        raise ValueError("a paired test needs both candidates scored on the same examples")
    diff = [x - y for x, y in zip(arrays_a, arrays_b)]
    draws = resampled(diff, resamples, seed) + shift
    point = statistic(diff) + shift
    p = min(1.0, 2 * min(float(np.mean(draws <= 0)), float(np.mean(draws >= 0))))
    return PairedTest(_interval(point, draws, level), p)
