"""Vector stores behind one interface: `faiss` (embedded, a file in the index dir) and `pgvector` (a server).

A store holds the chunk vectors of one index version, addressed by row number (the chunk's
position in `chunks.jsonl`). It is written once per build and never changed afterwards, so a
build that dies leaves the previous version's store untouched. The choice of FAISS exact
search as the embedded default was measured (docs/rag.md): ~1 ms per query at 10k x 384 on two
cores, a 65 MB install, no server.

`pgvector` keeps the vectors in PostgreSQL, one table per index version (the previous
version's table is dropped after the new version is switched in). The connection URL comes
from the store spec (`pgvector:postgresql://...`) or `ATTUNE_PGVECTOR_URL`.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from attune.errors import AttuneError

if TYPE_CHECKING:
    import numpy as np

FAISS_FILE = "dense.faiss"


class VectorStore(Protocol):
    def search(self, query: np.ndarray, k: int, rows: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The k rows with the highest inner product with `query` (only among `rows` if given), best first."""
        ...

    def vectors(self, rows: list[int]) -> np.ndarray:
        """The stored vectors of `rows`, in that order (for reuse by an incremental build)."""
        ...

    def close(self) -> None: ...


class FaissStore:
    """Exact inner-product search (`IndexFlatIP`) over normalised vectors = exact cosine top-k."""

    def __init__(self, index) -> None:
        self.index = index

    @classmethod
    def write(cls, version_dir: Path, vectors: np.ndarray) -> dict[str, Any]:
        import faiss

        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        faiss.write_index(index, str(version_dir / FAISS_FILE))
        return {"kind": "faiss", "file": FAISS_FILE}

    @classmethod
    def open(cls, entry: dict[str, Any], version_dir: Path) -> FaissStore:
        import faiss

        path = version_dir / entry.get("file", FAISS_FILE)
        try:
            return cls(faiss.read_index(str(path)))
        except RuntimeError as exc:
            raise AttuneError(f"{path}: the dense index is unreadable ({str(exc).splitlines()[0]}); rebuild the index") from None

    def search(self, query: np.ndarray, k: int, rows: np.ndarray | None = None) -> list[tuple[int, float]]:
        import faiss
        import numpy as np

        n = self.index.ntotal if rows is None else len(rows)
        k = min(k, n)
        if k <= 0:
            return []
        params = None if rows is None else faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(rows, dtype="int64")))
        scores, ids = self.index.search(query.reshape(1, -1), k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def vectors(self, rows: list[int]) -> np.ndarray:
        import numpy as np

        return self.index.reconstruct_batch(np.asarray(rows, dtype="int64"))

    def close(self) -> None:
        pass


def _pg_url(spec: str) -> str:
    url = spec.partition(":")[2] or os.environ.get("ATTUNE_PGVECTOR_URL", "")
    if not url:
        raise AttuneError("the pgvector store needs a server: store='pgvector:postgresql://...' or ATTUNE_PGVECTOR_URL "
                          "(scripts/pgvector_server.sh starts one on 127.0.0.1)")
    return url


def _pg_connect(url: str):
    try:
        import psycopg
    except ModuleNotFoundError as exc:
        raise AttuneError("the pgvector store needs psycopg: pip install 'attune-llm[pgvector]'") from exc
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise AttuneError(f"cannot connect to the pgvector server at {_redact(url)}: {str(exc).strip()}") from None
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        conn.close()
        raise AttuneError(f"{_redact(url)}: the pgvector extension is not available on this server ({str(exc).strip()})") from None
    return conn


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _literal(vector) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


class PgVectorStore:
    """Vectors in a PostgreSQL table with the pgvector extension; exact scan, or HNSW past `HNSW_MIN_ROWS` rows."""

    HNSW_MIN_ROWS = 20_000

    def __init__(self, conn, table: str, dim: int) -> None:
        self.conn = conn
        self.table = table
        self.dim = dim

    @classmethod
    def write(cls, spec: str, vectors: np.ndarray) -> dict[str, Any]:
        url = _pg_url(spec)
        table = f"attune_rag_{uuid.uuid4().hex[:16]}"
        dim = int(vectors.shape[1])
        with _pg_connect(url) as conn:
            conn.execute(f"CREATE TABLE {table} (row_id integer PRIMARY KEY, embedding vector({dim}) NOT NULL)")
            with conn.cursor().copy(f"COPY {table} (row_id, embedding) FROM STDIN") as copy:
                for i, v in enumerate(vectors):
                    copy.write_row((i, _literal(v)))
            if len(vectors) >= cls.HNSW_MIN_ROWS:
                conn.execute(f"CREATE INDEX ON {table} USING hnsw (embedding vector_ip_ops)")
            conn.execute(f"ANALYZE {table}")
        # the URL is kept only when it came from the spec; from the environment it is read again at open
        return {"kind": "pgvector", "table": table, "dim": dim, "url": spec.partition(":")[2] or None}

    @classmethod
    def open(cls, entry: dict[str, Any], version_dir: Path) -> PgVectorStore:
        conn = _pg_connect(_pg_url("pgvector:" + (entry.get("url") or "")))
        exists = conn.execute("SELECT to_regclass(%s)", (entry["table"],)).fetchone()[0]
        if exists is None:
            conn.close()
            raise AttuneError(f"{version_dir}: its pgvector table {entry['table']} is gone from the server; rebuild the index")
        return cls(conn, entry["table"], int(entry["dim"]))

    @staticmethod
    def drop(entry: dict[str, Any]) -> None:
        with _pg_connect(_pg_url("pgvector:" + (entry.get("url") or ""))) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {entry['table']}")

    def search(self, query: np.ndarray, k: int, rows: np.ndarray | None = None) -> list[tuple[int, float]]:
        q = _literal(query)
        # <#> is the negative inner product: ascending order = most similar first
        if rows is None:
            sql = f"SELECT row_id, -(embedding <#> %s::vector) FROM {self.table} ORDER BY embedding <#> %s::vector LIMIT %s"
            args: tuple = (q, q, k)
        else:
            sql = (f"SELECT row_id, -(embedding <#> %s::vector) FROM {self.table} WHERE row_id = ANY(%s) "
                   "ORDER BY embedding <#> %s::vector LIMIT %s")
            args = (q, [int(r) for r in rows], q, k)
        return [(int(r), float(s)) for r, s in self.conn.execute(sql, args).fetchall()]

    def vectors(self, rows: list[int]) -> np.ndarray:
        import numpy as np

        sql = f"SELECT row_id, embedding::text FROM {self.table} WHERE row_id = ANY(%s)"
        got = dict(self.conn.execute(sql, ([int(r) for r in rows],)).fetchall())
        return np.asarray([[float(x) for x in got[r].strip("[]").split(",")] for r in rows], dtype=np.float32).reshape(len(rows), self.dim)

    def close(self) -> None:
        self.conn.close()


def check_store(spec: str) -> None:
    """Fail before any embedding work when the store cannot be used (unknown kind, server unreachable)."""
    kind = spec.partition(":")[0]
    if kind == "pgvector":
        _pg_connect(_pg_url(spec)).close()
    elif kind != "faiss":
        raise AttuneError(f"unknown vector store {spec!r}; known: faiss, pgvector[:URL]")


def write_store(spec: str, version_dir: Path, vectors: np.ndarray) -> dict[str, Any]:
    """Write a new version's vectors; returns the manifest entry that `open_store` reads back."""
    kind = spec.partition(":")[0]
    if kind == "faiss":
        return FaissStore.write(version_dir, vectors)
    if kind == "pgvector":
        return PgVectorStore.write(spec, vectors)
    raise AttuneError(f"unknown vector store {spec!r}; known: faiss, pgvector[:URL]")


def open_store(entry: dict[str, Any], version_dir: Path) -> VectorStore:
    if entry.get("kind") == "pgvector":
        return PgVectorStore.open(entry, version_dir)
    return FaissStore.open(entry, version_dir)


def drop_store(entry: dict[str, Any]) -> None:
    """Free what a replaced version held outside its folder (a server table); files go with the folder."""
    if entry.get("kind") == "pgvector":
        try:
            PgVectorStore.drop(entry)
        except AttuneError:
            pass  # server gone: the orphan table is harmless and named attune_rag_* for manual cleanup
