"""A data file as the Data page shows it: `attune data check` and `attune data inspect`, as page data.

`check` is `attune.data.check.check_file`; each problem also carries the raw text of its line so
the page shows what is wrong where. `inspect` renders records with `attune.data.render` (the
tokens training sees; supervised ones marked) and bins the token lengths for a histogram.
"""

from __future__ import annotations

import functools
import statistics
from itertools import islice
from pathlib import Path
from typing import Any

from attune.data.check import check_file, token_length
from attune.data.loading import iter_checked
from attune.data.records import Record

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".md")


def data_files(root: Path, limit: int = 500) -> list[str]:
    """Data files under `root` (relative paths), hidden folders and the runs' own files skipped."""
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or p.suffix not in DATA_SUFFIXES or not p.is_file():
            continue
        out.append(str(rel))
        if len(out) >= limit:
            break
    return out


def _line(path: Path, source: str) -> tuple[int | None, str | None]:
    """The 1-based line number in a `path:line` source, and that line's text (cut to 500 chars)."""
    head, _, tail = source.rpartition(":")
    if not tail.isdigit() or not path.is_file() or path.suffix not in (".jsonl", ".txt", ".md"):
        return None, None
    number = int(tail)
    with path.open(errors="replace") as f:
        text = next(islice(f, number - 1, None), None)
    return number, None if text is None else text.rstrip("\n")[:500]


def check(path: Path, format: str = "auto") -> dict[str, Any]:
    """Counts per record kind (the detected format) and every problem, each with its line's text."""
    report = check_file(path, format)
    problems = []
    for p in report.problems:
        line, raw = _line(path, p.source)
        problems.append({"text": str(p), "source": p.source, "field": p.field, "message": p.message,
                         "droppable": p.droppable, "line": line, "raw": raw})
    return {"path": str(path), "counts": report.counts, "ok": report.ok, "problems": problems}


@functools.lru_cache(maxsize=4)
def _tokenizer(model: str):
    from attune.models import load_tokenizer

    return load_tokenizer(model)


def _segments(tokenizer: Any, ids: list[int], supervised: list[bool]) -> list[list[Any]]:
    """[text, supervised] runs: consecutive tokens of the same kind decoded together."""
    out: list[list[Any]] = []
    for tok, sup in zip(ids, supervised):
        piece = tokenizer.decode([tok])
        if out and out[-1][1] == sup:
            out[-1][0] += piece
        else:
            out.append([piece, sup])
    return out


def render(tokenizer: Any, record: Record, max_length: int) -> list[dict[str, Any]]:
    """The parts `attune data inspect` prints for one record, as token runs (True = in the loss)."""
    from attune.data.render import encode_preference, encode_prompt, encode_record

    if record.kind == "preference":
        enc = encode_preference(tokenizer, record, max_length=max_length)
        return [{"label": "prompt", "segments": _segments(tokenizer, enc.prompt_ids, [False] * len(enc.prompt_ids))},
                {"label": "chosen", "segments": _segments(tokenizer, enc.chosen_ids, [True] * len(enc.chosen_ids))},
                {"label": "rejected", "segments": _segments(tokenizer, enc.rejected_ids, [True] * len(enc.rejected_ids))}]
    if record.kind == "prompt":
        ids = encode_prompt(tokenizer, record.prompt)
        parts = [{"label": "prompt", "segments": _segments(tokenizer, ids, [False] * len(ids))}]
        if record.answer is not None:
            parts.append({"label": "reference answer", "segments": [[record.answer, False]]})
        return parts
    enc = encode_record(tokenizer, record, max_length=max_length)
    return [{"label": "", "segments": _segments(tokenizer, enc.input_ids, [lab != -100 for lab in enc.labels])}]


def histogram(lengths: list[int], bins: int = 12) -> list[dict[str, int]]:
    """Equal-width bins over [min, max] with their counts."""
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    bins = min(bins, hi - lo + 1)
    width = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * bins
    for n in lengths:
        counts[min(bins - 1, (n - lo) // width)] += 1
    return [{"from": lo + i * width, "to": lo + (i + 1) * width - 1, "count": c} for i, c in enumerate(counts)]


def inspect(path: Path, model: str, n: int = 3, max_length: int = 1024, format: str = "auto") -> dict[str, Any]:
    """Rendered examples and token-length statistics over the file's valid records."""
    tokenizer = _tokenizer(model)
    records = [r for r, _ in iter_checked(path, format) if r is not None]
    lengths = [token_length(tokenizer, r) for r in records]
    stats = {}
    if lengths:
        ordered = sorted(lengths)
        stats = {"records": len(ordered), "min": ordered[0], "median": statistics.median(ordered),
                 "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max": ordered[-1],
                 "over": sum(1 for x in ordered if x > max_length), "max_length": max_length}
    return {"model": model, "examples": [{"source": r.source, "kind": r.kind, "parts": render(tokenizer, r, max_length)}
                                         for r in records[:n]], "stats": stats, "histogram": histogram(lengths)}
