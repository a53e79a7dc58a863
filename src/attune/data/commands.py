"""`attune data check` and `attune data inspect`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

app = typer.Typer(help="Validate and look at training data.", no_args_is_help=True)
console = Console()


@app.command("check")
def check(
    files: list[Path] = typer.Argument(..., help="data files (.jsonl .json .csv .parquet .txt .md) or folders"),
    format: str = typer.Option("auto", "--format", "-f", help="chat|sharegpt|instruction|completion|preference|prompt|text"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="tokenize with this model to check lengths"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="flag records longer than this many tokens"),
) -> None:
    """Report every bad record with file:line and field (exit 1), or counts per kind (exit 0)."""
    from attune.builtin import resolve_path
    from attune.data.check import check_file

    tokenizer = None
    if model is not None:
        from attune.models import load_tokenizer

        tokenizer = load_tokenizer(model)
        max_length = max_length or 1024
    failed = False
    for f in files:
        report = check_file(resolve_path(str(f)), format, tokenizer, max_length)
        table = Table(title=str(report.path), show_header=True)
        table.add_column("kind")
        table.add_column("records", justify="right")
        for kind, n in sorted(report.counts.items()):
            table.add_row(kind, str(n))
        console.print(table)
        for p in report.problems:
            console.print(Text("✗ ", style="red") + Text(str(p)), soft_wrap=True)
        if report.problems:
            failed = True
            console.print(f"[bold red]{len(report.problems)} problem(s)[/bold red] in {report.path}")
        else:
            console.print(f"[green]ok[/green]: {sum(report.counts.values())} records")
    raise typer.Exit(1 if failed else 0)


@app.command("inspect")
def inspect(
    file: Path = typer.Argument(..., help="a data file"),
    model: str = typer.Option("builtin:smollm2-135m-instruct", "--model", "-m", help="whose chat template to use"),
    n: int = typer.Option(3, "-n", help="examples to show"),
    max_length: int = typer.Option(1024, "--max-length"),
) -> None:
    """Show rendered examples with supervised tokens highlighted, and token-length statistics."""
    import statistics

    from attune.builtin import resolve_path
    from attune.data import load_records
    from attune.data.check import _length
    from attune.data.render import encode_record
    from attune.models import load_tokenizer

    tokenizer = load_tokenizer(model)
    records = load_records(resolve_path(str(file)))
    for record in records[:n]:
        console.rule(record.source)
        if record.kind in ("chat", "completion", "text"):
            enc = encode_record(tokenizer, record, max_length=max_length)
            text = Text()
            for tok, label in zip(enc.input_ids, enc.labels):
                text.append(tokenizer.decode([tok]), style="bold green" if label != -100 else "dim")
            console.print(text)
        else:
            console.print(record)
    lengths = sorted(_length(tokenizer, r, max_length) for r in records)
    p95 = lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))]
    over = sum(1 for x in lengths if x > max_length)
    console.rule("token lengths")
    console.print(
        f"{len(lengths)} records: min {lengths[0]}, median {statistics.median(lengths):.0f}, p95 {p95}, max {lengths[-1]}; "
        f"{over} ({100 * over / len(lengths):.1f}%) over max length {max_length}  "
        "[dim](green = supervised tokens)[/dim]"
    )
