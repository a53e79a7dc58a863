"""Ingest and chunking: formats, malformed files reported by name, heading-aware chunks, stable ids."""

from __future__ import annotations

import json

import pytest

from attune.errors import AttuneError
from attune.rag.chunking import ChunkOptions, chunk_document
from attune.rag.ingest import Document, load_documents


def words(text: str) -> int:
    return len(text.split())


def make_pdf(path, pages: list[str]) -> None:
    """A real PDF with one text line per page, written by hand (pypdf reads; it cannot lay out text)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {len(objects)} 0 R >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = b"%PDF-1.4\n", []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)


def test_every_format_is_read_and_bad_files_are_reported_by_name(tmp_path):
    (tmp_path / "guide.md").write_text("# Guide\n\nThe pump needs 12 bar.\n")
    (tmp_path / "notes.txt").write_text("Plain notes about the valve.\n")
    (tmp_path / "page.html").write_text(
        "<html><head><title>Valve page</title><style>p{}</style><script>var x=1;</script></head>"
        "<body><h2>Fitting</h2><p>Tighten to 30 Nm.</p><ul><li>Use PTFE tape</li></ul></body></html>"
    )
    make_pdf(tmp_path / "manual.pdf", ["First page text", "Second page text"])
    (tmp_path / "faq.jsonl").write_text(
        json.dumps({"id": "q1", "title": "Warranty", "text": "Two years.", "lang": "en"}) + "\n{broken\n" + json.dumps({"id": "q2"}) + "\n"
    )
    (tmp_path / "junk.md").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf body")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.md").write_text("never indexed")

    docs, skipped = load_documents([tmp_path])

    by_name = {d.doc: d for d in docs}
    assert sorted(by_name) == ["faq.jsonl#q1", "guide.md", "manual.pdf", "notes.txt", "page.html"]
    assert by_name["page.html"].text == "# Valve page\n\n## Fitting\n\nTighten to 30 Nm.\n\nUse PTFE tape"
    assert by_name["manual.pdf"].text == "## page 1\n\nFirst page text\n\n## page 2\n\nSecond page text"
    assert by_name["faq.jsonl#q1"].text == "# Warranty\n\nTwo years."
    assert by_name["faq.jsonl#q1"].metadata == {"id": "q1", "title": "Warranty", "lang": "en"}
    reasons = {s.path.replace(str(tmp_path) + "/", ""): s.reason for s in skipped}
    assert reasons["junk.md"] == "binary data, not text"
    assert reasons["empty.txt"] == "empty"
    assert reasons["broken.pdf"].startswith("unreadable PDF")
    assert reasons["faq.jsonl:2"].startswith("malformed JSON")
    assert reasons["faq.jsonl:3"].startswith("no text")
    assert reasons["image.png"] == "unsupported file type '.png'"
    assert len(reasons) == 6


def test_latin1_file_is_reported_not_guessed(tmp_path):
    (tmp_path / "old.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    docs, skipped = load_documents([tmp_path / "old.txt"])
    assert docs == [] and skipped[0].reason == "not UTF-8 text (byte 3)"


def test_missing_path_and_name_clash_are_errors(tmp_path):
    with pytest.raises(AttuneError, match="no such file or folder"):
        load_documents([tmp_path / "nope"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.md").write_text("one")
    (tmp_path / "b" / "x.md").write_text("two")
    with pytest.raises(AttuneError, match="would both be called 'x.md'"):
        load_documents([tmp_path / "a", tmp_path / "b"])


def test_chunks_start_at_headings_and_carry_the_heading_path():
    text = "# Hub\n\nIntro line.\n\n## Power\nRuns on USB-C.\n\n### Battery\nLasts 9 hours.\n\n## Reset\nHold 25 s.\n"
    doc = Document("hub.md", text, "x")
    chunks = chunk_document(doc, words, ChunkOptions(max_tokens=50, overlap_tokens=0))
    assert [c.text for c in chunks] == [
        "Hub\nIntro line.",
        "Hub > Power\nRuns on USB-C.",
        "Hub > Power > Battery\nLasts 9 hours.",
        "Hub > Reset\nHold 25 s.",
    ]
    assert [c.metadata["ordinal"] for c in chunks] == [0, 1, 2, 3]


def test_long_sections_pack_paragraphs_then_sentences_with_overlap():
    # 4 paragraphs of a 4-word and a 3-word sentence (7 words); heading "T" costs 1, so budget = 16 - 1 = 15 words
    paragraphs = [f"P{i} one two three. P{i} four five." for i in range(4)]
    doc = Document("d.md", "# T\n\n" + "\n\n".join(paragraphs), "x")
    chunks = chunk_document(doc, words, ChunkOptions(max_tokens=16, overlap_tokens=3))
    bodies = [c.text.split("\n", 1)[1] for c in chunks]
    # whole paragraphs while they fit (7 + 7 = 14 <= 15); the next chunk repeats the last sentence (3 words)
    assert bodies == [
        "P0 one two three. P0 four five.\n\nP1 one two three. P1 four five.",
        "P1 four five.\n\nP2 one two three. P2 four five.",
        "P2 four five.\n\nP3 one two three. P3 four five.",
    ]
    assert all(words(c.text) <= 16 for c in chunks)


def test_an_overlong_sentence_is_cut_between_words():
    doc = Document("d.txt", " ".join(f"w{i}" for i in range(25)), "x")
    chunks = chunk_document(doc, words, ChunkOptions(max_tokens=16, overlap_tokens=0))
    assert all(words(c.text) <= 16 for c in chunks)
    body_words = " ".join(c.text.split("\n", 1)[1] for c in chunks).split()
    assert body_words == [f"w{i}" for i in range(25)]


def test_chunk_ids_are_stable_and_survive_edits_elsewhere():
    text = "# A\n\n## One\nalpha text.\n\n## Two\nbeta text.\n"
    before = chunk_document(Document("a.md", text, "1"), words)
    again = chunk_document(Document("a.md", text, "1"), words)
    edited = chunk_document(Document("a.md", text.replace("beta", "gamma"), "2"), words)
    assert [c.id for c in before] == [c.id for c in again]
    assert before[0].id == edited[0].id and before[1].id != edited[1].id
    assert before[0].id.startswith("a.md#")


def test_bad_chunk_options_are_refused():
    with pytest.raises(AttuneError, match="overlap"):
        ChunkOptions(max_tokens=100, overlap_tokens=60)
