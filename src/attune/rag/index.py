"""Build and open a RAG index: one directory, every build written aside and switched in atomically.

    INDEX_DIR/
      CURRENT              name of the live version (replaced atomically with os.replace)
      v-<time>-<id>/       one complete version
        manifest.json      embedder, chunking, store, and per document: content hash + chunk rows
        chunks.jsonl       one chunk per line (row = line number)
        dense.faiss        the vectors (faiss store; the pgvector store keeps them in a table)
        bm25/              the keyword index

A build writes a new `v-*.tmp` folder, renames it, then points CURRENT at it; only after that
are older versions deleted. Killed at any moment, the index still opens at the previous
version (a left-over `.tmp` is removed by the next build). Builds are incremental: a document
whose content hash is unchanged keeps its chunks and vectors, so re-indexing an unchanged
folder embeds nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from attune.errors import AttuneError
from attune.rag.bm25 import Bm25Index
from attune.rag.chunking import Chunk, ChunkOptions, chunk_document
from attune.rag.ingest import Skipped, load_documents
from attune.rag.retrieve import RagIndex
from attune.rag.stores import check_store, drop_store, open_store, write_store

if TYPE_CHECKING:
    from attune.models.embedding import Embedder

FORMAT = 1
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
CHUNKS = "chunks.jsonl"
EMBED_BATCH = 256


@dataclass
class BuildReport:
    """What a build did. `embedded` counts chunks sent to the embedder (0 for an unchanged corpus)."""

    index_dir: Path
    documents: int
    chunks: int
    embedded: int
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    full_rebuild_reason: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["index_dir"] = str(self.index_dir)
        return d


def _resolve_embedder(embedder: str | Embedder) -> Embedder:
    if isinstance(embedder, str):
        from attune.models.embedding import load_embedder

        return load_embedder(embedder)
    return embedder


def _current_version(index_dir: Path) -> Path | None:
    pointer = index_dir / CURRENT
    if not pointer.is_file():
        return None
    version = index_dir / pointer.read_text().strip()
    return version if (version / MANIFEST).is_file() else None


def _read_chunks(version: Path) -> list[Chunk]:
    chunks = []
    with open(version / CHUNKS, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                chunks.append(Chunk(row["id"], row["doc"], row["text"], row.get("metadata", {})))
            except (json.JSONDecodeError, KeyError) as exc:
                raise AttuneError(f"{version / CHUNKS}:{n}: corrupt chunk record ({exc}); rebuild the index") from None
    return chunks


def _read_manifest(version: Path) -> dict:
    try:
        manifest = json.loads((version / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AttuneError(f"{version / MANIFEST}: unreadable index manifest ({exc}); rebuild the index") from None
    if manifest.get("format") != FORMAT:
        raise AttuneError(f"{version / MANIFEST}: index format {manifest.get('format')!r}, this attune reads {FORMAT}; rebuild the index")
    return manifest


def open_index(index_dir: str | Path, reranker: str | None = None) -> RagIndex:
    """Open the live version of an index; a clear AttuneError when it is missing or damaged.

    `reranker`: a local cross-encoder model dir; when given, every search re-scores its candidates with it.
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise AttuneError(f"{index_dir}: no RAG index here; build one with `attune rag index DOCS --index {index_dir}`")
    version = _current_version(index_dir)
    if version is None:
        raise AttuneError(f"{index_dir}: not a RAG index, or its CURRENT version is missing; rebuild it with `attune rag index`")
    manifest = _read_manifest(version)
    chunks = _read_chunks(version)
    if len(chunks) != manifest.get("count"):
        raise AttuneError(f"{version}: {len(chunks)} chunks on disk but the manifest says {manifest.get('count')}; rebuild the index")
    store = open_store(manifest["store"], version)
    bm25 = Bm25Index.load(version / "bm25", len(chunks))
    index = RagIndex(index_dir, manifest, chunks, store, bm25)
    if reranker:
        from attune.rag.rerank import load_reranker

        index.reranker = load_reranker(reranker)
    return index


def _plan(docs, previous: dict | None, embedder_name: str, chunking: ChunkOptions) -> tuple[dict, str | None]:
    """Which previous documents can be reused as they are, or why none can."""
    if previous is None:
        return {}, "no previous index"
    if previous.get("embedder") != embedder_name:
        return {}, f"embedder changed ({previous.get('embedder')} -> {embedder_name})"
    if previous.get("chunking") != asdict(chunking):
        return {}, "chunking options changed"
    old = previous["docs"]
    return {d.doc: old[d.doc] for d in docs if d.doc in old and old[d.doc]["sha"] == d.sha}, None


