"""Index builds (incremental, atomic, kill-safe), opening errors, and dense / BM25 / hybrid search with filters."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from attune.errors import AttuneError
from attune.models.embedding import load_embedder
from attune.rag import build_index, open_index
from attune.rag.retrieve import rrf

NORTHWIND = Path(__file__).parents[1] / "src/attune/builtin/corpora/northwind"


class CountingEmbedder:
    """The real MiniLM embedder, counting the texts it is asked to embed."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.inner = load_embedder()
        self.name, self.dim = self.inner.name, self.inner.dim
        self.count_tokens = self.inner.count_tokens
        self.texts = 0
        self.fail_after = fail_after

    def encode(self, texts):
        if self.fail_after is not None and self.texts + len(texts) > self.fail_after:
            raise RuntimeError("injected embedding failure")
        self.texts += len(texts)
        return self.inner.encode(texts)


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "docs"
    shutil.copytree(NORTHWIND, folder)
    return folder


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One build of the Northwind corpus; tests get a copy (same document names, so it is their previous version)."""
    folder = tmp_path_factory.mktemp("pristine")
    return folder / "index", build_index([NORTHWIND], folder / "index", CountingEmbedder())


@pytest.fixture
def built(pristine, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(pristine[0], index_dir)
    return index_dir, pristine[1]


def _live_texts(index_dir) -> dict[str, str]:
    index = open_index(index_dir)
    return {c.id: c.text for c in index.chunks}


def test_build_then_unchanged_rebuild_embeds_nothing(built, corpus):
    index_dir, first = built
    assert first.documents == 7 and first.embedded == first.chunks > 7 and first.full_rebuild_reason == "no previous index"
    embedder = CountingEmbedder()
    again = build_index([corpus], index_dir, embedder)
    assert embedder.texts == 0 and again.embedded == 0 and again.unchanged == 7
    assert again.added == again.changed == again.removed == []
    assert len(list(index_dir.glob("v-*"))) == 1


def test_changed_file_reembeds_only_its_chunks_and_deleted_file_leaves(built, corpus):
    index_dir, first = built
    before = open_index(index_dir)
    hub_chunks = sum(c.doc == "hub-x2.md" for c in before.chunks)
    (corpus / "hub-x2.md").write_text((corpus / "hub-x2.md").read_text().replace("25 seconds", "40 seconds"))
    (corpus / "camera-c5.md").unlink()
    embedder = CountingEmbedder()
    report = build_index([corpus], index_dir, embedder)
    assert report.changed == ["hub-x2.md"] and report.removed == ["camera-c5.md"] and report.unchanged == 5
    assert embedder.texts == report.embedded == hub_chunks
    after = open_index(index_dir)
    assert not any(c.doc == "camera-c5.md" for c in after.chunks)
    assert len(list(index_dir.glob("v-*"))) == 1  # the replaced version is gone
    assert "40 seconds" in after.search("factory reset hub", 1)[0].text
    # reused vectors are exactly the stored ones, not re-computed approximations
    kept = [i for i, c in enumerate(before.chunks) if c.doc == "shipping-policy.md"]
    kept_after = [i for i, c in enumerate(after.chunks) if c.doc == "shipping-policy.md"]
    np.testing.assert_array_equal(before.store.vectors(kept), after.store.vectors(kept_after))


def test_another_embedder_forces_a_full_rebuild(built, corpus):
    index_dir, _ = built
    embedder = CountingEmbedder()
    embedder.name = "other-embedder"
    report = build_index([corpus], index_dir, embedder)
    assert report.full_rebuild_reason == "embedder changed (builtin:minilm -> other-embedder)"
    assert embedder.texts == report.chunks


def test_failure_mid_build_keeps_the_previous_index(built, corpus):
    index_dir, _ = built
    before = _live_texts(index_dir)
    for f in corpus.glob("*.md"):
        f.write_text(f.read_text() + "\n\nAppendix: changed.\n")
    with pytest.raises(RuntimeError, match="injected"):
        build_index([corpus], index_dir, CountingEmbedder(fail_after=3))
    assert _live_texts(index_dir) == before
    assert [p.name for p in index_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_killed_build_leaves_previous_index_intact(built, corpus):
    """SIGKILL while the new version is half written on disk: the old version still opens, the next build cleans up."""
    index_dir, _ = built
    before = _live_texts(index_dir)
    (corpus / "hub-x2.md").write_text("# Hub\n\nCompletely new text.\n")
    script = textwrap.dedent(
        """
        import sys, time
        import attune.rag.index as index
        real = index.write_store
        def stall(spec, version_dir, vectors):
            real(spec, version_dir, vectors)      # chunks, bm25 and vectors are on disk in the .tmp folder
            print("WRITTEN", flush=True)
            time.sleep(120)
        index.write_store = stall
        index.build_index([sys.argv[1]], sys.argv[2])
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(corpus), str(index_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:
        assert proc.stdout.readline().strip() == "WRITTEN"
        assert any(p.name.endswith(".tmp") for p in index_dir.iterdir())
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert _live_texts(index_dir) == before
    report = build_index([corpus], index_dir, CountingEmbedder())
    assert report.changed == ["hub-x2.md"]
    assert sorted(p.name.split("-")[0] for p in index_dir.iterdir() if not p.name.startswith(".")) == ["CURRENT", "v"]


def test_malformed_documents_are_skipped_and_the_build_goes_on(corpus, tmp_path):
    (corpus / "junk.txt").write_bytes(os.urandom(2048).replace(b"\x00", b"\x01") + b"\x00")
    (corpus / "empty.md").write_text("")
    (corpus / "scan.pdf").write_bytes(b"%PDF-1.7 garbage")
    report = build_index([corpus], tmp_path / "ix", CountingEmbedder())
    assert report.documents == 7
    assert sorted(Path(s.path).name for s in report.skipped) == ["empty.md", "junk.txt", "scan.pdf"]


def test_nothing_to_index_is_an_error(tmp_path):
    (tmp_path / "empty.md").write_text("")
    with pytest.raises(AttuneError, match="nothing to index.*empty.md: empty"):
        build_index([tmp_path], tmp_path / "ix", CountingEmbedder())


def test_open_missing_or_corrupt_index_is_a_clear_error(built, tmp_path):
    with pytest.raises(AttuneError, match="no RAG index here"):
        open_index(tmp_path / "absent")
    (tmp_path / "plain").mkdir()
    with pytest.raises(AttuneError, match="not a RAG index"):
        open_index(tmp_path / "plain")
    index_dir, _ = built
    version = index_dir / (index_dir / "CURRENT").read_text().strip()
    with open(version / "chunks.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(AttuneError, match=r"chunks.jsonl:\d+: corrupt chunk record"):
        open_index(index_dir)
    (version / "manifest.json").write_text("{")
    with pytest.raises(AttuneError, match="unreadable index manifest"):
        open_index(index_dir)


def test_rrf_matches_hand_computed_scores():
    fused = rrf([[1, 2, 3], [3, 1]], k=60)
    expected = {1: 1 / 61 + 1 / 62, 2: 1 / 62, 3: 1 / 63 + 1 / 61}
    assert [i for i, _ in fused] == [1, 3, 2]
    for i, s in fused:
        assert s == pytest.approx(expected[i])


def test_search_modes_scores_and_filters(built):
    index = open_index(built[0])
    q = "How long does the Door Sensor D3 battery last?"
    dense = index.search(q, 3, mode="dense")
    bm25 = index.search(q, 3, mode="bm25")
    hybrid = index.search(q, 3)
    assert [p.doc for p in dense[:1] + bm25[:1] + hybrid[:1]] == ["door-sensor-d3.md"] * 3
    assert all(dense[i].score >= dense[i + 1].score for i in range(2))
    # dense scores are cosine similarities: the query's own embedding against the stored chunk vector
    qv = index.embedder.encode([q])[0]
    row = next(i for i, c in enumerate(index.chunks) if c.id == dense[0].id)
    assert dense[0].score == pytest.approx(float(index.store.vectors([row])[0] @ qv), abs=1e-5)
    # hybrid scores are RRF over each retriever's ranking
    top = hybrid[0]
    assert set(top.scores) == {"dense", "bm25", "rrf"} and top.score == top.scores["rrf"]
    only_camera = index.search(q, 5, filters={"doc": "camera-c5.md"})
    assert only_camera and {p.doc for p in only_camera} == {"camera-c5.md"}
    either = index.search(q, 10, mode="bm25", filters={"doc": ["hub-x2.md", "door-sensor-d3.md"]})
    assert {p.doc for p in either} <= {"hub-x2.md", "door-sensor-d3.md"}
    with pytest.raises(AttuneError, match="did you mean 'doc'"):
        index.search(q, filters={"dco": "x"})
    with pytest.raises(AttuneError, match="unknown retrieval mode"):
        index.search(q, mode="sparse")


def test_hybrid_recovers_what_one_retriever_misses(built):
    """An exact product code: BM25 finds it, and fusion keeps it at the top."""
    index = open_index(built[0])
    hits = index.search("CR2477", 3)
    assert hits[0].doc == "door-sensor-d3.md" and "CR2477" in hits[0].text


def test_jsonl_metadata_filters(tmp_path):
    rows = [
        {"id": "a", "text": "The red valve opens at 3 bar.", "team": "ops"},
        {"id": "b", "text": "The blue valve opens at 5 bar.", "team": "lab"},
    ]
    (tmp_path / "kb.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    build_index([tmp_path / "kb.jsonl"], tmp_path / "ix", CountingEmbedder())
    hits = open_index(tmp_path / "ix").search("valve pressure", 5, filters={"team": "lab"})
    assert [p.doc for p in hits] == ["kb.jsonl#b"] and hits[0].metadata["team"] == "lab"
