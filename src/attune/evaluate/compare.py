"""`attune compare`: every candidate of a recipe on the same tasks, with forgetting and cost.

A candidate is a prompting strategy over the base model, a trained stage (its adapter on the
base it was trained on), or both (adapter + few-shot). Models are loaded once per distinct
(model, adapter) pair and shared by the strategies that use them. Forgetting is the drop of the
general-skills probe against the base model; prompting leaves weights alone, so strategies over
the base share the base's probe score.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from attune.errors import AttuneError
from attune.evaluate.report import write_report
from attune.evaluate.results import CandidateResult, CompareResult
from attune.evaluate.runner import run_task
from attune.evaluate.tasks import Task, load_task
from attune.recipe import Candidate, Recipe

console = Console(stderr=True)


def candidate_name(c: Candidate) -> str:
    if c.name:
        return c.name
    parts = [c.stage or (Path(c.adapter).name if c.adapter else None), c.strategy]
    if c.strategy == "few-shot":
        parts[-1] = f"few-shot k={c.k or 4}" + (f" {c.selection}" if c.selection else "")
    return " + ".join(p for p in parts if p) or (c.model or "base")


def _resolve(recipe: Recipe, c: Candidate, run_dir: Path | None) -> tuple[str, str | None, dict[str, Any]]:
    """(model ref, adapter dir, cost facts) for a candidate."""
    if c.stage:
        from attune.runs import stage_output

        assert run_dir is not None
        out = stage_output(run_dir, c.stage)
        summary = out.summary
        cost = {k: summary.get(k) for k in ("trainable_params", "train_seconds", "tokens_seen")}
        if out.adapter is not None:
            return summary["base_model"], str(out.adapter), cost
        return str(out.model), None, cost
    return c.model or recipe.model, c.adapter, {"trainable_params": 0, "train_seconds": 0, "tokens_seen": 0}


def training_logs(recipe: Recipe, run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every trained stage's metrics.jsonl rows, in stage order (for the report's curves)."""
    from attune.runs import stage_dir

    logs = {}
    for stage in recipe.stages:
        file = stage_dir(run_dir, str(stage.name)) / "metrics.jsonl"
        if file.is_file():
            logs[str(stage.name)] = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return logs


def _pool(recipe: Recipe, c: Candidate) -> list[dict] | None:
    from attune.evaluate.pools import pool_from_path

    if c.pool:
        return pool_from_path(c.pool, recipe.base_dir, limit=c.pool_limit)
    first = next((s for s in recipe.stages if s.sources), None)
    if first is None:
        return None
    source = first.sources[0]  # the records training sees: its `limit:` holds for the shots too
    return pool_from_path(source.path, recipe.base_dir, limit=c.pool_limit or source.limit)


def load_probe(ref: str | None) -> list[Task]:
    """The forgetting probe: a YAML listing task files (or one task file)."""
    if not ref:
        return []
    import yaml

    from attune.builtin import resolve_path

    path = resolve_path(ref)
    if not path.is_file():
        raise AttuneError(f"forgetting probe {ref!r} not found")
    spec = yaml.safe_load(path.read_text())
    if isinstance(spec, dict) and "tasks" in spec:
        return [load_task(resolve_path(t, path.parent)) for t in spec["tasks"]]
    return [load_task(path)]


def probe_scores(generator, probe: list[Task]) -> dict[str, float]:
    """`task/metric` -> value: the first metric of each scored probe task, the perplexity of a text one.

    The probe always runs zero-shot: it measures what the weights still know, not a prompt.
    """
    from attune.prompting import StrategyContext, build_strategy

    scores = {}
    for task in probe:
        strategy = build_strategy("zero-shot", {}, StrategyContext(template=task.spec.template, system=task.spec.system))
        result = run_task(generator, task, strategy)
        key = "perplexity" if task.spec.kind == "perplexity" else next(iter(result.metrics))
        scores[f"{task.name}/{key}"] = result.metrics[key]
    return scores


def run_compare(recipe: Recipe, run_dir: Path | None = None, *, out_dir: Path | None = None) -> CompareResult:
    """Score every candidate; trains the recipe first when a candidate needs a stage and no run is given."""
    from attune.models import load_generator
    from attune.prompting import StrategyContext, build_strategy

    if not recipe.compare:
        raise AttuneError(f"recipe {recipe.name!r} has no `compare:` candidates")
    if recipe.evaluate is None or not recipe.evaluate.tasks:
        raise AttuneError(f"recipe {recipe.name!r}: compare needs `evaluate: {{tasks: [...]}}`")
    tasks = [load_task(recipe.path(t)) for t in recipe.evaluate.tasks]  # validated before any model loads
    for t in tasks:
        if recipe.evaluate.max_examples:
            t.examples = t.examples[: recipe.evaluate.max_examples]
    probe = load_probe(recipe.evaluate.forgetting)
    if any(c.stage for c in recipe.compare) and run_dir is None:
        from attune.train.pipeline import run_recipe

        run_dir = run_recipe(recipe)
    if run_dir is None:
        from attune.runs import new_run_dir

        run_dir = new_run_dir(Path(recipe.output_dir), recipe.name)
    run_dir = Path(run_dir)

    generators: dict[tuple[str, str | None], Any] = {}
    probes: dict[tuple[str, str | None], dict[str, float]] = {}
    results = []
    for c in recipe.compare:
        name = candidate_name(c)
        model, adapter, cost = _resolve(recipe, c, run_dir)
        key = (model, adapter)
        if key not in generators:
            console.print(f"[dim]loading {model}{' + ' + adapter if adapter else ''} ...[/dim]")
            generators[key] = load_generator(model, adapter)
        gen = generators[key]
        strategy_name = c.strategy or "zero-shot"
        options = c.model_dump(exclude_none=True)
        task_results = []
        for task in tasks:
            ctx = StrategyContext(
                pool=_pool(recipe, c) if strategy_name == "few-shot" else None,
                base_dir=recipe.base_dir, seed=recipe.seed, system=c.system or task.spec.system, template=task.spec.template,
            )
            strategy = build_strategy(strategy_name, {"answer": task.spec.answer, **options}, ctx)
            t0 = time.perf_counter()
            task_results.append(run_task(gen, task, strategy, seed=recipe.seed))
            console.print(f"  {name} · {task.name}: {task_results[-1].metrics} ({time.perf_counter() - t0:.0f}s)")
        if probe and key not in probes:
            t0 = time.perf_counter()
            probes[key] = probe_scores(gen, probe)
            console.print(f"  {name} · general-skills probe: {probes[key]} ({time.perf_counter() - t0:.0f}s)")
        cost.update(
            prompt_tokens_per_query=round(sum(t.prompt_tokens_per_query for t in task_results) / len(task_results), 1),
            latency_per_query=round(sum(t.latency_per_query for t in task_results) / len(task_results), 3),
        )
        results.append(CandidateResult(name, model, adapter, strategy_name, task_results, probes.get(key, {}), cost, c.stage))
    base_key = (recipe.model, None)
    if probe and base_key not in probes:
        probes[base_key] = probe_scores(generators.get(base_key) or load_generator(recipe.model), probe)
    stages = {str(s.name): s for s in recipe.stages}
    result = CompareResult(recipe.name, run_dir, results, probes.get(base_key, {}), training_logs(recipe, run_dir), stages)
    write_report(result, out_dir or run_dir)
    return result
