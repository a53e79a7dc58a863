"""The method advisor: from a situation to a ranked, costed recommendation, then evidence.

    situation.py  what the user has and needs (file, flags or prompts)
    shapes.py     a model's parameters / layers / hidden / vocab, read from its config
    hardware.py   device profiles (memory, throughput, bandwidth) with their sources
    costs.py      training memory, tokens/s and time, per-query prompt cost (formulas cited)
    methods.py    the methods ranked, their adapter shapes and standing risks
    plan.py       every method's cost in one situation (the adapter shape that fits)
    rules.py      blockers + scoring rules -> the ranked list with reasons
    evidence.py   `--evidence RECIPE`: compare the top candidates on held-out data, re-rank
    render.py     Markdown output;  commands.py  `attune advise`
"""

from __future__ import annotations

from attune.advise.rules import Advice, Option, Reason, rank
from attune.advise.situation import Situation, load_situation, parse_situation


def advise(situation: Situation) -> Advice:
    """Rank every method for `situation` (no model weights are loaded; configs only)."""
    return rank(situation)


__all__ = ["Advice", "Option", "Reason", "Situation", "advise", "load_situation", "parse_situation", "rank"]
