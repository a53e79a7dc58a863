"""`load_records` / `iter_records`: any supported file (or folder, or builtin:NAME) -> canonical records.

Malformed input (bad JSON, missing or mistyped fields) raises `DataError` listing every problem
before any training starts. Faults training can survive (an empty reply, chosen == rejected) drop
the record with one warning to stderr that counts them.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from attune.data.formats import FORMATS, convert, detect_format, guess_format
from attune.data.readers import iter_rows
from attune.data.records import DataError, Problem, Record, TextRecord
from attune.errors import AttuneError, unknown

if TYPE_CHECKING:
    from attune.data.source import DataSource


def _resolve(source: DataSource | str | Path, format: str, base_dir: Path | None, limit: int | None):
    from attune.builtin import resolve_path

    if isinstance(source, (str, Path)):
        return resolve_path(str(source), base_dir), format, "text", limit, "file"
    fmt = source.format if source.format != "auto" else format
    return resolve_path(source.path, base_dir), fmt, source.text_field, limit or source.limit, source.text_split


def iter_checked(
    path: Path, format: str = "auto", text_field: str = "text", text_split: str = "file"
) -> Iterator[tuple[Record | None, list[Problem]]]:
    """Every row as (record, problems); never raises for bad rows (used by `data check`).

    With format "auto" the format is detected from the first row whose fields fit one, then
    applied to every row, so a stray row of another shape is reported by its missing fields.
    """
    if format != "auto" and format not in FORMATS:
        raise unknown("data format", format, ("auto", *FORMATS))
    fmt = None if format == "auto" else format
    detected = "" if fmt else None  # where "auto" found the format: named when another row does not fit it
    for source, row in iter_rows(path, text_split):
        if isinstance(row, Problem):
            yield None, [row]
            continue
        if isinstance(row, str):  # one document (the reader already split blank-line blocks)
            yield TextRecord(row, source), []
            continue
        if fmt is None:
            try:
                fmt = detect_format(row, text_field, source)
            except DataError as exc:
                yield None, exc.problems
                continue
            detected = f" (detected from {source})"
        record, problems = convert(row, fmt, source, text_field)
        own = guess_format(row, text_field)
        if problems and own not in (None, fmt):
            hint = f"; the file is read as format {fmt}{detected}, this row looks like {own} (set format: or split the file)"
            problems = [replace(p, message=p.message + hint) for p in problems]
        yield record, problems


def _warn_dropped(path: Path, dropped: list[Problem]) -> None:
    if dropped:
        reasons = Counter(p.message for p in dropped)
        detail = ", ".join(f"{n} {why}" for why, n in reasons.items())
        print(f"attune: {path}: dropped {len(dropped)} record(s): {detail} (see `attune data check`)", file=sys.stderr)


def iter_records(
    source: DataSource | str | Path, *, format: str = "auto", base_dir: Path | None = None, limit: int | None = None
) -> Iterator[Record]:
    """Stream records one row at a time (constant memory, for corpora bigger than RAM).

    Raises `DataError` at the first malformed row (use `load_records` or `attune data check`
    to see all of them); droppable rows are skipped and counted in one warning at the end.
    """
    path, fmt, text_field, limit, split = _resolve(source, format, base_dir, limit)
    n = 0
    dropped: list[Problem] = []
    for record, problems in iter_checked(path, fmt, text_field, split):
        hard = [p for p in problems if not p.droppable]
        if hard:
            raise DataError(hard)
        dropped += problems
        if record is not None:
            yield record
            n += 1
            if limit and n >= limit:
                break
    _warn_dropped(path, dropped)


def load_records(
    source: DataSource | str | Path, *, format: str = "auto", base_dir: Path | None = None, limit: int | None = None
) -> list[Record]:
    """Every record of a source (or the first `limit`); all hard faults are reported together.

    Rows after the first `limit` usable records are not read, so they are not checked either.
    """
    path, fmt, text_field, limit, split = _resolve(source, format, base_dir, limit)
    records: list[Record] = []
    hard: list[Problem] = []
    dropped: list[Problem] = []
    for record, problems in iter_checked(path, fmt, text_field, split):
        hard += [p for p in problems if not p.droppable]
        dropped += [p for p in problems if p.droppable]
        if record is not None:
            records.append(record)
            if limit and len(records) >= limit:
                break
    if hard:
        raise DataError(hard)
    _warn_dropped(path, dropped)
    if not records:
        raise AttuneError(f"{path}: no usable records")
    return records
