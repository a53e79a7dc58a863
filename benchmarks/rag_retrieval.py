"""RAG retrieval: quality on the builtin Northwind corpus, then speed at 10k+ chunks next to LangChain.

    flock /tmp/attune-heavy.lock .venv/bin/python benchmarks/rag_retrieval.py [--distractors 10000] [--peer-path DIR]

1. Northwind (7 documents, 22 questions): hit@1 / hit@5 / MRR per retriever, per document and per
   passage (a chunk of the right document that contains the answer).
2. Scale: the Northwind documents hidden among N distractor documents (first paragraphs of the
   Python standard library's docstrings, read with `ast`: every machine with the same Python has the
   same corpus);
   ingest chunks/s, an unchanged re-index, open time, query latency p50/p95 and hit@5 on the 22
   questions, one line per retriever.
3. The peer, when importable (`pip install --target DIR langchain-community langchain-classic
   rank-bm25`, then `--peer-path DIR`): LangChain's FAISS vector store + BM25Retriever fused by its
   EnsembleRetriever (weighted RRF, c=60), over the very same chunk texts with the same MiniLM
   model, built and queried the same way.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attune.models.embedding import load_embedder  # noqa: E402
from attune.rag import build_index, open_index  # noqa: E402
from attune.rag.evaluation import evaluate_retrieval, load_retrieval_task  # noqa: E402
from attune.rag.metrics import hit_at_k  # noqa: E402

NORTHWIND = ROOT / "src/attune/builtin/corpora/northwind"
REPEATS = 5


def stdlib_texts(limit: int) -> list[dict]:
    """First paragraphs of 4+ words of Python standard library docstrings (tests included), in a fixed order.

    First paragraphs keep one chunk per distractor, so N distractors are N chunks.
    """
    records: list[dict] = []
    lib = Path(sysconfig.get_paths()["stdlib"])
    for file in sorted(lib.rglob("*.py")):
        rel = file.relative_to(lib)
        if rel.parts[0] == "site-packages":
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(rel.with_suffix("").parts)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = (ast.get_docstring(node) or "").split("\n\n")[0].strip()
            if len(doc.split()) >= 4:
                name = module if isinstance(node, ast.Module) else f"{module}.{node.name}"
                records.append({"id": f"{name}:{len(records)}", "title": name, "text": doc})
            if len(records) >= limit:
                return records
    return records


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn, queries: list[str]) -> tuple[list, list[float]]:
    fn(queries[0])  # warm-up
    results, times = [], []
    for _ in range(REPEATS):
        for q in queries:
            t = time.perf_counter()
            results.append(fn(q))
            times.append((time.perf_counter() - t) * 1000)
    return results[: len(queries)], times


def northwind_table(workdir: Path) -> None:
    task = load_retrieval_task("builtin:northwind-retrieval")
    build_index([NORTHWIND], workdir / "northwind")
    index = open_index(workdir / "northwind")
    results = evaluate_retrieval(index, task)
    print(f"## Northwind retrieval ({len(task.examples)} questions, {len(index)} chunks)")
    print("| retriever | hit@1 | hit@5 | MRR | passage hit@1 | passage hit@5 | passage MRR |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode in ("dense", "bm25", "hybrid"):
        r = results[mode]
        cells = [r["hit@1"], r["hit@5"], r["mrr"], r["passage_hit@1"], r["passage_hit@5"], r["passage_mrr"]]
        print(f"| {mode} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")


def attune_scale(workdir: Path, distractors: int) -> tuple[list[str], list[tuple[str, set]], list[str]]:
    corpus = workdir / "distractors"
    corpus.mkdir()
    with open(corpus / "stdlib.jsonl", "w") as f:
        for r in stdlib_texts(distractors):
            f.write(json.dumps(r) + "\n")
    task = load_retrieval_task("builtin:northwind-retrieval")
    queries = [(ex["query"], ex["relevant"]) for ex in task.examples]
    load_embedder()  # model load is not ingest
    index_dir = workdir / "scale"
    report = build_index([NORTHWIND, corpus / "stdlib.jsonl"], index_dir)
    again = build_index([NORTHWIND, corpus / "stdlib.jsonl"], index_dir)
    t = time.perf_counter()
    index = open_index(index_dir)
    opened = time.perf_counter() - t
    print(f"\n## Scale: {report.documents} documents, {report.chunks} chunks (Northwind + Python stdlib docstrings)")
    print(f"attune ingest: {report.seconds:.1f} s = {report.chunks / report.seconds:.0f} chunks/s (chunk + embed + write); "
          f"unchanged re-index {again.seconds:.2f} s ({again.embedded} embedded); open {opened:.2f} s")
    print("| system | retriever | p50 ms | p95 ms | hit@5 |")
    print("| --- | --- | --- | --- | --- |")
    for mode in ("dense", "bm25", "hybrid"):
        hits, times = timed(lambda q, m=mode: index.search(q, 5, mode=m), [q for q, _ in queries])
        hit5 = statistics.mean(hit_at_k([p.doc for p in h], rel, 5) for h, (_, rel) in zip(hits, queries))
        print(f"| attune | {mode} | {pct(times, 0.5):.2f} | {pct(times, 0.95):.2f} | {hit5:.3f} |")
    return [c.text for c in index.chunks], queries, [c.doc for c in index.chunks]


def langchain_peer(texts: list[str], docs: list[str], queries: list[tuple[str, set]]) -> None:
    try:
        from langchain_classic.retrievers import EnsembleRetriever
        from langchain_community.retrievers import BM25Retriever
        from langchain_community.vectorstores import FAISS
        from langchain_core.embeddings import Embeddings
    except ImportError as exc:
        print(f"\n(peer skipped: LangChain is not importable: {exc})")
        return
    model = load_embedder()

    class MiniLM(Embeddings):  # the same model and normalisation attune uses
        def embed_documents(self, items):
            return model.encode(items).tolist()

        def embed_query(self, text):
            return model.encode([text])[0].tolist()

    metadatas = [{"doc": d} for d in docs]
    t = time.perf_counter()
    store = FAISS.from_texts(texts, MiniLM(), metadatas=metadatas, distance_strategy="MAX_INNER_PRODUCT")
    bm25 = BM25Retriever.from_texts(texts, metadatas=metadatas, preprocess_func=lambda s: re.findall(r"\w+", s.lower()), k=5)
    built = time.perf_counter() - t
    dense = store.as_retriever(search_kwargs={"k": 5})
    hybrid = EnsembleRetriever(retrievers=[dense, bm25], weights=[0.5, 0.5], c=60)
    print(f"langchain ingest: {built:.1f} s = {len(texts) / built:.0f} chunks/s (embed + FAISS + BM25, same chunks)")
    for mode, retriever in (("dense", dense), ("bm25", bm25), ("hybrid", hybrid)):
        hits, times = timed(retriever.invoke, [q for q, _ in queries])
        hit5 = statistics.mean(hit_at_k([d.metadata["doc"] for d in h[:5]], rel, 5) for h, (_, rel) in zip(hits, queries))
        print(f"| langchain | {mode} | {pct(times, 0.5):.2f} | {pct(times, 0.95):.2f} | {hit5:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distractors", type=int, default=10000, help="distractor documents mixed into the corpus")
    parser.add_argument("--peer-path", help="a folder with LangChain installed (pip install --target)")
    args = parser.parse_args()
    if args.peer_path:
        sys.path.append(args.peer_path)  # after the venv: shared packages keep attune's versions
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        northwind_table(work)
        texts, queries, docs = attune_scale(work, args.distractors)
        langchain_peer(texts, docs, queries)


if __name__ == "__main__":
    main()
