"""The server vector store: PostgreSQL + pgvector started by scripts/pgvector_server.sh on 127.0.0.1.

Skipped, with the script's reason, where no PostgreSQL with pgvector can be installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from attune.errors import AttuneError
from attune.rag import build_index, open_index

ROOT = Path(__file__).parents[1]
NORTHWIND = ROOT / "src/attune/builtin/corpora/northwind"
SCRIPT = ROOT / "scripts/pgvector_server.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url():
    # not under pytest's tmp dir: it is private to root, and the server runs as its own user under root
    data = tempfile.mkdtemp(prefix="attune-pgvector-test-")
    env = {**os.environ, "PGVECTOR_PORT": str(_free_port()), "PGVECTOR_DIR": data, "PYTHON": sys.executable}
    start = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600)
    if start.returncode == 3:
        pytest.skip(f"no PostgreSQL with pgvector here: {start.stderr.strip()}")
    assert start.returncode == 0, start.stderr
    yield start.stdout.strip().splitlines()[-1]
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(data, ignore_errors=True)


def _tables(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'attune_rag_%'")}


def test_pgvector_store_matches_faiss_and_updates_incrementally(pg_url, tmp_path):
    assert pg_url.startswith("postgresql://postgres@127.0.0.1:")
    build_index([NORTHWIND], tmp_path / "faiss")
    report = build_index([NORTHWIND], tmp_path / "pg", store=f"pgvector:{pg_url}")
    assert report.embedded == report.chunks
    faiss, pg = open_index(tmp_path / "faiss"), open_index(tmp_path / "pg")
    table = pg.manifest["store"]["table"]
    assert table in _tables(pg_url)
    for query in ["factory reset the hub", "refund a duplicate charge", "camera frame rate"]:
        a, b = faiss.search(query, 4, mode="dense"), pg.search(query, 4, mode="dense")
        assert [p.id for p in a] == [p.id for p in b]
        assert [p.score for p in a] == pytest.approx([p.score for p in b], abs=1e-5)
        assert [p.id for p in faiss.search(query, 4)] == [p.id for p in pg.search(query, 4)]
    filtered = pg.search("reset", 3, mode="dense", filters={"doc": "camera-c5.md"})
    assert filtered and {p.doc for p in filtered} == {"camera-c5.md"}
    pg.close()

    docs = tmp_path / "docs"
    docs.mkdir()
    for f in NORTHWIND.glob("*.md"):
        (docs / f.name).write_text(f.read_text())
    (docs / "hub-x2.md").write_text("# Hub\n\nThe hub now connects 128 devices.\n")
    again = build_index([docs], tmp_path / "pg", store=f"pgvector:{pg_url}")
    assert again.changed == ["hub-x2.md"] and again.embedded == 1
    new = open_index(tmp_path / "pg")
    assert new.manifest["store"]["table"] != table and table not in _tables(pg_url)  # the old version's table is dropped
    assert "128 devices" in new.search("how many devices does the hub connect", 1)[0].text
    new.close()


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(AttuneError, match="cannot connect to the pgvector server at postgresql://u:\\*\\*\\*@127.0.0.1"):
        build_index([NORTHWIND], tmp_path / "ix", store=f"pgvector:postgresql://u:secret@127.0.0.1:{_free_port()}/x")
