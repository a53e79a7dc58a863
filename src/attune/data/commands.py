"""`attune data check` and `attune data inspect`: parse arguments, call `attune.data`, print."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from attune.errors import AttuneError

app = typer.Typer(help="Validate and look at training data.", no_args_is_help=True)
console = Console()

FORMAT_HELP = "auto|chat|instruction|completion|preference|prompt|text (chat also reads ShareGPT)"


@app.command("check")
def check(
    files: list[Path] = typer.Argument(..., help="data files (.jsonl .json .csv .parquet .txt .md), folders or builtin:NAME"),
    format: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="tokenize with this model's template to check lengths"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="with --model: flag records longer than this (default 1024)"),
) -> None:
    """Validate every record: each bad one is listed as file:line: field: problem (exit 1); a clean file prints counts per kind (exit 0)."""
    from attune.builtin import resolve_path
    from attune.data.check import check_file

    if max_length is not None and model is None:
        raise AttuneError("--max-length needs --model (lengths are counted in that model's tokens)")
    tokenizer = None
    if model is not None:
        from attune.models import load_tokenizer

        tokenizer = load_tokenizer(model)
        max_length = max_length or 1024
    failed = False
    for f in files:
        report = check_file(resolve_path(str(f)), format, tokenizer, max_length)
        table = Table(title=str(report.path))
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


def _highlighted(tokenizer: Any, ids: list[int], labels: list[int], learn_style: str = "bold green") -> Text:
    text = Text()
    for tok, label in zip(ids, labels):
        text.append(tokenizer.decode([tok]), style=learn_style if label != -100 else "dim")
    return text


def _show(tokenizer: Any, record: Any, max_length: int) -> None:
    from attune.data.render import encode_preference, encode_prompt, encode_record

    if record.kind == "preference":
        enc = encode_preference(tokenizer, record, max_length=max_length)
        console.print(_highlighted(tokenizer, enc.prompt_ids, [-100] * len(enc.prompt_ids)))
        console.print(Text("chosen:   ", style="bold") + _highlighted(tokenizer, enc.chosen_ids, enc.chosen_ids))
        console.print(Text("rejected: ", style="bold") + _highlighted(tokenizer, enc.rejected_ids, enc.rejected_ids, "bold red"))
    elif record.kind == "prompt":
        ids = encode_prompt(tokenizer, record.prompt)
        console.print(_highlighted(tokenizer, ids, [-100] * len(ids)))
        if record.answer is not None:
            console.print(Text("reference answer: ", style="bold") + Text(record.answer))
    else:
        enc = encode_record(tokenizer, record, max_length=max_length)
        console.print(_highlighted(tokenizer, enc.input_ids, enc.labels))


@app.command("inspect")
def inspect(
    file: Path = typer.Argument(..., help="a data file, folder or builtin:NAME"),
    model: str = typer.Option("builtin:smollm2-135m-instruct", "--model", "-m", help="whose tokenizer and chat template to use"),
    n: int = typer.Option(3, "-n", help="examples to show"),
    format: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    max_length: int = typer.Option(1024, "--max-length", help="report the share of records longer than this"),
) -> None:
    """Show rendered examples (supervised tokens in green, dim = no loss) and token-length statistics."""
    import statistics

    from attune.builtin import resolve_path
    from attune.data import load_records
    from attune.data.check import token_length
    from attune.models import load_tokenizer

    tokenizer = load_tokenizer(model)
    records = load_records(resolve_path(str(file)), format=format)
    for record in records[:n]:
        console.rule(f"{record.source} ({record.kind})")
        _show(tokenizer, record, max_length)
    lengths = sorted(token_length(tokenizer, r) for r in records)
    p95 = lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))]
    over = sum(1 for x in lengths if x > max_length)
    table = Table(title=f"token lengths ({model})")
    for column in ("records", "min", "median", "p95", "max", f"over {max_length}"):
        table.add_column(column, justify="right")
    table.add_row(str(len(lengths)), str(lengths[0]), f"{statistics.median(lengths):.0f}", str(p95), str(lengths[-1]),
                  f"{over} ({100 * over / len(lengths):.1f}%)")
    console.rule()
    console.print(table)
