"""Score retrieval (and optionally grounded answers) on a retrieval task.

A retrieval task is a small YAML next to its JSONL, like `builtin:tasks/northwind-retrieval`:

    name: northwind-retrieval
    kind: retrieval
    data: ../data/northwind-questions.jsonl
    corpus: ../corpora/northwind     # what to index when no --index is given
    query: question                  # field with the query
    relevant: doc                    # field with the relevant document name (or a list of names)
    answer: answer                   # optional: the answer text
    k: [1, 5]

Relevance is scored twice: per document (a hit is any chunk of a relevant document) and, when
answers are given, per passage (a hit is a chunk of a relevant document that contains the
answer), which is what a reader actually needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from attune.config import StrictModel
from attune.errors import AttuneError
from attune.rag.metrics import citation_precision, contains_answer, hit_at_k, ndcg_at_k, recall_at_k, reciprocal_rank
from attune.rag.retrieve import MODES, RagIndex


class RetrievalTaskSpec(StrictModel):
    name: str
    kind: str = Field("retrieval", pattern="^retrieval$")
    data: str = Field(description="JSONL file, relative to the task file (or builtin:NAME)")
    corpus: str | None = Field(None, description="documents to index when no index is given")
    query: str = "query"
    relevant: str = Field("doc", description="field with the relevant document name(s)")
    answer: str | None = Field(None, description="field with the answer text (enables passage-level relevance)")
    k: list[int] = Field(default_factory=lambda: [1, 5])


@dataclass
class RetrievalTask:
    spec: RetrievalTaskSpec
    examples: list[dict[str, Any]]  # query, relevant (set of docs), answer (str | None)
    path: Path

    @property
    def corpus(self) -> Path | None:
        from attune.builtin import resolve_path

        return resolve_path(self.spec.corpus, self.path.parent) if self.spec.corpus else None


def load_retrieval_task(path: str | Path) -> RetrievalTask:
    from attune.builtin import resolve_path

    file = resolve_path(str(path))
    if not file.is_file():
        raise AttuneError(f"{file}: retrieval task not found")
    try:
        spec = RetrievalTaskSpec.model_validate(yaml.safe_load(file.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise AttuneError(f"{file}: invalid retrieval task: {exc}") from None
    data = resolve_path(spec.data, file.parent)
    if not data.is_file():
        raise AttuneError(f"{file}: data file {data} not found")
    from attune.data.readers import iter_rows
    from attune.data.records import Problem

    examples = []
    for where, row in iter_rows(data):
        if isinstance(row, Problem):
            raise AttuneError(f"{where}: {row.message}")
        for f in [spec.query, spec.relevant] + ([spec.answer] if spec.answer else []):
            if f not in row:
                raise AttuneError(f"{where}: field {f!r} (mapped in task {spec.name!r}) is missing; fields: {sorted(row)}")
        relevant = row[spec.relevant]
        examples.append({
            "query": str(row[spec.query]),
            "relevant": set(relevant) if isinstance(relevant, list) else {relevant},
            "answer": str(row[spec.answer]) if spec.answer else None,
        })
    if not examples:
        raise AttuneError(f"{file}: no examples in {data}")
    return RetrievalTask(spec, examples, file)


def _scores(ranking: list, relevant: set, ks: list[int], prefix: str = "") -> dict[str, float]:
    out = {f"{prefix}hit@{k}": hit_at_k(ranking, relevant, k) for k in ks}
    out[f"{prefix}recall@{max(ks)}"] = recall_at_k(ranking, relevant, max(ks))
    out[f"{prefix}mrr"] = reciprocal_rank(ranking, relevant)
    out[f"{prefix}ndcg@{max(ks)}"] = ndcg_at_k(ranking, relevant, max(ks))
    return out


def evaluate_retrieval(index: RagIndex, task: RetrievalTask, modes: tuple[str, ...] = MODES) -> dict[str, dict[str, float]]:
    """Mean metrics per retrieval mode: document-level, and passage-level (`passage_*`) when answers are known."""
    depth = max(task.spec.k)
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        sums: dict[str, float] = {}
        for ex in task.examples:
            hits = index.search(ex["query"], depth, mode=mode)  # type: ignore[arg-type]
            row = _scores([p.doc for p in hits], ex["relevant"], task.spec.k)
            if ex["answer"] is not None:
                good = {c.id for c in index.chunks if c.doc in ex["relevant"] and contains_answer(c.text, ex["answer"])}
                row.update(_scores([p.id for p in hits], good, task.spec.k, "passage_"))
            for key, value in row.items():
                sums[key] = sums.get(key, 0.0) + value
        results[mode] = {key: value / len(task.examples) for key, value in sums.items()}
    return results


def evaluate_answers(
    index: RagIndex, task: RetrievalTask, generator, k: int = 4, mode: str = "hybrid", answer: str = "auto"
) -> dict[str, Any]:
    """Grounded answers for every query: contains / f1 of the answer text, citation precision, abstentions.

    `citation_precision` is the mean share of cited passages that contain the answer, over the
    answers that cite; `cited_share` how many answers cite at all.
    """
    from attune.evaluate.metrics import contains, f1
    from attune.rag.answer import answer_mode, answer_question, strip_citations

    if task.spec.answer is None:
        raise AttuneError(f"task {task.spec.name!r} has no `answer:` field to score answers against")
    rows, precisions = [], []
    for ex in task.examples:
        result = answer_question(index, ex["query"], generator, k, mode=mode, answer=answer)  # type: ignore[arg-type]
        text = strip_citations(result.answer)
        precision = citation_precision([p.text for p in result.sources], ex["answer"])
        if precision is not None:
            precisions.append(precision)
        rows.append({"query": ex["query"], "answer": result.answer, "reference": ex["answer"], "contains": contains(text, ex["answer"]),
                     "f1": f1(text, ex["answer"]), "citations": result.citations, "citation_precision": precision,
                     "abstained": result.abstained, "dropped_citations": result.dropped_citations})
    n = len(rows)
    return {
        "mode": answer_mode(answer, generator),
        "contains": sum(r["contains"] for r in rows) / n,
        "f1": sum(r["f1"] for r in rows) / n,
        "citation_precision": sum(precisions) / len(precisions) if precisions else None,
        "cited_share": len(precisions) / n,
        "abstained": sum(r["abstained"] for r in rows) / n,
        "dropped_citations": sum(r["dropped_citations"] for r in rows),
        "rows": rows,
    }
