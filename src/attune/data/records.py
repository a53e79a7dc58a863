"""Canonical record kinds: every input format becomes one of these five.

`source` is "path:line" (1-based), so every later error can point at the line it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from attune.errors import AttuneError

Message = dict[str, str]


@dataclass(frozen=True)
class ChatRecord:
    """A conversation (also what alpaca instruction/input/output and ShareGPT become)."""

    messages: list[Message]
    source: str
    kind = "chat"


@dataclass(frozen=True)
class CompletionRecord:
    """Raw prompt + completion, no chat template; the loss is on the completion."""

    prompt: str
    completion: str
    source: str
    kind = "completion"


@dataclass(frozen=True)
class TextRecord:
    """Unlabelled text for continued pretraining or perplexity."""

    text: str
    source: str
    kind = "text"


@dataclass(frozen=True)
class PreferenceRecord:
    """A prompt with a preferred and a rejected assistant reply."""

    prompt: list[Message]
    chosen: str
    rejected: str
    source: str
    kind = "preference"


@dataclass(frozen=True)
class PromptRecord:
    """A prompt only (RL rollouts, distillation), with an optional reference answer."""

    prompt: list[Message]
    answer: str | None
    source: str
    kind = "prompt"


Record = Union[ChatRecord, CompletionRecord, TextRecord, PreferenceRecord, PromptRecord]
KINDS = ("chat", "completion", "text", "preference", "prompt")


@dataclass(frozen=True)
class Problem:
    """One fault in one record: where, which field, what is wrong."""

    source: str
    field: str
    message: str
    droppable: bool = False
    """True for faults training can survive by dropping the record (empty reply, chosen == rejected)."""

    def __str__(self) -> str:
        return f"{self.source}: {self.field}: {self.message}" if self.field else f"{self.source}: {self.message}"


class DataError(AttuneError):
    """Bad input data; the message lists every problem found (up to a limit)."""

    def __init__(self, problems: list[Problem], limit: int = 20) -> None:
        self.problems = problems
        shown = [f"  {p}" for p in problems[:limit]]
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{len(problems)} bad record(s):\n" + "\n".join(shown) + more)
