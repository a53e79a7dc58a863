"""`attune demo` (what `make demo` runs): train a LoRA on the builtin ticket data and show it worked.

It runs `attune compare builtin:recipes/demo`: the base model zero-shot against the base model
with the freshly trained adapter, on held-out tickets, and prints the score before and after,
where the adapter is, and where the report is.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

DEMO_RECIPE = "builtin:recipes/demo"


def run_demo() -> None:
    from attune.evaluate.compare import run_compare
    from attune.evaluate.report import table_rows
    from attune.recipe import load_recipe

    console = Console(width=None if Console().is_terminal else 160)
    recipe = load_recipe(DEMO_RECIPE)
    console.rule("[bold]attune demo")
    console.print(
        f"Task: triage support tickets into strict JSON. Model: {recipe.model}.\n"
        "Step 1 trains a LoRA adapter on builtin:tickets-train; step 2 scores the base model and the\n"
        "adapted model on held-out tickets (builtin:tickets)."
    )
    result = run_compare(recipe)
    header, rows = table_rows(result)
    table = Table(title="held-out tickets")
    for h in header:
        table.add_column(h, justify="left" if h == "candidate" else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    before, after = result.candidates[0], result.candidates[-1]
    metric = next(iter(before.tasks[0].metrics))
    console.print(
        f"[bold]{metric}: {before.tasks[0].metrics[metric]:.3f} before -> {after.tasks[0].metrics[metric]:.3f} after[/bold]"
    )
    console.print(f"adapter (PEFT format): {after.adapter}")
    console.print(f"report: {result.run_dir / 'report.html'} (and report.md, compare.json)")
    console.print(f"try it: attune chat --adapter {after.adapter}")
