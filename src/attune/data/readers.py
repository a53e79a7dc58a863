"""Read data files into (source, row) pairs without loading more than needed.

JSONL is read line by line (exact line numbers, malformed lines reported, constant memory);
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
        text = path.read_text(errors="replace")
        if text.strip():
            yield f"{path}:1", text
    else:
        raise AttuneError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .json, .csv, .parquet, .txt or .md)")


def _jsonl(path: Path) -> Iterator[tuple[str, Row]]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            source = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield source, Problem(source, "", f"malformed JSON ({exc.msg} at column {exc.colno})")
                continue
            yield source, row if isinstance(row, dict) else Problem(source, "", "expected a JSON object per line")


def _text_blocks(path: Path) -> Iterator[tuple[str, str]]:
    """Blank-line-separated blocks, each with the line it starts on; never more than one block in memory."""
    block: list[str] = []
    start = 1
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
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
