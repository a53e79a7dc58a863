"""Read data files into (source, row) pairs without loading more than needed.

JSONL is read line by line (exact line numbers, malformed lines reported, constant memory: a line
over `MAX_LINE_BYTES` is reported with its size and never held whole); files must be UTF-8 (a
UTF-8 byte-order mark is skipped, UTF-16/32 is refused with the reason, invalid bytes are named
by line; the same holds for text files);
CSV / Parquet / Arrow go through `datasets` in streaming mode; `.txt` / `.md` files are one
document each (or, with `text_split="blank-line"`, one per blank-line-separated block, read line by
line so a text file larger than memory streams too), and a folder yields every text-like file inside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from attune.data.records import Problem
from attune.errors import AttuneError

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
MAX_LINE_BYTES = 16 * 2**20  # one JSONL record; far above any real chat record, far below what exhausts memory
_BOMS = [(b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"), (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16")]
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}

Row = dict[str, Any] | str | Problem


def iter_rows(path: Path, text_split: str = "file") -> Iterator[tuple[str, Row]]:
    """Yield (source, row); a row is a dict, a document string, or a `Problem` for unreadable input."""
    if not path.exists():
        raise AttuneError(f"{path}: data file not found")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES + (".jsonl",))
        if not files:
            raise AttuneError(f"{path}: folder has no .txt/.md/.jsonl files")
        for f in files:
            yield from iter_rows(f, text_split)
        return
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _jsonl(path)
    elif suffix == ".json":
        yield from _json(path)
    elif suffix in TABLE_SUFFIXES:
        yield from _table(path, TABLE_SUFFIXES[suffix])
    elif suffix in TEXT_SUFFIXES and text_split == "blank-line":
        yield from _text_blocks(path)
    elif suffix in TEXT_SUFFIXES:
        yield from _text_file(path)
    else:
        raise AttuneError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .json, .csv, .parquet, .txt or .md)")


def _utf8_start(path: Path, fh) -> None:
    """Skip a UTF-8 byte-order mark; refuse UTF-16/32 (with or without a BOM) with the reason."""
    head = fh.read(4)
    wide = next((name for bom, name in _BOMS if head.startswith(bom)), None)
    if wide is None and len(head) >= 2 and b"\x00" in head[:2]:
        wide = "UTF-16 or UTF-32 (NUL bytes between the characters)"
    if wide:
        raise AttuneError(f"{path}: the file is {wide}; attune reads UTF-8: convert it to UTF-8 "
                          f"(e.g. iconv -f {wide.split()[0]} -t UTF-8)")
    fh.seek(3 if head.startswith(b"\xef\xbb\xbf") else 0)


def _lines(path: Path) -> Iterator[tuple[int, str | Problem]]:
    """(line number, text) of a UTF-8 file, or a `Problem` for an over-long line or invalid UTF-8."""
    with open(path, "rb") as fh:
        _utf8_start(path, fh)
        n = 0
        while line := fh.readline(MAX_LINE_BYTES + 1):
            n += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):  # too long: count its bytes, keep none
                size = len(line)
                while line := fh.readline(MAX_LINE_BYTES):
                    size += len(line)
                    if line.endswith(b"\n"):
                        break
                yield n, Problem(f"{path}:{n}", "", f"line is {size} bytes, over the limit of {MAX_LINE_BYTES} bytes per record "
                                 "(attune.data.readers.MAX_LINE_BYTES); split or shorten the record")
                continue
            try:
                yield n, line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield n, Problem(f"{path}:{n}", "", f"invalid UTF-8 at byte {exc.start} of the line "
                                 f"({line[exc.start:exc.start + 4]!r}); save the file as UTF-8")


def _jsonl(path: Path) -> Iterator[tuple[str, Row]]:
    for n, line in _lines(path):
        source = f"{path}:{n}"
        if isinstance(line, Problem):
            yield source, line
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield source, Problem(source, "", f"malformed JSON ({exc.msg} at column {exc.colno})")
            continue
        yield source, row if isinstance(row, dict) else Problem(source, "", "expected a JSON object per line")


def _text_file(path: Path) -> Iterator[tuple[str, Row]]:
    """The whole file as one document, checked line by line for its encoding like JSONL."""
    parts: list[str] = []
    for n, line in _lines(path):
        if isinstance(line, Problem):
            yield f"{path}:{n}", line
            continue
        parts.append(line)
    text = "".join(parts)
    if text.strip():
        yield f"{path}:1", text


def _text_blocks(path: Path) -> Iterator[tuple[str, Row]]:
    """Blank-line-separated blocks, each with the line it starts on; never more than one block in memory."""
    block: list[str] = []
    start = 1
    for n, line in _lines(path):
        if isinstance(line, Problem):
            yield f"{path}:{n}", line
            continue
        if line.strip():
            if not block:
                start = n
            block.append(line)
        elif block:
            yield f"{path}:{start}", "".join(block).strip()
            block = []
    if block:
        yield f"{path}:{start}", "".join(block).strip()


def _json(path: Path) -> Iterator[tuple[str, Row]]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AttuneError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from exc
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    for i, row in enumerate(data):
        source = f"{path}:record {i + 1}"
        yield source, row if isinstance(row, dict) else Problem(source, "", "expected a JSON object")


def _table(path: Path, builder: str) -> Iterator[tuple[str, Row]]:
    from datasets import load_dataset

    ds = load_dataset(builder, data_files=str(path), split="train", streaming=True)
    header = 1 if builder == "csv" else 0
    for i, row in enumerate(ds):
        if builder == "csv":  # CSV has no types: `datasets` guesses ints and floats, but cells are text
            row = {k: v if v is None or isinstance(v, str) else str(v) for k, v in row.items()}
        yield f"{path}:{i + 1 + header}", dict(row)
