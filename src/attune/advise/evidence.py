"""`--evidence RECIPE`: measure the top recommendations on the user's own held-out data.

The user's recipe supplies the model, the data (a stage per objective it has data for: `sft`
labelled examples, `cpt` a corpus, `dpo` pairs, ...), the held-out tasks and the forgetting
probe. Each of the advisor's top methods becomes a `compare` candidate: a prompting strategy,
or a stage copied from the recipe's stage of the matching objective with the method's adapter
shape, trained from the base model (`start: base`, so candidates do not chain). Zero-shot is
always measured as the baseline. `attune.evaluate.compare.run_compare` does the measuring.

Re-ranking: utility = task score - weight x forgetting (probe drop vs the base; the weight
follows the user's forgetting tolerance). Every candidate is compared with the best by the
paired bootstrap on the same held-out examples (`evaluate/stats.py`; the forgetting term is a
constant shift of the difference). Candidates whose difference from the best is not
significant at 95 % are tied with it and share rank 1, listed cheapest first (training
seconds, then prompt tokens per query): a tie stays a tie. The verdict says whether the rules'
first choice is among the best (confirmed) or significantly below it (overturned).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attune.advise.rules import Advice
from attune.errors import AttuneError
from attune.recipe import Recipe, parse_recipe

FORGETTING_WEIGHT = {"low": 2.0, "medium": 1.0, "high": 0.25}
FULL_FT_LR = 1e-5  # full fine-tuning wants ~10x below LoRA's 2e-4 (Biderman et al. 2024 sweep 1e-5..2e-5)
ADAPTER_OF = {"lora": "lora", "multi-lora": "lora", "rag+lora": "lora", "qlora": "qlora", "full-ft": "full", "peft-small": "ia3"}
OBJECTIVE_OF = {"cpt-replay": ("cpt",), "dpo": ("dpo",), "rm-ppo": ("grpo", "ppo"), "distill": ("distill",)}


@dataclass
class Measured:
    method: str
    rule_rank: int | None  # 1-based rank from the rules; None for the baseline added here
    score: float
    forgetting: float | None
    utility: float
    scores: list[list[float]]  # per task, each held-out example's score (what the paired test resamples)
    cost: dict[str, Any]
    evidence_rank: int = 0
    ci: float = 0.0  # half the 95 % bootstrap interval of the score
    tied: bool = False  # statistically tied with the best utility (the best is tied with itself)
    p_vs_best: float | None = None


@dataclass
class Evidence:
    run_dir: Path
    measured: list[Measured]  # evidence order
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it was not measured
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "verdict": self.verdict, "skipped": self.skipped,
                "measured": [{k: v for k, v in m.__dict__.items() if k != "scores"} for m in self.measured]}


def _stage_of(recipe: Recipe, objective: str):
    return next((s for s in recipe.stages if s.objective == objective), None)


def _rag_options(recipe: Recipe) -> dict[str, Any] | None:
    """The recipe's own `rag` candidate settings (index, k), else its cpt stage's documents."""
    given = next((c for c in recipe.compare if c.strategy == "rag" and c.index), None)
    if given:
        return {k: v for k, v in given.model_dump(exclude_none=True).items() if k in ("index", "k")}
    cpt = _stage_of(recipe, "cpt")
    return {"index": cpt.sources[0].path} if cpt and cpt.sources else None


def _adapter(method: str, template: dict[str, Any] | None) -> dict[str, Any]:
    kind = ADAPTER_OF[method]
    if template and template.get("type") in ("lora", "qlora", "dora") and kind in ("lora", "qlora"):
        keep = {k: v for k, v in template.items() if k in ("r", "alpha", "targets", "rslora")}
        return {"type": kind, **keep}
    return {"type": kind}


def candidate_for(method: str, recipe: Recipe) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str]:
    """(stages to train, compare candidate, why not measurable when the candidate is None).

    A copied stage that names another stage of the recipe (a PPO reward model, a distillation
    teacher) brings that stage along, so the copy runs as it would in the recipe.
    """
    from attune.train.objectives import OBJECTIVES

    if method == "zero-shot":
        return [], {"name": method, "strategy": "zero-shot"}, ""
    if method == "few-shot":
        sft = _stage_of(recipe, "sft")
        if not (sft and sft.sources):
            return [], None, "the recipe has no sft stage whose data could be the example pool"
        source = sft.sources[0]  # the shots come from the same records the trained candidates see
        pool = {"pool": source.path} | ({"pool_limit": source.limit} if source.limit else {})
        return [], {"name": method, "strategy": "few-shot", "k": 4, "selection": "similarity", **pool}, ""
    needs_rag = method in ("rag", "rag+lora")
    if needs_rag and importlib.util.find_spec("attune.rag") is None:
        return [], None, "the rag strategy is not installed in this build"
    rag = _rag_options(recipe) if needs_rag else None
    if needs_rag and rag is None:
        return [], None, "the recipe names no documents (a `rag` candidate's index or a cpt stage's data)"
    if method == "rag":
        return [], {"name": method, "strategy": "rag", **rag}, ""
    objectives = [o for o in OBJECTIVE_OF.get(method, ("sft",)) if o in OBJECTIVES]
    template = next((t for t in map(lambda o: _stage_of(recipe, o), objectives) if t is not None), None)
    if template is None:
        wanted = " or ".join(OBJECTIVE_OF.get(method, ("sft",)))
        return [], None, f"the recipe has no {wanted} stage to take the data from"
    names = {s.name for s in recipe.stages}
    deps = [recipe.stage(ref).model_dump(mode="json", exclude_none=True) | {"start": "base"}
            for ref in (template.reward_model, template.teacher) if ref in names]
    stage = template.model_dump(mode="json", exclude_none=True)
    stage.update(name=f"advise-{method}".replace("+", "-"), start="base")
    if method in ADAPTER_OF:
        stage["adapter"] = _adapter(method, stage.get("adapter"))
        if ADAPTER_OF[method] == "full" and (template.adapter is None or template.adapter.type != "full"):
            stage["train"] = {**stage.get("train", {}), "lr": FULL_FT_LR}
    cand: dict[str, Any] = {"name": method, "stage": stage["name"]}
    if method == "rag+lora":
        cand.update(strategy="rag", **rag)
    return [*deps, stage], cand, ""


def evidence_recipe(advice: Advice, recipe: Recipe, top: int, max_examples: int | None) -> tuple[Recipe, dict[str, str], list[str]]:
    """The compare recipe for the top `top` measurable options (+ the zero-shot baseline)."""
    stages, candidates, skipped, methods = [], [], {}, []
    for opt in advice.ranked:
        if len(methods) >= top:
            break
        needed, cand, why = candidate_for(opt.method.id, recipe)
        if cand is None:
            skipped[opt.method.id] = why
            continue
        methods.append(opt.method.id)
        candidates.append(cand)
        stages += [st for st in needed if st["name"] not in {x["name"] for x in stages}]
    if "zero-shot" not in methods:
        methods.append("zero-shot")
        candidates.insert(0, {"name": "zero-shot", "strategy": "zero-shot"})
    if recipe.evaluate is None or not recipe.evaluate.tasks:
        raise AttuneError(f"--evidence {recipe.name}: the recipe needs `evaluate: {{tasks: [...]}}` (your held-out data)")
    evaluate = recipe.evaluate.model_dump(mode="json")
    if max_examples:
        evaluate["max_examples"] = max_examples
    data = {"name": f"{recipe.name}-advise", "model": recipe.model, "seed": recipe.seed, "output_dir": recipe.output_dir,
            "stages": stages, "evaluate": evaluate, "compare": candidates}
    return parse_recipe(data, base_dir=recipe.base_dir, source=f"advise evidence for {recipe.name}"), skipped, methods


def _cost(m: Measured) -> tuple[float, float, float]:
    return (m.cost.get("train_seconds") or 0, m.cost.get("prompt_tokens_per_query") or 0, -m.utility)


def rerank(measured: list[Measured], seed: int = 0) -> list[Measured]:
    """The best utility and every candidate statistically tied with it share rank 1 (cheapest listed first);
    the others follow by utility (see the module docstring)."""
    from attune.evaluate.stats import bootstrap_interval, paired_test

    best = max(measured, key=lambda m: m.utility)
    for m in measured:
        m.ci = bootstrap_interval(m.scores, seed=seed).half_width
        if m is best:
            m.tied, m.p_vs_best = True, None
            continue
        shift = (m.utility - m.score) - (best.utility - best.score)  # the forgetting penalties, constant per candidate
        test = paired_test(m.scores, best.scores, seed=seed, shift=shift)
        m.tied, m.p_vs_best = test.tied, test.p_value
    tied = sorted((m for m in measured if m.tied), key=_cost)
    rest = sorted((m for m in measured if not m.tied), key=lambda m: -m.utility)
    for m in tied:
        m.evidence_rank = 1
    for i, m in enumerate(rest, 2):
        m.evidence_rank = i
    return tied + rest


def verdict(order: list[Measured]) -> str:
    """Whether the rules' highest-ranked measured method is among the best by the paired test."""
    rules_first = next((m for m in sorted(order, key=lambda m: m.rule_rank or 10**6) if m.rule_rank), None)
    if rules_first is None:
        return "nothing the rules recommended could be measured"
    best = max(order, key=lambda m: m.utility)
    tied = [m for m in order if m.tied]
    if rules_first.tied and len(tied) == 1:
        return (f"confirmed: the evidence ranks {best.method} first, as the rules did, significantly ahead of the rest "
                f"(score {best.score:.3f} ± {best.ci:.3f}, utility {best.utility:.3f})")
    if rules_first.tied:
        others = ", ".join(m.method for m in tied if m is not rules_first)
        return (f"confirmed as a tie: the rules' first choice {rules_first.method} is statistically tied with {others} "
                f"(paired bootstrap, 95 %); the cheapest of them is {tied[0].method}")
    return (f"overturned: the rules put {rules_first.method} first, the evidence puts {best.method} significantly ahead "
            f"(utility {best.utility:.3f} vs {rules_first.utility:.3f}, paired bootstrap p = {rules_first.p_vs_best:.3f})")


def run_evidence(advice: Advice, recipe: Recipe, *, top: int = 3, max_examples: int | None = None) -> Evidence:
    """Train and score the top candidates, re-rank them, and write advice-evidence.json into the run."""
    from attune.evaluate.compare import run_compare
    from attune.evaluate.results import forgetting
    from attune.evaluate.significance import example_scores

    compare_recipe, skipped, methods = evidence_recipe(advice, recipe, top, max_examples)
    result = run_compare(compare_recipe)
    rule_rank = {o.method.id: i for i, o in enumerate(advice.ranked, 1)}
    weight = FORGETTING_WEIGHT[advice.situation.forgetting_tolerance]
    measured = []
    for c in result.candidates:
        drop = forgetting(c, result.base_probe)
        utility = c.score - weight * max(0.0, drop or 0.0)
        measured.append(Measured(c.name, rule_rank.get(c.name), c.score, drop, utility, example_scores(c), c.cost))
    order = rerank(measured)
    ev = Evidence(result.run_dir, order, skipped, verdict(order))
    (Path(result.run_dir) / "advice-evidence.json").write_text(json.dumps(ev.to_dict(), indent=2, default=str))
    return ev

