"""`attune advise --evidence`: the compare recipe built from the top candidates, the re-ranking
rule by hand, and (slow) a real run on the builtin ticket-triage scenario."""

from __future__ import annotations

import json

import yaml

from attune.advise import Situation, advise, load_situation
from attune.advise.evidence import FULL_FT_LR, Measured, evidence_recipe, rerank, verdict
from attune.recipe import load_recipe, parse_recipe

SCENARIO = "builtin:scenarios/ticket-triage"
RECIPE = "builtin:scenarios/recipes/ticket-triage"


def test_top_candidates_become_stages_from_base_and_strategies():
    advice = advise(load_situation(SCENARIO))
    assert [o.method.id for o in advice.ranked[:3]] == ["lora", "few-shot", "qlora"]
    recipe, skipped, methods = evidence_recipe(advice, load_recipe(RECIPE), top=3, max_examples=5)
    assert methods == ["lora", "few-shot", "qlora", "zero-shot"] and skipped == {}
    assert [c.name for c in recipe.compare] == ["zero-shot", "lora", "few-shot", "qlora"]
    stages = {s.name: s for s in recipe.stages}
    assert set(stages) == {"advise-lora", "advise-qlora"}
    assert all(s.start == "base" for s in stages.values())  # candidates never train on top of each other
    q = stages["advise-qlora"].adapter
    assert q.type == "qlora" and (q.r, q.alpha, q.targets) == (16, 32, "all-linear")  # the recipe's LoRA settings kept
    assert stages["advise-lora"].train.lr == 2e-3 and stages["advise-lora"].sources[0].limit == 48
    few = next(c for c in recipe.compare if c.name == "few-shot")
    assert (few.strategy, few.k, few.selection, few.pool) == ("few-shot", 4, "similarity", "builtin:tickets-train")
    assert few.pool_limit == 48  # the shots come from the same 48 records the LoRA trains on
    assert recipe.evaluate.max_examples == 5 and recipe.evaluate.tasks == ["builtin:tickets"]


def test_full_finetuning_gets_its_own_learning_rate_and_missing_data_is_reported():
    advice = advise(Situation(goal="task", labelled_examples=5000, model_size="1.5b", hardware="h100",
                              forgetting_tolerance="high"))
    assert advice.top.method.id == "full-ft"
    recipe = parse_recipe({"name": "r", "model": "builtin:smollm2-135m-instruct",
                           "stages": [{"objective": "sft", "data": "builtin:tickets-train"}],
                           "evaluate": {"tasks": ["builtin:tickets"]}})
    built, skipped, _ = evidence_recipe(advice, recipe, top=2, max_examples=None)
    full = next(s for s in built.stages if s.name == "advise-full-ft")
    assert full.adapter.type == "full" and full.train.lr == FULL_FT_LR
    knowledge = advise(Situation(goal="knowledge", unlabelled_tokens=10_000, labelled_examples=600,
                                 model="builtin:smollm2-135m-instruct"))
    _, skipped, methods = evidence_recipe(knowledge, recipe, top=2, max_examples=None)
    assert "rag" in skipped and "names no documents" in skipped["rag"]
    assert "rag" not in methods


def _m(method, hits, n=50, train_s=0.0, prompt=100.0, rule_rank=None, drop=0.0):
    """A measured candidate that gets the first `hits` of `n` held-out examples right."""
    scores = [1.0] * hits + [0.0] * (n - hits)
    score = hits / n
    return Measured(method, rule_rank, score, drop, score - drop, [scores], {"train_seconds": train_s, "prompt_tokens_per_query": prompt})


def test_rerank_by_hand():
    # lora 40/50 vs few-shot 39/50, the same examples right but one: not significant -> a tie, both rank 1, cheaper first
    order = rerank([_m("lora", 40, train_s=300, rule_rank=1), _m("few-shot", 39, prompt=500, rule_rank=2), _m("zero-shot", 10)])
    assert [m.method for m in order] == ["few-shot", "lora", "zero-shot"]
    assert [m.evidence_rank for m in order] == [1, 1, 2] and order[0].tied and not order[2].tied
    assert verdict(order).startswith("confirmed as a tie: the rules' first choice lora is statistically tied with few-shot")
    # lora 45/50 vs few-shot 30/50: significant -> lora first despite its cost
    order = rerank([_m("few-shot", 30, rule_rank=2), _m("lora", 45, train_s=300, rule_rank=1)])
    assert [m.method for m in order] == ["lora", "few-shot"] and order[1].p_vs_best < 0.05
    assert verdict(order).startswith("confirmed: the evidence ranks lora first")
    order = rerank([_m("lora", 20, train_s=300, rule_rank=1), _m("few-shot", 35, rule_rank=2)])
    assert verdict(order).startswith("overturned: the rules put lora first, the evidence puts few-shot significantly ahead")
    # forgetting shifts utility: lora's better score (45 vs 40) is undone by a 0.3 probe drop
    order = rerank([_m("lora", 45, rule_rank=1, drop=0.3), _m("few-shot", 40, rule_rank=2)])
    assert order[0].method == "few-shot" and not order[1].tied


