"""`attune data check`: every fault of a data file, each with file:line and field, in one pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attune.data.loading import iter_checked
from attune.data.records import ChatRecord, CompletionRecord, PreferenceRecord, Problem, Record, TextRecord


@dataclass
class CheckReport:
    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _length(tokenizer: Any, record: Record, max_length: int) -> int:
    from attune.data.render import encode_preference, encode_record

    big = 10**9
    if isinstance(record, PreferenceRecord):
        enc = encode_preference(tokenizer, record, max_length=big)
        return len(enc.prompt_ids) + max(len(enc.chosen_ids), len(enc.rejected_ids))
    if isinstance(record, (ChatRecord, CompletionRecord, TextRecord)):
        return len(encode_record(tokenizer, record, max_length=big).input_ids)
    from attune.data.render import encode_prompt

    return len(encode_prompt(tokenizer, record.prompt))


def check_file(path: Path, format: str = "auto", tokenizer: Any = None, max_length: int | None = None) -> CheckReport:
    """Validate every record; with a tokenizer and max_length, also flag records that would be truncated."""
    report = CheckReport(Path(path))
    for record, problems in iter_checked(Path(path), format):
        report.problems += problems
        if record is None:
            continue
        report.counts[record.kind] = report.counts.get(record.kind, 0) + 1
        if tokenizer is not None and max_length is not None:
            n = _length(tokenizer, record, max_length)
            if n > max_length:
                report.problems.append(Problem(record.source, "", f"{n} tokens, over max length {max_length}", droppable=True))
    return report
