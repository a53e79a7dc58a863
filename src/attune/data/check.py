"""`attune data check`: every fault of a data file, each with file:line and field, in one pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attune.data.loading import iter_checked
from attune.data.records import PreferenceRecord, Problem, PromptRecord, Record
from attune.data.render import encode_preference, encode_prompt, encode_record

_NO_LIMIT = 10**9


@dataclass
class CheckReport:
    """What `check_file` found: usable records per kind, and every problem in file order."""

    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def token_length(tokenizer: Any, record: Record) -> int:
    """Tokens a record occupies in training (a preference pair: prompt + the longer reply)."""
    if isinstance(record, PreferenceRecord):
        enc = encode_preference(tokenizer, record, max_length=_NO_LIMIT)
        return len(enc.prompt_ids) + max(len(enc.chosen_ids), len(enc.rejected_ids))
    if isinstance(record, PromptRecord):
        return len(encode_prompt(tokenizer, record.prompt))
    return len(encode_record(tokenizer, record, max_length=_NO_LIMIT).input_ids)


def check_file(path: Path, format: str = "auto", tokenizer: Any = None, max_length: int | None = None) -> CheckReport:
    """Validate every record without stopping at the first fault.

    With a tokenizer and `max_length`, records that training would truncate are flagged too.
    """
    report = CheckReport(Path(path))
    for record, problems in iter_checked(Path(path), format):
        report.problems += problems
        if record is None:
            continue
        report.counts[record.kind] = report.counts.get(record.kind, 0) + 1
        if tokenizer is not None and max_length is not None:
            n = token_length(tokenizer, record)
            if n > max_length:
                report.problems.append(Problem(record.source, "", f"{n} tokens, over max length {max_length}", droppable=True))
    if not report.counts and not report.problems:  # what training refuses, `data check` refuses too
        report.problems.append(Problem(str(path), "", "no usable records (the file is empty)"))
    return report
