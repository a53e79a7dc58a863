"""`load_records` / `iter_records`: any supported file (or folder, or builtin:NAME) -> canonical records.

Malformed input (bad JSON, missing or mistyped fields) raises `DataError` listing every problem
before any training starts. Faults training can survive (an empty reply, chosen == rejected) drop
the record with one warning that counts them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from attune.data.formats import FORMATS, convert, detect_format
from attune.data.readers import iter_rows
from attune.data.records import DataError, Problem, Record, TextRecord
from attune.errors import AttuneError

if TYPE_CHECKING:
    from attune.recipe import DataSource


def _resolve(source: "DataSource | str | Path", format: str, base_dir: Path | None, limit: int | None):
    from attune.builtin import resolve_path

    if isinstance(source, (str, Path)):
        return resolve_path(str(source), base_dir), format, "text", limit, "file"
    fmt = source.format if source.format != "auto" else format
    return resolve_path(source.path, base_dir), fmt, source.text_field, limit or source.limit, source.text_split


def iter_checked(
    path: Path, format: str = "auto", text_field: str = "text", text_split: str = "file"
) -> Iterator[tuple[Record | None, list[Problem]]]:
    """Every row as (record, problems); never raises for bad rows (used by `data check`)."""
    fmt = None if format == "auto" else format
    if fmt is not None and fmt not in FORMATS:
        raise AttuneError(f"unknown data format {format!r}; known: {', '.join(FORMATS)}")
    for source, row in iter_rows(path):
        if isinstance(row, Problem):
            yield None, [row]
            continue
        if isinstance(row, str):
            for i, block in enumerate(_blocks(row, text_split)):
                yield TextRecord(block, source if text_split == "file" else f"{source}#block{i + 1}"), []
            continue
        if fmt is None:
            fmt = detect_format(row, text_field)
            if fmt is None:
                yield None, [Problem(source, "", f"cannot tell the format from fields {sorted(row)}; expected one of "
                                      "messages, conversations, instruction/output, prompt/completion, "
                                      f"prompt/chosen/rejected, prompt, {text_field}")]
                fmt = None
                continue
        yield convert(row, fmt, source, text_field)


def _blocks(text: str, split: str) -> list[str]:
    if split == "blank-line":
        return [b.strip() for b in text.split("\n\n") if b.strip()]
    return [text] if text.strip() else []


def iter_records(
    source: "DataSource | str | Path", *, format: str = "auto", base_dir: Path | None = None, limit: int | None = None
) -> Iterator[Record]:
    """Stream records; raises `DataError` at the first hard fault (use `load_records` for all of them)."""
    path, fmt, text_field, limit, split = _resolve(source, format, base_dir, limit)
    n = 0
    for record, problems in iter_checked(path, fmt, text_field, split):
        hard = [p for p in problems if not p.droppable]
        if hard:
            raise DataError(hard)
        if record is not None:
            yield record
            n += 1
            if limit and n >= limit:
                return


def load_records(
    source: "DataSource | str | Path", *, format: str = "auto", base_dir: Path | None = None, limit: int | None = None
) -> list[Record]:
    """Every record of a source; all hard faults are reported together, droppable ones counted."""
    path, fmt, text_field, limit, split = _resolve(source, format, base_dir, limit)
    records: list[Record] = []
    hard: list[Problem] = []
    dropped: list[Problem] = []
    for record, problems in iter_checked(path, fmt, text_field, split):
        hard += [p for p in problems if not p.droppable]
        dropped += [p for p in problems if p.droppable]
        if record is not None and (not limit or len(records) < limit):
            records.append(record)
    if hard:
        raise DataError(hard)
    if dropped:
        reasons: dict[str, int] = {}
        for p in dropped:
            reasons[p.message] = reasons.get(p.message, 0) + 1
        detail = ", ".join(f"{n} {why}" for why, n in reasons.items())
        print(f"attune: {path}: dropped {len(dropped)} record(s): {detail} (see `attune data check`)", file=sys.stderr)
    if not records:
        raise AttuneError(f"{path}: no usable records")
    return records


