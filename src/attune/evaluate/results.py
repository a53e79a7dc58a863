"""What a compare produced: one `CandidateResult` per candidate, the `CompareResult` around them.

Plain data, shared by `compare.py` (which fills it), `report.py` and `replay_plot.py` (which draw
it) and the advisor's evidence (which re-ranks it); importing it loads no model code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attune.evaluate.runner import TaskResult
    from attune.recipe import Stage


@dataclass
class CandidateResult:
    name: str
    model: str
    adapter: str | None
    strategy: str
    tasks: list[TaskResult]
    probe: dict[str, float] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    stage: str | None = None  # the recipe stage whose weights it scores, if any

    @property
    def score(self) -> float:
        """The headline score: mean of each task's first metric."""
        firsts = [next(iter(t.metrics.values())) for t in self.tasks if t.metrics]
        return sum(firsts) / len(firsts) if firsts else 0.0


@dataclass
class CompareResult:
    recipe: str
    run_dir: Path
    candidates: list[CandidateResult]
    base_probe: dict[str, float]
    training: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # stage -> its metrics.jsonl rows
    stages: dict[str, Stage] = field(default_factory=dict)  # the recipe's stages by name (what each was trained as)


def forgetting(c: CandidateResult, base: dict[str, float]) -> float | None:
    """Mean drop of the probe scores against the base model (positive = skill lost)."""
    common = [k for k in base if k in c.probe and not k.endswith(("perplexity", "/loss", "bits_per_byte"))]
    if not common:
        return None
    return sum(base[k] - c.probe[k] for k in common) / len(common)
