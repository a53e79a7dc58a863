"""Documents -> chunks of at most `max_tokens` embedder tokens, cut where the text is cut.

A heading always starts a new chunk, and every chunk starts with its heading path
("Northwind Hub X2 > Reset"), so a passage read alone still says what it is about. Inside a
section, whole paragraphs are packed while they fit; a paragraph too long for one chunk is cut
between sentences (a sentence too long, between words). When a section continues into a next
chunk, that chunk repeats the last sentences of the previous one, up to `overlap_tokens`, so a
fact near a cut is whole in at least one chunk.

A chunk's id is `doc#` + a hash of its text: re-ingesting an unchanged document gives the same
ids, and editing one section does not rename the chunks of the others.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from attune.errors import AttuneError
from attune.rag.ingest import Document

HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass
class Chunk:
    id: str
    doc: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChunkOptions:
    """Chunk size and overlap, in embedder tokens. MiniLM reads 256 tokens, so 200 leaves room for the heading."""

    max_tokens: int = 200
    overlap_tokens: int = 32

    def __post_init__(self) -> None:
        if self.max_tokens < 16 or not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise AttuneError(
                f"chunking needs max_tokens >= 16 and 0 <= overlap < max_tokens/2, got {self.max_tokens}/{self.overlap_tokens}"
            )


def _sections(text: str, title: str) -> list[tuple[str, list[str]]]:
    """(heading path, paragraphs) per section; text before the first heading belongs to the title."""
    stack: list[tuple[int, str]] = []
    sections: list[tuple[str, list[str]]] = []
    paragraphs: list[str] = []
    current: list[str] = []

    def path() -> str:
        names = [name for _, name in stack]
        if not stack or stack[0][0] != 1:
            names.insert(0, title)
        return " > ".join(names)

    def flush_paragraph() -> None:
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    heading = path()
    for line in text.splitlines():
        match = HEADING.match(line)
        if match:
            flush_paragraph()
            if paragraphs:
                sections.append((heading, paragraphs))
            paragraphs = []
            level = len(match.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, match.group(2)))
            heading = path()
        elif line.strip():
            current.append(line.strip())
        else:
            flush_paragraph()
    flush_paragraph()
    if paragraphs:
        sections.append((heading, paragraphs))
    return sections


def _pieces(paragraph: str, limit: int, count: Callable[[str], int]) -> list[tuple[str, int]]:
    """A paragraph as (sentence, tokens), and any sentence longer than `limit` tokens as word windows.

    A window's size is the sum of its words' token counts: exact for WordPiece (MiniLM splits at
    whitespace first), close for other tokenizers, and linear rather than quadratic in the sentence.
    """
    out = []
    for sentence in SENTENCE_END.split(paragraph):
        tokens = count(sentence)
        if tokens <= limit:
            out.append((sentence, tokens))
            continue
        window: list[str] = []
        used = 0
        for word in sentence.split():
            n = count(word)
            if window and used + n > limit:
                out.append((" ".join(window), used))
                window, used = [], 0
            window.append(word)
            used += n
        if window:
            out.append((" ".join(window), used))
    return out


def _pack(paragraphs: list[str], budget: int, overlap: int, count: Callable[[str], int]) -> list[str]:
    """Greedy packing: whole paragraphs while they fit, else sentence by sentence, with sentence overlap."""
    bodies: list[str] = []
    sentences: list[tuple[str, int, bool]] = []  # (text, tokens, starts a paragraph)
    used = 0
    fresh = False  # sentences holds more than the overlap carried from the last chunk

    def close() -> None:
        nonlocal sentences, used, fresh
        fresh = False
        bodies.append(_join(sentences))
        carried: list[tuple[str, int, bool]] = []
        for s in reversed(sentences):
            if sum(t for _, t, _ in carried) + s[1] > overlap:
                break
            carried.insert(0, s)
        sentences, used = carried, sum(t for _, t, _ in carried)

    for paragraph in paragraphs:
        pieces = _pieces(paragraph, budget, count)
        whole = sum(t for _, t in pieces)
        if sentences and used + whole > budget and whole <= budget:
            close()
        for i, (text, tokens) in enumerate(pieces):
            if sentences and used + tokens > budget:
                close()
                if used + tokens > budget:  # the carried overlap leaves no room: drop it
                    sentences, used = [], 0
            sentences.append((text, tokens, i == 0))
            used += tokens
            fresh = True
    if fresh:
        bodies.append(_join(sentences))
    return bodies


def _join(sentences: list[tuple[str, int, bool]]) -> str:
    text = ""
    for s, _, starts in sentences:
        text += ("\n\n" if starts and text else " " if text else "") + s
    return text


def chunk_document(document: Document, count_tokens: Callable[[str], int], options: ChunkOptions = ChunkOptions()) -> list[Chunk]:
    """Cut one document into chunks (see the module docstring for where cuts fall)."""
    title = document.metadata.get("title") or _title(document)
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for heading, paragraphs in _sections(document.text, title):
        budget = max(8, options.max_tokens - count_tokens(heading))
        for body in _pack(paragraphs, budget, options.overlap_tokens, count_tokens):
            text = f"{heading}\n{body}"
            digest = hashlib.sha1(f"{document.doc}\n{text}".encode()).hexdigest()[:10]
            seen[digest] = seen.get(digest, 0) + 1
            cid = f"{document.doc}#{digest}" + (f"-{seen[digest]}" if seen[digest] > 1 else "")
            meta = {**document.metadata, "section": heading, "ordinal": len(chunks)}
            chunks.append(Chunk(cid, document.doc, text, meta))
    return chunks


def _title(document: Document) -> str:
    for line in document.text.splitlines():
        match = HEADING.match(line)
        if match and len(match.group(1)) == 1:
            return match.group(2)
    return document.doc
