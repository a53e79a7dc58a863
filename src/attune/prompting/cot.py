"""Chain-of-thought: ask for step-by-step reasoning, then take the text after the last "Answer:"
(Kojima et al. 2022, "Large Language Models are Zero-Shot Reasoners")."""

from __future__ import annotations

from typing import Any

from attune.prompting.base import PromptedExample, StrategyContext, user_turns, with_system
from attune.prompting.extraction import extract

INSTRUCTION = "\n\nThink step by step. Then give the final answer on the last line, starting with 'Answer:'."


class ChainOfThought:
    name = "cot"

    def __init__(self, system: str | None, context: StrategyContext) -> None:
        self.system = system
        self.context = context

    def build(self, query: str, example: dict[str, Any]) -> PromptedExample:
        messages = user_turns(example, self.context)
        messages[-1] = {**messages[-1], "content": messages[-1]["content"] + INSTRUCTION}
        return PromptedExample(with_system(messages, self.system))

    def extract(self, output: str) -> str:
        return extract(output, "after_answer")


def build_strategy(options: dict[str, Any], context: StrategyContext) -> ChainOfThought:
    return ChainOfThought(options.get("system") or context.system, context)
