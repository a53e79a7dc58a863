"""The method advisor: from a situation to a ranked, costed recommendation, then evidence.

    situation.py  what the user has and needs (file, flags or prompts)
    shapes.py     a model's parameters / layers / hidden / vocab, read from its config
    hardware.py   device profiles (memory, throughput, bandwidth) with their sources
    costs.py      training memory, tokens/s and time, per-query prompt cost (formulas cited)
    methods.py    the methods ranked, their adapter shapes and standing risks
    plan.py       every method's cost in one situation (the adapter shape that fits)
    rules.py      blockers + scoring rules -> the ranked list with reasons
    probe.py      this machine measured (matmul, one prefill and decode step), cached
    datacounts.py examples / tokens counted from the user's data with the model's tokenizer
    evidence.py   `--evidence RECIPE`: compare the top candidates on held-out data, re-rank
    render.py     Markdown output;  commands.py  `attune advise`
"""

from __future__ import annotations

from attune.advise.rules import Advice, Option, Reason, rank
from attune.advise.situation import Situation, load_situation, parse_situation


def advise(situation: Situation) -> Advice:
    """Rank every method for `situation`.

    With `data`, the counts measured on that file fill every count the situation does not set
    explicitly. For `hardware: cpu` the probe may load the model once per machine (`probe.py`).
    """
    if situation.data:
        from attune.advise.datacounts import counts_from_data

        counted = counts_from_data(situation.data, situation.model)
        situation = situation.model_copy(update={k: v for k, v in counted.items() if k not in situation.model_fields_set})
    return rank(situation)


__all__ = ["Advice", "Option", "Reason", "Situation", "advise", "load_situation", "parse_situation", "rank"]
