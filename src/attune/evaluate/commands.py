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
    from attune.api import evaluate

    options = {"k": k, "selection": selection, "pool": pool, "index": index, "system": system, "answer": answer}
    with console.status(f"evaluating {len(tasks)} task(s) ..."):
        result = evaluate(tasks, model=model, adapter=adapter, strategy=strategy, limit=limit, options=options)
    results = result.tasks
    table = Table(title=f"{model} · {strategy}")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("score", justify="right")
    for r in results:
        for name, value in r.metrics.items():
            table.add_row(r.task, name, f"{value:.3f}")
    console.print(table)
    if out:
        out.write_text(json.dumps(result.to_dict(), indent=2, default=str))
        console.print(f"results written to {out}")


def compare_command(
    recipe: str = typer.Argument(..., help="recipe YAML with `compare:` candidates (or builtin:NAME)"),
    run: Optional[Path] = typer.Option(None, "--run", help="use this trained run instead of training first"),
) -> None:
    """Score every candidate (prompting, trained stages, both) on the same tasks; write compare.json and a report."""
    from attune.api import compare
    from attune.evaluate.report import table_rows, verdict_text

    result = compare(recipe, run=run)
    header, rows = table_rows(result)
    table = Table(title=f"compare: {result.recipe}")
    for h in header:
        table.add_column(h, justify="left" if h == "candidate" else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print(f"[bold]Verdict[/bold]: {verdict_text(result)}", highlight=False)
    console.print(f"report: [bold]{result.run_dir / 'report.html'}[/bold] (and report.md, compare.json)")
