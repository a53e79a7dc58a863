"""`attune rag index | search | ask | eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from attune.errors import AttuneError

app = typer.Typer(help="Retrieval-augmented generation: index documents, search them, answer with citations.", no_args_is_help=True)
console = Console(width=None if Console().is_terminal else 160)


def _filters(pairs: list[str]) -> dict[str, list[str]] | None:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AttuneError(f"--filter {pair!r}: expected FIELD=VALUE (repeat a field for any of several values)")
        out.setdefault(key, []).append(value)
    return out or None


@app.command("index")
def index_command(
    paths: list[str] = typer.Argument(..., help="files or folders (.md .txt .rst .html .pdf .jsonl), or builtin:corpora/NAME"),
    index: Path = typer.Option(..., "--index", "-i", help="index directory (created, or updated incrementally)"),
    embedder: str = typer.Option("builtin:minilm", "--embedder", help="builtin:minilm or a local sentence-transformers dir"),
    store: str = typer.Option("faiss", "--store", help="faiss (embedded) | pgvector[:postgresql://...] (server)"),
    chunk_tokens: int = typer.Option(200, "--chunk-tokens", help="largest chunk, in embedder tokens"),
    overlap: int = typer.Option(32, "--overlap", help="tokens a chunk repeats from the previous one in the same section"),
) -> None:
    """Index documents; unchanged documents are not embedded again, and the previous index stays live until the new one is complete."""
    from rich.progress import Progress

    from attune.rag import ChunkOptions, build_index

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("embedding", total=None)
        report = build_index(
            paths, index, embedder, chunking=ChunkOptions(chunk_tokens, overlap), store=store,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    console.print(
        f"indexed {report.documents} documents as {report.chunks} chunks into {index} in {report.seconds:.1f}s: "
        f"{len(report.added)} added, {len(report.changed)} changed, {len(report.removed)} removed, {report.unchanged} unchanged; "
        f"{report.embedded} chunks embedded" + (f" ({report.full_rebuild_reason})" if report.full_rebuild_reason else "")
    )
    for s in report.skipped:
        console.print(f"[yellow]skipped[/yellow] {s.path}: {s.reason}", markup=True, highlight=False)


@app.command("search")
def search_command(
    query: str = typer.Argument(..., help="the search query"),
    index: Path = typer.Option(..., "--index", "-i", help="index directory"),
    k: int = typer.Option(5, "--k", "-k", help="passages to return"),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid | dense | bm25"),
    filters: list[str] = typer.Option([], "--filter", help="FIELD=VALUE on doc or chunk metadata (repeatable)"),
    rerank: Optional[str] = typer.Option(None, "--rerank", help="a local cross-encoder model dir to rerank with"),
    as_json: bool = typer.Option(False, "--json", help="print passages as JSON lines"),
) -> None:
    """Retrieve passages only (no model)."""
    from attune.rag import open_index

    hits = open_index(index, rerank).search(query, k, mode=mode, filters=_filters(filters))  # type: ignore[arg-type]
    if as_json:
        for p in hits:
            print(json.dumps(p.to_dict(), ensure_ascii=False))
        return
    if not hits:
        console.print("no passages matched")
    for n, p in enumerate(hits, 1):
        scores = " ".join(f"{name}={value:.3f}" for name, value in p.scores.items())
        console.print(f"[bold][{n}] {p.doc}[/bold] [dim]{p.id} {scores}[/dim]", highlight=False)
        console.print(p.text, markup=False, highlight=False)
        console.print()


@app.command("ask")
def ask_command(
    question: str = typer.Argument(..., help="the question"),
    index: Path = typer.Option(..., "--index", "-i", help="index directory"),
    model: str = typer.Option("builtin:smollm2-135m-instruct", "--model", "-m", help="model reference"),
    adapter: Optional[str] = typer.Option(None, "--adapter", "-a", help="PEFT adapter directory"),
    k: int = typer.Option(4, "--k", "-k", help="passages to put in the prompt"),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid | dense | bm25"),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="'I don't know' needs cosine similarity below this (default 0.3) and keyword coverage below --coverage"
    ),
    coverage: Optional[float] = typer.Option(
        None, "--coverage", help="IDF-weighted share of the question's keywords in one passage (default 0.5)"
    ),
    rerank: Optional[str] = typer.Option(
        None, "--rerank", help="a local cross-encoder model dir to rerank with (also picks extractive sentences)"
    ),
    answer: str = typer.Option(
        "auto", "--answer", help="generative (the model writes) | extractive (quote the best sentence of a passage) | "
        "auto (extractive for local readers under 1B parameters)"
    ),
    max_tokens: int = typer.Option(160, "--max-tokens"),
    as_json: bool = typer.Option(False, "--json", help="print the answer, sources and passages as JSON"),
) -> None:
    """Answer a question from the index, with numbered citations and their sources."""
    from attune.models import GenerationParams, load_generator
    from attune.rag import answer_question, open_index
    from attune.rag.answer import ANSWER_MODES, DEFAULT_COVERAGE, DEFAULT_THRESHOLD

    if answer not in ANSWER_MODES:
        raise AttuneError(f"--answer {answer!r}: expected one of {', '.join(ANSWER_MODES)}")
    rag_index = open_index(index, rerank)
    result = answer_question(
        rag_index, question, load_generator(model, adapter), k, GenerationParams(max_new_tokens=max_tokens),
        mode=mode, threshold=DEFAULT_THRESHOLD if threshold is None else threshold,  # type: ignore[arg-type]
        coverage=DEFAULT_COVERAGE if coverage is None else coverage, answer=answer,
    )
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
        return
    console.print(result.answer, markup=False, highlight=False)
    if result.abstained and result.prompt is None:
        console.print(
            f"[dim](nothing relevant in the index: best similarity {result.relevance:.2f}, "
            f"keyword coverage {result.coverage:.2f})[/dim]"
        )
    for n, p in zip(result.citations, result.sources):
        console.print(f"[bold][{n}][/bold] {p.doc} — {p.metadata.get('section', '')} [dim]({p.id})[/dim]", highlight=False)
    if result.dropped_citations:
        console.print(f"[dim]{result.dropped_citations} citation(s) to passages that do not exist were removed[/dim]")


def _table(title: str, results: dict[str, dict[str, float]]) -> Table:
    table = Table(title=title)
    metrics = list(next(iter(results.values())))
    table.add_column("retriever")
    for m in metrics:
        table.add_column(m, justify="right")
    for mode, row in results.items():
        table.add_row(mode, *(f"{row[m]:.3f}" for m in metrics))
    return table


@app.command("eval")
def eval_command(
    task: str = typer.Argument(..., help="a retrieval task YAML (e.g. builtin:northwind-retrieval)"),
    index: Optional[Path] = typer.Option(None, "--index", "-i", help="index directory (default: index the task's corpus)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="also answer every query with this model and score the answers"),
    k: int = typer.Option(4, "--k", "-k", help="passages per answer"),
    answer: str = typer.Option("auto", "--answer", help="generative | extractive | auto (as `rag ask`)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the results as JSON"),
) -> None:
    """Retrieval metrics (hit@k, recall, MRR, nDCG) for dense, BM25 and hybrid; with --model, answer scores and citation precision."""
    from attune.rag.evaluation import evaluate_answers, evaluate_retrieval, load_retrieval_task
    from attune.rag.strategy import index_for

    spec = load_retrieval_task(task)
    if index is None and spec.corpus is None:
        raise AttuneError(f"task {spec.spec.name!r} names no corpus; give --index")
    rag_index = index_for(str(index or spec.corpus))
    results = evaluate_retrieval(rag_index, spec)
    console.print(_table(f"{spec.spec.name}: {len(spec.examples)} queries, {len(rag_index)} chunks", results))
    payload: dict = {"task": spec.spec.name, "retrieval": results}
    if model:
        from attune.models import load_generator

        answers = evaluate_answers(rag_index, spec, load_generator(model), k, answer=answer)
        payload["answers"] = answers
        summary = {key: value for key, value in answers.items() if key not in ("rows", "mode")}
        console.print(f"answers ({model}, k={k}, {answers['mode']}): " + ", ".join(
            f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}" for key, value in summary.items()
        ))
    if out:
        out.write_text(json.dumps(payload, indent=1, default=str))
        console.print(f"results written to {out}")
