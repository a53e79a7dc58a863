"""External adaptation: zero-shot, few-shot (random or by similarity) and chain-of-thought prompts."""

from attune.prompting.base import STRATEGIES, PromptedExample, Strategy, StrategyContext, build_strategy

__all__ = ["STRATEGIES", "PromptedExample", "Strategy", "StrategyContext", "build_strategy"]
