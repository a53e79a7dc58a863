"""Retrieval-augmented generation: ingest documents, hybrid retrieval, grounded answers with citations.

    from attune.rag import build_index, open_index, answer_question

    report = build_index(["docs/"], "my-index")          # incremental, atomic
    index = open_index("my-index")
    hits = index.search("how do I reset the hub?", k=5)  # hybrid: BM25 + dense, fused by RRF
    result = answer_question(index, "how do I reset the hub?", generator)

Heavy libraries (faiss, bm25s, sentence-transformers, psycopg) are imported when first used.
"""

from attune.rag.answer import GroundedAnswer, answer_question
from attune.rag.chunking import ChunkOptions
from attune.rag.index import BuildReport, build_index, open_index
from attune.rag.passage import Passage
from attune.rag.retrieve import RagIndex

__all__ = ["BuildReport", "ChunkOptions", "GroundedAnswer", "Passage", "RagIndex", "answer_question", "build_index", "open_index"]
