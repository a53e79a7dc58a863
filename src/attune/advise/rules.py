"""The rules: from a situation to a ranked list of methods, each with the reasons that moved it.

Two kinds of rule. A *blocker* removes a method that cannot run here (no weights, no data of
the kind it needs, it does not fit in memory, it exceeds the budget). A *scoring rule* is a
predicate on the situation and a table of score changes, each with the sentence shown to the
user; rules are plain functions in `RULES`, so adding one is one function and one line. The
weights are judgement, written down: the literature each rule leans on is cited in its text and
in docs/advisor.md, and `--evidence` exists because rules are only a prior.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from attune.advise.methods import METHODS, Method
from attune.advise.plan import Facts, MethodCost, plan
from attune.advise.situation import Situation

TRAINED_ON_LABELS = ("lora", "qlora", "peft-small", "full-ft", "multi-lora")
EXTERNAL = ("zero-shot", "few-shot", "rag")
RETRIEVAL = ("rag", "rag+lora")
WEIGHT_CHANGING = ("lora", "qlora", "peft-small", "full-ft", "cpt-replay", "dpo", "rm-ppo", "multi-lora", "rag+lora")


@dataclass(frozen=True)
class Reason:
    rule: str  # the rule's id, stable for tests and for the docs
    delta: float
    text: str


@dataclass
class Option:
    """One method in the ranking."""

    method: Method
    score: float
    reasons: list[Reason] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    cost: MethodCost | None = None

    @property
    def feasible(self) -> bool:
        return not self.blockers

    @property
    def rules(self) -> set[str]:
        return {r.rule for r in self.reasons}


@dataclass
class Advice:
    situation: Situation
    facts: Facts
    ranked: list[Option]  # feasible, best first
    blocked: list[Option]

    @property
    def top(self) -> Option:
        return self.ranked[0]

    def option(self, method: str) -> Option:
        return next(o for o in self.ranked + self.blocked if o.method.id == method)


Effects = Iterator[tuple[str, float, str]]  # (method id, score change, reason)
RULES: list[tuple[str, Callable[[Situation, Facts], Effects]]] = []


def rule(rule_id: str):
    def deco(fn: Callable[[Situation, Facts], Effects]) -> Callable[[Situation, Facts], Effects]:
        RULES.append((rule_id, fn))
        return fn

    return deco


# ---- blockers -------------------------------------------------------------------------------


def blockers(s: Situation, f: Facts, m: Method) -> list[str]:
    """Why `m` cannot run here (empty: it can)."""
    out = []
    if m.needs_weights and not s.has_weights:
        out.append("API-only access: there are no weights to train")
    needs = {
        "few-shot": (s.labelled_examples > 0, "no labelled examples to show"),
        "rag": (s.unlabelled_tokens > 0, "no documents to retrieve from"),
        "cpt-replay": (s.unlabelled_tokens > 0, "no unlabelled domain text"),
        "dpo": (s.preference_pairs > 0, "no preference pairs"),
        "rm-ppo": (s.preference_pairs > 0 or s.reward_function, "no preference pairs to train a reward model and no reward function"),
        "distill": (s.labelled_examples > 0 or s.prompts > 0, "no prompts to collect the teacher's answers on"),
        "multi-lora": (s.tenants > 1 or s.tasks > 1, "one task and one tenant: a single adapter is enough"),
        "rag+lora": (s.unlabelled_tokens > 0 and s.labelled_examples > 0, "needs both documents and labelled examples"),
    }
    if m.id in TRAINED_ON_LABELS and s.labelled_examples == 0:
        out.append("no labelled examples to train on")
    ok, why = needs.get(m.id, (True, ""))
    if not ok:
        out.append(why)
    cost = f.cost(m.id)
    if m.trains and cost.memory is not None and not cost.fits:
        out.append(f"needs ~{cost.memory.total_gb:,.1f} GB per device even with gradient checkpointing; "
                   f"{f.hardware.name} has {f.hardware.memory_gb:,.0f} GB")
    if m.trains and cost.time is not None and s.budget_gpu_hours is not None and cost.time.device_hours > s.budget_gpu_hours:
        out.append(f"needs ~{cost.time.device_hours:,.1f} device-hours; the budget is {s.budget_gpu_hours:,.1f}")
    return out


# ---- scoring rules --------------------------------------------------------------------------


@rule("no-labels")
def _no_labels(s: Situation, f: Facts) -> Effects:
    if s.labelled_examples == 0:
        yield "zero-shot", 2.0, "no labelled examples: start from clear instructions and measure"


@rule("few-labels")
def _few_labels(s: Situation, f: Facts) -> Effects:
    n = s.labelled_examples
    if 0 < n < 100:
        yield "few-shot", 2.5, f"{n} examples fit in the prompt as demonstrations (Brown et al. 2020)"
        for m in TRAINED_ON_LABELS:
            yield m, -1.5, f"{n} examples are too few to train on without overfitting"


@rule("hundreds-of-labels")
def _hundreds(s: Situation, f: Facts) -> Effects:
    n = s.labelled_examples
    if 100 <= n < 1000:
        yield "lora", 2.0, f"{n} examples: enough to teach a format or a narrow task (LIMA, Zhou et al. 2023: ~1k suffice)"
        yield "qlora", 1.5, f"{n} examples are enough for an adapter"
        yield "multi-lora", 2.0, f"{n} examples: enough for an adapter per tenant/task"
        yield "peft-small", 0.5, f"{n} examples: a light adapter may be enough"
        yield "few-shot", 0.5, "a cheap baseline: the most similar examples as demonstrations"
        yield "full-ft", -0.5, f"{n} examples are few for updating every weight"


@rule("thousands-of-labels")
def _thousands(s: Situation, f: Facts) -> Effects:
    n = s.labelled_examples
    if n >= 1000:
        yield "lora", 2.5, f"{n:,} examples: training uses all of them, a prompt only {4}"
        yield "qlora", 2.0, f"{n:,} examples: plenty for an adapter"
        yield "multi-lora", 2.5, f"{n:,} examples: plenty for an adapter per tenant/task"
        yield "full-ft", 1.5, f"{n:,} examples can support updating every weight"
        yield "few-shot", -0.5, f"only 4 of {n:,} examples fit in each prompt"
        for m in ("zero-shot", "rag", "cpt-replay"):
            yield m, -1.0, f"leaves {n:,} labelled examples unused"
    if n >= 5000:
        yield "full-ft", 1.0, "with this much data full fine-tuning keeps learning where LoRA saturates (Biderman et al. 2024)"


@rule("goal")
def _goal(s: Situation, f: Facts) -> Effects:
    if s.goal == "knowledge":
        yield "rag", 3.0, "facts belong in an index: answers are grounded in retrieved text (Lewis et al. 2020)"
        yield "rag+lora", 2.0, "facts from retrieval, answer style from the adapter"
        yield "cpt-replay", 0.5, "continued pretraining can absorb domain facts, but recalls them less reliably than retrieval"
        for m in ("lora", "qlora", "full-ft", "multi-lora"):
            yield m, -1.0, "fine-tuning on new facts teaches them poorly and raises hallucination (Gekhman et al. 2024)"
    elif s.goal == "format":
        yield "lora", 1.0, "format and tone are what fine-tuning learns most reliably"
        yield "qlora", 0.5, "format and tone are learned well by adapters"
        yield "peft-small", 0.5, "light steering of style suits a tiny adapter"
        yield "few-shot", 0.5, "demonstrations show the format"
    elif s.goal == "task":
        yield "lora", 1.0, "a narrow task is what supervised fine-tuning is for"
        yield "qlora", 0.5, "a narrow task suits an adapter"
        yield "full-ft", 0.5, "a narrow task can use all the model's capacity"
    elif s.goal == "domain":
        yield "cpt-replay", 1.5, "a domain's language is learned from raw domain text (Gururangan et al. 2020)"
    elif s.goal == "behaviour":
        yield "dpo", 1.5, "behaviour is taught by preferences, not by single answers"
        yield "rm-ppo", 1.0, "behaviour is taught by a reward"


@rule("volatility")
def _volatility(s: Situation, f: Facts) -> Effects:
    if s.volatility in ("weekly", "daily"):
        yield "rag", 2.0, f"facts change {s.volatility}: re-index in minutes instead of retraining"
        yield "rag+lora", 1.5, f"facts change {s.volatility}: they stay in the index; the adapter only learns the format"
        yield "cpt-replay", -2.0, f"facts change {s.volatility}: a pretraining run goes stale at once"
        for m in ("full-ft", "lora", "qlora", "multi-lora"):
            yield m, -1.0, f"facts learned into weights go stale {s.volatility}"
    elif s.volatility == "monthly":
        yield "rag", 1.0, "facts change monthly: an index is cheaper to refresh than weights"
        yield "cpt-replay", -1.0, "facts change monthly: retraining every month"


@rule("citations")
def _citations(s: Situation, f: Facts) -> Effects:
    if s.citations:
        for m in RETRIEVAL:
            yield m, 2.0, "answers can cite the retrieved passages"
        for m in METHODS:
            if m not in RETRIEVAL:
                yield m, -1.0, "cannot point to a source for what it says"


@rule("corpus-size")
def _corpus(s: Situation, f: Facts) -> Effects:
    t = s.unlabelled_tokens
    if 0 < t < 10_000_000:
        yield "cpt-replay", -2.0, f"{t:,} tokens are too few for continued pretraining to shift the model"
        yield "rag", 1.0, (f"the whole corpus ({t:,} tokens) is a few passages: retrieval almost always finds the right one"
                           if t <= 2000 else f"a {t:,}-token corpus is quick to index and retrieve from")
    elif 10_000_000 <= t < 100_000_000:
        yield "cpt-replay", 1.0, f"{t / 1e6:,.0f}M domain tokens: enough for a measurable domain shift"
    elif t >= 100_000_000:
        yield "cpt-replay", 3.5, (f"{t / 1e9:,.1f}B domain tokens: continued pretraining adapts the model to the domain "
                                  "(Gururangan et al. 2020); replay keeps general skills")


@rule("documents-and-labels")
def _both(s: Situation, f: Facts) -> Effects:
    n = s.labelled_examples
    if s.unlabelled_tokens > 0 and n >= 500:
        yield "rag+lora", 3.5 if n >= 1000 else 2.0, (
            f"documents for the facts and {n:,} examples for the answers: an adapter trained with retrieved passages "
            "learns to use them (RAFT, Zhang et al. 2024)")


@rule("preferences")
def _prefs(s: Situation, f: Facts) -> Effects:
    n = s.preference_pairs
    if n >= 1000:
        yield "dpo", 4.0, f"{n:,} preference pairs: DPO learns from them directly, no reward model (Rafailov et al. 2023)"
        yield "rm-ppo", 2.0, f"{n:,} pairs can train a reward model for PPO (Ouyang et al. 2022), at 2-4x DPO's cost"
    elif n > 0:
        yield "dpo", 2.0, f"{n} preference pairs: enough for a DPO adapter to shift behaviour"
        yield "rm-ppo", 0.5, f"{n} pairs make a weak reward model"


@rule("reward-function")
def _reward(s: Situation, f: Facts) -> Effects:
    if s.reward_function:
        yield "rm-ppo", 5.0, "a program scores answers: online RL (PPO, GRPO: Shao et al. 2024) optimises it directly"
        yield "dpo", -0.5, "offline pairs waste a reward you can compute on fresh samples"


@rule("latency")
def _latency(s: Situation, f: Facts) -> Effects:
    q = f.cost("zero-shot").query
    if s.latency_ms and q is not None and q.latency_s is not None and q.latency_s * 1000 > s.latency_ms:
        student = f.cost("distill").shape
        name = f" ({student.name})" if student else ""
        yield "distill", 5.0, (f"the model needs ~{q.latency_s * 1000:,.0f} ms per query against a {s.latency_ms} ms budget: "
                               f"a smaller student{name} trained on its answers is faster (Hinton et al. 2015; Kim & Rush 2016)")
        for m in ("few-shot", "rag", "rag+lora"):
            yield m, -1.0, "more prompt tokens make slow queries slower"
    else:
        yield "distill", -1.5, "no latency pressure: a student gives up quality for speed not needed"


@rule("tenants")
def _tenants(s: Situation, f: Facts) -> Effects:
    n = s.tenants * s.tasks
    if n > 1:
        yield "multi-lora", 3.0 + (1.0 if n >= 10 else 0.0), (
            f"{n} tenants/tasks on one base: one small adapter each, swapped or routed per request (S-LoRA, Sheng et al. 2023)")
        yield "lora", -1.0, f"one adapter cannot serve {n} different specialisations"
        yield "full-ft", -2.0, f"a full model copy for each of {n} tenants/tasks"


@rule("forgetting")
def _forgetting(s: Situation, f: Facts) -> Effects:
    if s.forgetting_tolerance == "low":
        yield "full-ft", -2.0, "updates every weight: the most forgetting of general skills (Biderman et al. 2024)"
        yield "cpt-replay", -1.0, "shifts the whole model; replay limits but does not remove forgetting"
        for m in EXTERNAL:
            yield m, 1.0, "weights untouched: nothing is forgotten"
    elif s.forgetting_tolerance == "high":
        yield "full-ft", 1.5, "forgetting matters little here, and full fine-tuning learns the most (Biderman et al. 2024)"


@rule("api-only")
def _api(s: Situation, f: Facts) -> Effects:
    if not s.has_weights:
        yield "few-shot", 1.0, "API-only: the prompt is the lever you have"


@rule("memory")
def _memory(s: Situation, f: Facts) -> Effects:
    lora = f.cost("lora")
    if lora.memory is not None and lora.fits:
        yield "qlora", -1.5, "16-bit LoRA fits: QLoRA's 4-bit base would only cost speed and a little quality"
    for mid, cost in f.costs.items():
        if cost.setup is not None and cost.setup.gradient_checkpointing and cost.fits:
            yield mid, -0.5, "fits only with gradient checkpointing (~33 % slower steps)"


@rule("query-volume")
def _volume(s: Situation, f: Facts) -> Effects:
    if s.queries_per_day and s.queries_per_day >= 100_000:
        for mid, cost in f.costs.items():
            if cost.query is not None and cost.query.added_tokens >= 500:
                yield mid, -1.0, (f"adds {cost.query.added_tokens} tokens to each of {s.queries_per_day:,} queries a day "
                                  f"({cost.query.added_tokens * s.queries_per_day / 1e6:,.0f}M tokens/day)")
        for m in ("lora", "full-ft", "multi-lora"):
            yield m, 0.5, "training pays once instead of in every prompt"


# ---- ranking --------------------------------------------------------------------------------


def rank(s: Situation, facts: Facts | None = None) -> Advice:
    """Score every method; feasible ones best first (ties: the higher prior, i.e. the simpler)."""
    facts = facts or plan(s)
    options = {mid: Option(m, m.prior, cost=facts.cost(mid)) for mid, m in METHODS.items()}
    for rule_id, fn in RULES:
        for mid, delta, text in fn(s, facts):
            options[mid].score += delta
            options[mid].reasons.append(Reason(rule_id, delta, text))
    for opt in options.values():
        opt.blockers = blockers(s, facts, opt.method)
    order = sorted(options.values(), key=lambda o: (-o.score, -o.method.prior))
    return Advice(s, facts, [o for o in order if o.feasible], [o for o in order if not o.feasible])