def test_evidence_on_the_builtin_scenario(tmp_path):
    """`attune advise --situation builtin:scenarios/ticket-triage --evidence ...` trains, scores and re-ranks."""
    from typer.testing import CliRunner

    from attune.builtin import builtin_path
    from attune.cli import app

    spec = yaml.safe_load(builtin_path(RECIPE).read_text())
    spec["output_dir"] = str(tmp_path / "runs")
    spec["stages"][0]["data"]["limit"] = 24
    spec["stages"][0]["train"].update(max_steps=3, batch_tokens=512)
    recipe = tmp_path / "evidence.yaml"
    recipe.write_text(yaml.safe_dump(spec))
    out = tmp_path / "advice.md"
    res = CliRunner().invoke(app, ["advise", "--situation", SCENARIO, "--evidence", str(recipe), "--top", "2",
                                   "--max-examples", "6", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "## Evidence (measured on your held-out data)" in text and "**Verdict**: " in text
    ev = json.loads(next((tmp_path / "runs").glob("*/*/advice-evidence.json")).read_text())
    assert {m["method"] for m in ev["measured"]} == {"lora", "few-shot", "zero-shot"}
    # on 6 examples the three may be statistically tied (all rank 1); whatever the data, the tied share rank 1
    # and the rest follow 2, 3, ... by utility
    tied = [m for m in ev["measured"] if m["tied"]]
    rest = sorted((m for m in ev["measured"] if not m["tied"]), key=lambda m: -m["utility"])
    assert tied and all(m["evidence_rank"] == 1 for m in tied)
    assert [m["evidence_rank"] for m in rest] == list(range(2, 2 + len(rest)))
    assert ev["verdict"].startswith(("confirmed", "overturned"))
    assert all("p_vs_best" in m and "ci" in m for m in ev["measured"])
    lora = next(m for m in ev["measured"] if m["method"] == "lora")
    assert lora["cost"]["train_seconds"] > 0
    # the rules' order of the top two depends on this machine's measured speed (the probe), not on the data
    assert sorted(m["rule_rank"] for m in ev["measured"] if m["method"] in ("lora", "few-shot")) == [1, 2]


def test_rag_candidates_take_the_recipes_documents():
    advice = advise(load_situation("builtin:scenarios/northwind-support"))
    assert advice.top.method.id == "rag"
    recipe, skipped, methods = evidence_recipe(advice, load_recipe("builtin:scenarios/recipes/northwind-support"), 3, None)
    rag = next(c for c in recipe.compare if c.name == "rag")
    assert (rag.strategy, rag.index, rag.k) == ("rag", "builtin:corpora/northwind", 3)
    assert methods[:2] == ["rag", "zero-shot"] and recipe.evaluate.forgetting == "builtin:general-probe"
    cpt = next(s for s in recipe.stages if s.objective == "cpt")
    assert cpt.start == "base" and cpt.sources[0].path == "builtin:corpora/northwind"



def test_rl_and_distill_candidates_bring_the_stages_they_name():
    ppo = advise(Situation(goal="behaviour", preference_pairs=200, reward_function=True, prompts=200,
                           model="builtin:smollm2-135m-instruct"))
    assert ppo.top.method.id == "rm-ppo"
    from attune.builtin import builtin_path

    spec = yaml.safe_load(builtin_path("builtin:recipes/align-ppo").read_text()) | {"evaluate": {"tasks": ["builtin:tickets"]}}
    recipe, _, _ = evidence_recipe(ppo, parse_recipe(spec), top=1, max_examples=4)
    stages = {s.name: s for s in recipe.stages}
    assert list(stages) == ["reward", "advise-rm-ppo"]
    assert stages["advise-rm-ppo"].objective == "ppo" and stages["advise-rm-ppo"].reward_model == "reward"
    assert all(s.start == "base" for s in recipe.stages)
    spec = yaml.safe_load(builtin_path("builtin:recipes/align-grpo").read_text()) | {"evaluate": {"tasks": ["builtin:tickets"]}}
    recipe, _, _ = evidence_recipe(ppo, parse_recipe(spec), top=1, max_examples=4)
    assert [s.objective for s in recipe.stages] == ["grpo"]  # a Python reward: nothing else to train
    slow = advise(Situation(goal="task", labelled_examples=300, latency_ms=100, model="builtin:smollm2-135m-instruct"))
    assert slow.top.method.id == "distill" and "truncated to 12 layers" in slow.top.cost.shape.name
    recipe, _, _ = evidence_recipe(slow, load_recipe("builtin:recipes/distill-tickets"), top=1, max_examples=4)
    assert [(s.name, s.objective) for s in recipe.stages] == [("teacher", "sft"), ("advise-distill", "distill")]
    assert recipe.stage("advise-distill").teacher == "teacher"
