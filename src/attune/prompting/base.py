"""The external-adaptation seam: a strategy turns a task example into the prompt to send.

A strategy is one module exposing a factory `build_strategy(options, context) -> Strategy`,
registered in `STRATEGIES` by "module:function" (imported lazily, so `rag` pulls in retrieval
only when used). `options` are a compare candidate's fields (k, selection, pool, index, system,
...) or the matching `attune eval` flags (`--k`, `--selection`, `--pool`, `--index`, `--system`).

`build(query, example)` gets the task's input text (`query`: the last user message for chat
data) and the task example (`input`, `reference`, `raw` = the record as read), and returns the
prompt to send plus `meta` (shots chosen, sources retrieved) that the results record.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from attune.errors import AttuneError, unknown
from attune.models.generation import Message, Prompt


@dataclass
class PromptedExample:
    """The prompt a strategy built for one example, and what it wants recorded about it."""

    prompt: Prompt
    meta: dict[str, Any] = field(default_factory=dict)


class Strategy(Protocol):
    name: str

    def build(self, query: str, example: dict[str, Any]) -> PromptedExample: ...

    def extract(self, output: str) -> str:
        """The answer inside a generation (identity unless the strategy asks for a format)."""
        ...


@dataclass
class StrategyContext:
    """What a strategy may need besides its options.

    `pool` holds solved examples (`input`, `query`, `reference`) for few-shot; `system` and
    `template` come from the task (a candidate's own `system` option wins).
    """

    tokenizer: Any | None = None
    pool: list[dict[str, Any]] | None = None
    base_dir: Path = Path(".")
    seed: int = 0
    system: str | None = None
    template: str = "{input}"


STRATEGIES: dict[str, str] = {
    "zero-shot": "attune.prompting.zero_shot:build_strategy",
    "few-shot": "attune.prompting.few_shot:build_strategy",
    "cot": "attune.prompting.cot:build_strategy",
    "rag": "attune.rag.strategy:build_strategy",
}


def build_strategy(name: str, options: dict[str, Any], context: StrategyContext) -> Strategy:
    if name not in STRATEGIES:
        raise unknown("strategy", name, STRATEGIES)
    module, _, fn = STRATEGIES[name].partition(":")
    try:
        factory = getattr(importlib.import_module(module), fn)
    except ModuleNotFoundError as exc:
        raise AttuneError(f"strategy {name!r} is not available in this installation ({exc.name} is missing)") from exc
    return factory(options, context)


def user_turns(example: dict[str, Any], context: StrategyContext) -> list[Message]:
    """The example's conversation so far: chat input as is, text input through the task template."""
    value = example["input"]
    if isinstance(value, list):
        return [dict(m) for m in value]
    return [{"role": "user", "content": context.template.format(input=value)}]


def with_system(messages: list[Message], system: str | None) -> list[Message]:
    if not system:
        return messages
    rest = [m for m in messages if m["role"] != "system"]
    return [{"role": "system", "content": system}, *rest]