def build_index(
    paths: list[str | Path],
    index_dir: str | Path,
    embedder: str | Embedder = "builtin:minilm",
    *,
    chunking: ChunkOptions | None = None,
    store: str = "faiss",
    progress: Callable[[int, int], None] | None = None,
) -> BuildReport:
    """Index the documents under `paths` into `index_dir` (created, or updated incrementally).

    `paths` is the whole corpus: documents no longer under them are removed from the index.
    When nothing changed, the live version is kept as it is (nothing embedded, nothing written).
    `store` is `faiss` (embedded) or `pgvector[:URL]`. `progress(done, total)` is called per
    embedding batch. Unreadable documents are listed in the report's `skipped`, not raised.
    """
    from filelock import FileLock

    start = time.perf_counter()
    index_dir = Path(index_dir)
    chunking = chunking or ChunkOptions()
    if index_dir.exists() and not index_dir.is_dir():
        raise AttuneError(f"{index_dir}: exists and is not a directory")
    check_store(store)
    docs, skipped = load_documents(list(paths))
    if not docs:
        detail = "; ".join(f"{s.path}: {s.reason}" for s in skipped) or "no files"
        raise AttuneError(f"nothing to index under {', '.join(map(str, paths))} ({detail})")
    model = _resolve_embedder(embedder)
    index_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(index_dir / ".build.lock")):
        previous_dir = _current_version(index_dir)
        previous = _read_manifest(previous_dir) if previous_dir else None
        reuse, reason = _plan(docs, previous, model.name, chunking)
        old_chunks = _read_chunks(previous_dir) if reuse else []
        old_store = open_store(previous["store"], previous_dir) if reuse else None
        try:
            chunks, vectors, embedded = _assemble(docs, reuse, old_chunks, old_store, model, chunking, progress)
        finally:
            if old_store is not None:
                old_store.close()
        report = BuildReport(index_dir, len(docs), len(chunks), embedded, skipped=skipped, full_rebuild_reason=reason)
        old_docs = previous["docs"] if previous else {}
        report.added = [d.doc for d in docs if d.doc not in old_docs]
        report.changed = [d.doc for d in docs if d.doc in old_docs and d.doc not in reuse]
        report.removed = sorted(set(old_docs) - {d.doc for d in docs})
        report.unchanged = len(reuse)
        kind, _, url = store.partition(":")
        same_store = previous is not None and previous["store"]["kind"] == kind and previous["store"].get("url") == (url or None)
        up_to_date = same_store and report.unchanged == len(docs) and not report.removed
        if not up_to_date:
            _write_version(index_dir, docs, chunks, vectors, model, chunking, store, previous_dir)
    report.seconds = time.perf_counter() - start
    return report


def _assemble(docs, reuse, old_chunks, old_store, model, chunking, progress):
    """All chunks of the new version in document order, with vectors: reused ones read back, new ones embedded."""
    import numpy as np

    chunks: list[Chunk] = []
    source: list[int | None] = []  # the previous row of a reused chunk, None for one to embed
    for doc in docs:
        if doc.doc in reuse:
            rows = reuse[doc.doc]["rows"]
            chunks += [old_chunks[r] for r in rows]
            source += rows
        else:
            new = chunk_document(doc, model.count_tokens, chunking)
            chunks += new
            source += [None] * len(new)
    vectors = np.zeros((len(chunks), model.dim), dtype=np.float32)
    old_rows = [(i, r) for i, r in enumerate(source) if r is not None]
    if old_rows:
        vectors[[i for i, _ in old_rows]] = old_store.vectors([r for _, r in old_rows])
    todo = [i for i, r in enumerate(source) if r is None]
    for start in range(0, len(todo), EMBED_BATCH):
        batch = todo[start : start + EMBED_BATCH]
        vectors[batch] = model.encode([chunks[i].text for i in batch])
        if progress:
            progress(start + len(batch), len(todo))
    return chunks, vectors, len(todo)


def _write_version(
    index_dir: Path, docs, chunks: list[Chunk], vectors, model, chunking: ChunkOptions, store: str, previous_dir: Path | None
) -> None:
    name = f"v-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    tmp = index_dir / f"{name}.tmp"
    tmp.mkdir()
    try:
        with open(tmp / CHUNKS, "w", encoding="utf-8") as f:
            for c in chunks:
                f.write(json.dumps({"id": c.id, "doc": c.doc, "text": c.text, "metadata": c.metadata}, ensure_ascii=False) + "\n")
        Bm25Index.build([c.text for c in chunks]).save(tmp / "bm25")
        store_entry = write_store(store, tmp, vectors)
        rows: dict[str, list[int]] = {}
        for i, c in enumerate(chunks):
            rows.setdefault(c.doc, []).append(i)
        manifest = {
            "format": FORMAT, "embedder": model.name, "dim": model.dim, "chunking": asdict(chunking),
            "store": store_entry, "count": len(chunks), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "docs": {d.doc: {"sha": d.sha, "rows": rows.get(d.doc, [])} for d in docs},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, index_dir / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if "store_entry" in locals():
            drop_store(store_entry)
        raise
    pointer = index_dir / f"{CURRENT}.{uuid.uuid4().hex[:8]}.tmp"
    pointer.write_text(name + "\n")
    os.replace(pointer, index_dir / CURRENT)
    old_entry = _read_manifest(previous_dir)["store"] if previous_dir else None
    for stale in index_dir.iterdir():
        if stale.name != name and (stale.name.startswith("v-") or stale.name.startswith(f"{CURRENT}.")):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    if old_entry:
        drop_store(old_entry)
