"""Zero-shot: the task input alone, with an optional system prompt."""

from __future__ import annotations

from typing import Any

from attune.prompting.base import PromptedExample, StrategyContext, user_turns, with_system


class ZeroShot:
    name = "zero-shot"

    def __init__(self, system: str | None, context: StrategyContext) -> None:
        self.system = system
        self.context = context

    def build(self, query: str, example: dict[str, Any]) -> PromptedExample:
        return PromptedExample(with_system(user_turns(example, self.context), self.system))

    def extract(self, output: str) -> str:
        return output


def build_strategy(options: dict[str, Any], context: StrategyContext) -> ZeroShot:
    return ZeroShot(options.get("system") or context.system, context)
