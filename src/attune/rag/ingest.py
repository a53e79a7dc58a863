"""Documents in: Markdown, plain text, HTML, PDF and JSONL from files or folders.

Every document comes out as `Document(doc, text, metadata, sha)`: `doc` is its name in the index
(the path relative to the folder it was found in, or `file.jsonl#id` for a JSONL record), `sha`
the hash of its bytes, the key incremental indexing compares. A file that cannot be read
(binary junk, empty, a broken or image-only PDF, a bad JSONL line) becomes a `Skipped(path,
reason)` and the scan goes on: one bad file never stops an index build.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable

from attune.errors import AttuneError

TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
JSONL_TEXT_FIELDS = ("text", "content", "body")


@dataclass
class Document:
    doc: str
    text: str
    sha: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skipped:
    path: str
    reason: str


class _NotReadable(Exception):
    """A file that is skipped, with the reason the report prints."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise _NotReadable("binary data, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _NotReadable(f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise _NotReadable("empty")
    return text


class _HTMLText(HTMLParser):
    """HTML -> Markdown-ish text: headings become `#` lines, blocks become paragraphs, scripts vanish."""

    BLOCKS = {"p", "div", "li", "tr", "br", "section", "article", "blockquote", "pre", "table", "ul", "ol"}
    HIDDEN = {"script", "style", "head", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._hidden = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        if tag == "title":
            self._in_title = True
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        if tag == "title":
            self._in_title = False
        if tag in self.BLOCKS or (len(tag) == 2 and tag[0] == "h"):
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._hidden:
            self.parts.append(" ".join(data.split()) + (" " if data[-1:].isspace() else ""))

    def text(self) -> str:
        paragraphs = [" ".join(p.split()) for p in "".join(self.parts).split("\n\n")]
        body = "\n\n".join(p for p in paragraphs if p)
        if self.title.strip() and not body.startswith("# "):
            body = f"# {' '.join(self.title.split())}\n\n{body}"
        return body


def _read_text(path: Path, data: bytes) -> str:
    return _decode(data)


def _read_html(path: Path, data: bytes) -> str:
    parser = _HTMLText()
    parser.feed(_decode(data))
    text = parser.text()
    if not text.strip():
        raise _NotReadable("HTML with no text")
    return text


def _read_pdf(path: Path, data: bytes) -> str:
    """Each page becomes a `## page N` section, so chunks never straddle pages and can cite them."""
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise _NotReadable(f"unreadable PDF ({type(exc).__name__}: {exc})") from None
    if not any(p.strip() for p in pages):
        raise _NotReadable("PDF without extractable text (scanned images?)")
    return "\n\n".join(f"## page {i}\n\n{p.strip()}" for i, p in enumerate(pages, 1) if p.strip())


READERS: dict[str, Callable[[Path, bytes], str]] = {
    **{s: _read_text for s in TEXT_SUFFIXES},
    **{s: _read_html for s in HTML_SUFFIXES},
    ".pdf": _read_pdf,
}


def _jsonl_documents(path: Path, name: str, data: bytes, skipped: list[Skipped]) -> list[Document]:
    """One document per record: `text`/`content`/`body` is the text, `id` names it, other scalars are metadata."""
    from attune.data.readers import iter_rows
    from attune.data.records import Problem

    docs = []
    try:
        _decode(data)
    except _NotReadable as exc:
        skipped.append(Skipped(str(path), str(exc)))
        return []
    for where, row in iter_rows(path):
        if isinstance(row, Problem):
            skipped.append(Skipped(where, row.message))
            continue
        text_field = next((f for f in JSONL_TEXT_FIELDS if isinstance(row.get(f), str)), None)
        if text_field is None or not row[text_field].strip():
            skipped.append(Skipped(where, f"no text: a record needs one of the fields {', '.join(JSONL_TEXT_FIELDS)}"))
            continue
        key = str(row.get("id", where.rpartition(":")[2]))
        meta = {k: v for k, v in row.items() if k != text_field and isinstance(v, (str, int, float, bool))}
        text = row[text_field]
        if isinstance(row.get("title"), str) and not text.lstrip().startswith("#"):
            text = f"# {row['title']}\n\n{text}"
        docs.append(Document(f"{name}#{key}", text, _sha(json.dumps(row, sort_keys=True).encode()), meta))
    return docs


def _candidates(path: Path) -> list[tuple[Path, str]]:
    """(file, name in the index) for a file or every visible file under a folder."""
    if path.is_file():
        return [(path, path.name)]
    files = [
        p for p in sorted(path.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]
    return [(p, p.relative_to(path).as_posix()) for p in files]


def load_documents(paths: list[str | Path]) -> tuple[list[Document], list[Skipped]]:
    """Read every supported document under `paths`; unreadable ones are returned as `Skipped`, not raised.

    Raises AttuneError only for what the user must fix first: a path that does not exist, or two
    documents that would get the same name in the index.
    """
    from attune.builtin import resolve_path

    docs: list[Document] = []
    skipped: list[Skipped] = []
    seen: dict[str, Path] = {}
    for raw in paths:
        root = resolve_path(str(raw))
        if not root.exists():
            raise AttuneError(f"{raw}: no such file or folder to index")
        for file, name in _candidates(root):
            suffix = file.suffix.lower()
            if suffix != ".jsonl" and suffix not in READERS:
                skipped.append(Skipped(str(file), f"unsupported file type {suffix or '(none)'!r}"))
                continue
            if name in seen:
                raise AttuneError(f"{file} and {seen[name]} would both be called {name!r} in the index; index one of their folders instead")
            seen[name] = file
            try:
                data = file.read_bytes()
            except OSError as exc:
                skipped.append(Skipped(str(file), f"cannot read ({exc.strerror})"))
                continue
            if suffix == ".jsonl":
                docs += _jsonl_documents(file, name, data, skipped)
                continue
            try:
                text = READERS[suffix](file, data)
            except _NotReadable as exc:
                skipped.append(Skipped(str(file), str(exc)))
                continue
            docs.append(Document(name, text, _sha(data), {"format": suffix.lstrip(".")}))
    return docs, skipped
