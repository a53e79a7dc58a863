"""`attune eval` and `attune compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=None if Console().is_terminal else 160)


def eval_command(
    tasks: list[str] = typer.Argument(..., help="task YAML files (or builtin:NAME, e.g. builtin:tickets)"),
    model: str = typer.Option("builtin:smollm2-135m-instruct", "--model", "-m", help="model reference"),
    adapter: Optional[str] = typer.Option(None, "--adapter", "-a", help="PEFT adapter directory"),
    strategy: str = typer.Option("zero-shot", "--strategy", "-s", help="zero-shot | few-shot | cot | rag"),
    k: int = typer.Option(4, "--k", help="few-shot examples / RAG passages"),
    selection: str = typer.Option("similarity", "--selection", help="few-shot: random | similarity"),
    pool: Optional[str] = typer.Option(None, "--pool", help="few-shot pool: a task or data file"),
    index: Optional[str] = typer.Option(None, "--index", help="rag: an index directory"),
    system: Optional[str] = typer.Option(None, "--system", help="system prompt"),
    answer: Optional[str] = typer.Option(
        None, "--answer", help="rag: generative | extractive (quote the best passage sentence) | auto (extractive for readers "
        "under 1B parameters); default: the task's `answer:`, else auto"
    ),
    limit: Optional[int] = typer.Option(None, "--limit", help="first N examples per task"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write results (with every example) as JSON"),
) -> None:
    """Score a model (+ adapter, + prompting strategy) on eval tasks; tasks are validated before the model loads."""
    from attune.evaluate.pools import pool_from_path
    from attune.evaluate.runner import run_task
    from attune.evaluate.tasks import load_task
    from attune.models import load_generator
    from attune.prompting import StrategyContext, build_strategy

    loaded = [load_task(t) for t in tasks]
    for task in loaded:
        if limit:
            task.examples = task.examples[:limit]
    context = StrategyContext(pool=pool_from_path(pool) if pool else None, base_dir=Path("."))
    options = {"k": k, "selection": selection, "index": index, "system": system}
    generator = load_generator(model, adapter)
    results = []
    for task in loaded:
        task_context = StrategyContext(
            pool=context.pool, base_dir=context.base_dir, system=system or task.spec.system, template=task.spec.template
        )
        strat = build_strategy(strategy, {**options, "answer": answer or task.spec.answer}, task_context)
        with console.status(f"{task.name}: {len(task.examples)} examples ..."):
            results.append(run_task(generator, task, strat))
    table = Table(title=f"{generator.name} · {strategy}")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("score", justify="right")
    for r in results:
        for name, value in r.metrics.items():
            table.add_row(r.task, name, f"{value:.3f}")
    console.print(table)
    if out:
        payload = {"model": model, "adapter": adapter, "strategy": strategy, "results": [r.to_dict() for r in results]}
        out.write_text(json.dumps(payload, indent=2, default=str))
        console.print(f"results written to {out}")


def compare_command(
    recipe: str = typer.Argument(..., help="recipe YAML with `compare:` candidates (or builtin:NAME)"),
    run: Optional[Path] = typer.Option(None, "--run", help="use this trained run instead of training first"),
) -> None:
    """Score every candidate (prompting, trained stages, both) on the same tasks; write compare.json and a report."""
    from attune.evaluate.compare import run_compare
    from attune.evaluate.report import table_rows, verdict_text
    from attune.recipe import load_recipe

    result = run_compare(load_recipe(recipe), run)
    header, rows = table_rows(result)
    table = Table(title=f"compare: {result.recipe}")
    for h in header:
        table.add_column(h, justify="left" if h == "candidate" else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print(f"[bold]Verdict[/bold]: {verdict_text(result)}", highlight=False)
    console.print(f"report: [bold]{result.run_dir / 'report.html'}[/bold] (and report.md, compare.json)")
