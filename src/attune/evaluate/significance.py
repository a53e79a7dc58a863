"""Which candidates of a compare are really different: intervals, ties with the best, one verdict.

Each candidate's headline score (the mean of each task's first metric) gets a 95 % bootstrap
interval; each candidate is tested against the best by the paired bootstrap on the same
examples (`evaluate/stats.py`). A candidate whose difference from the best is not significant
is *tied* with it. The verdict names the best candidate and, when others are tied with it, the
cheapest of those by latency per query, then prompt tokens per query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from attune.evaluate.stats import Interval, PairedTest, bootstrap_interval, paired_test

if TYPE_CHECKING:
    from attune.evaluate.results import CandidateResult
    from attune.evaluate.runner import TaskResult


@dataclass
class Standing:
    """One candidate's interval and its paired test against the best (None for the best itself)."""

    interval: Interval
    vs_best: PairedTest | None

    @property
    def best(self) -> bool:
        return self.vs_best is None

    @property
    def tied(self) -> bool:
        """Statistically tied with the best (the best is tied with itself)."""
        return self.vs_best is None or self.vs_best.tied

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.interval.mean, "low": self.interval.low, "high": self.interval.high,
                "half_width": self.interval.half_width, "best": self.best, "tied_with_best": self.tied,
                "p_vs_best": None if self.vs_best is None else self.vs_best.p_value,
                "diff_vs_best": None if self.vs_best is None else self.vs_best.difference.__dict__}


def example_scores(c: CandidateResult) -> list[list[float]]:
    """Per task, each example's value of the task's first metric (what the headline score averages)."""
    groups = []
    for t in c.tasks:
        if t.metrics and t.rows:
            key = next(iter(t.metrics))
            groups.append([float(r["scores"][key]) for r in t.rows])
    return groups


def metric_interval(task: TaskResult, metric: str, seed: int = 0) -> Interval | None:
    """The 95 % interval of one task metric, when it is a mean of per-example scores (not perplexity)."""
    values = [r["scores"][metric] for r in task.rows if metric in r.get("scores", {})]
    if not values or len(values) != len(task.rows) or abs(sum(values) / len(values) - task.metrics[metric]) > 1e-9:
        return None
    return bootstrap_interval([values], seed=seed)


def label(s: Standing) -> str:
    """The table's "vs best" cell."""
    if s.vs_best is None:
        return "best"
    return f"{'tied' if s.tied else 'below'} (p={s.vs_best.p_value:.2f})"


def standings(candidates: list[CandidateResult], seed: int = 0) -> list[Standing]:
    """An interval per candidate and a paired test of each against the best, in candidate order."""
    groups = [example_scores(c) for c in candidates]
    intervals = [bootstrap_interval(g, seed=seed) for g in groups]
    best = max(range(len(candidates)), key=lambda i: intervals[i].mean)
    return [Standing(iv, None if i == best else paired_test(groups[i], groups[best], seed=seed))
            for i, iv in enumerate(intervals)]


def cost_key(c: CandidateResult) -> tuple[float, float]:
    return (c.cost.get("latency_per_query") or 0.0, c.cost.get("prompt_tokens_per_query") or 0.0)


def verdict(candidates: list[CandidateResult], stands: list[Standing]) -> str:
    """One sentence: the best candidate, and the cheapest one statistically tied with it."""
    best = next(i for i, s in enumerate(stands) if s.best)
    b, iv = candidates[best], stands[best].interval
    head = f"{b.name} scores best ({iv.mean:.2f} ± {iv.half_width:.2f})"
    tied = [i for i, s in enumerate(stands) if s.tied and i != best]
    if not tied:
        return f"{head}, significantly above every other candidate (paired bootstrap, 95 %)."
    cheapest = min([best, *tied], key=lambda i: cost_key(candidates[i]))
    names = ", ".join(candidates[i].name for i in tied)
    if cheapest == best:
        return f"{head}; {names} {'is' if len(tied) == 1 else 'are'} statistically tied with it, and {b.name} is also the cheapest of them."
    c = candidates[cheapest]
    lat, tok = cost_key(c)
    return (f"{head}, but {c.name} is statistically tied with it (paired bootstrap p = {stands[cheapest].vs_best.p_value:.2f}) "
            f"and cheaper ({lat:.2f} s and {tok:.0f} prompt tokens per query vs {cost_key(b)[0]:.2f} s and {cost_key(b)[1]:.0f}).")
