"""The `rag` prompting strategy: retrieve passages for the query, put them numbered before the question.

Options (a compare candidate's fields, or `attune eval --strategy rag --index ... --k ...`):
`index` is an index directory (built with `attune rag index`) or documents to index (a file,
a folder, `builtin:corpora/northwind`); documents are indexed once into attune's cache and
re-indexed incrementally, so a second run embeds nothing. `k` passages (default 4); optional
`mode` (hybrid | dense | bm25), `rerank` (a local cross-encoder dir) and `answer`
(auto | extractive | generative, as `answer_question`: extractive quotes the best sentence of the
retrieved passages instead of generating; auto does so for small local readers).

As a strategy it always answers (evaluation scores the answer); the "I don't know" threshold
belongs to `answer_question`. Citation markers are removed before scoring.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attune.errors import AttuneError, unknown
from attune.models.generation import GenerationParams, Generator
from attune.prompting.base import PromptedExample, StrategyContext, user_turns, with_system
from attune.rag.answer import ANSWER_MODES, answer_mode, grounded_messages, quoted_answer, strip_citations
from attune.rag.index import CURRENT, build_index, open_index
from attune.rag.passage import Passage
from attune.rag.retrieve import RagIndex


@dataclass
class RagPrompt(PromptedExample):
    """The grounded prompt, plus what an extractive answer is chosen from (not recorded in results)."""

    question: str = ""
    passages: list[Passage] = field(default_factory=list)


def index_for(source: str, base_dir: Path = Path("."), reranker: str | None = None) -> RagIndex:
    """Open `source` if it is an index dir; otherwise index those documents into the cache and open that."""
    from attune.builtin import resolve_path
    from attune.models.builtin import cache_root

    path = resolve_path(source, base_dir)
    if (path / CURRENT).is_file():
        return open_index(path, reranker)
    if not path.exists():
        raise AttuneError(f"rag: index {source!r} is neither an index directory nor documents to index ({path} does not exist)")
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    cached = cache_root() / "rag" / f"{path.name}-{key}"
    build_index([path], cached)
    return open_index(cached, reranker)


class RagStrategy:
    name = "rag"

    def __init__(self, index: RagIndex, k: int, mode: str, system: str | None, context: StrategyContext, answer: str = "auto") -> None:
        self.index = index
        self.k = k
        self.mode = mode
        self.system = system
        self.context = context
        self.answer = answer

    def build(self, query: str, example: dict[str, Any]) -> RagPrompt:
        passages = self.index.search(query, self.k, mode=self.mode)  # type: ignore[arg-type]
        messages = with_system(grounded_messages(user_turns(example, self.context), passages), self.system)
        meta = {"passages": [p.id for p in passages], "docs": [p.doc for p in passages]}
        return RagPrompt(messages, meta, query, passages)

    def respond(self, generator: Generator, built: list[RagPrompt], params: GenerationParams) -> list[str]:
        """Generate from the grounded prompts, or quote a sentence of each one's passages (extractive)."""
        if answer_mode(self.answer, generator) == "generative":
            return generator.generate([b.prompt for b in built], params)
        from attune.rag.extractive import scorer_for

        scorer = scorer_for(generator, self.index.reranker)
        outputs = []
        for b in built:
            text, cited = quoted_answer(b.question, b.passages, scorer)
            b.meta.update(answer="extractive", cited=cited)
            outputs.append(text)
        return outputs

    def extract(self, output: str) -> str:
        return strip_citations(output)


def build_strategy(options: dict[str, Any], context: StrategyContext) -> RagStrategy:
    source = options.get("index")
    if not source:
        raise AttuneError("the rag strategy needs `index`: an index directory or the documents to index (e.g. builtin:corpora/northwind)")
    k = int(options.get("k") or 4)
    mode = options.get("mode") or "hybrid"
    index = index_for(str(source), context.base_dir, options.get("rerank"))
    answer = options.get("answer") or "auto"
    if answer not in ANSWER_MODES:
        raise unknown("answer mode", answer, ANSWER_MODES)
    return RagStrategy(index, k, mode, options.get("system") or context.system, context, answer)
