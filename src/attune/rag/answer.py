"""Grounded answers: numbered passages in the prompt, citations like [2] out, "I don't know" when nothing fits.

The prompt numbers the retrieved passages [1]..[k] and asks the model to cite them. After
generation, every marker that points at no passage ([7] with five passages, [0]) is removed
and counted in `dropped_citations`; the passages the remaining markers point at are the
answer's `sources`.

The model is not asked at all, and the answer is "I don't know.", only when both retrievers'
evidence is weak: the closest chunk is far from the question (cosine similarity of MiniLM
embeddings below `threshold`) *and* no retrieved passage holds much of the question's keywords
(IDF-weighted share below `coverage`, `RagIndex.keyword_coverage`). A small model handed
unrelated passages invents an answer from them; but a passage BM25 found on the question's own
rare words is evidence even when the embedder rates it far (product codes, serial numbers).

`answer` picks how the answer is made: `generative` (the model writes it), `extractive` (the
best-scoring sentence of a retrieved passage is quoted with its citation, `rag/extractive.py`)
or `auto`: extractive for readers with local weights below `EXTRACTIVE_BELOW` parameters,
generative above and for API-only models (docs/rag.md has the measurement behind it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from attune.models.generation import GenerationParams, Generator, Message, Prompt
from attune.rag.passage import Passage
from attune.rag.retrieve import Mode, RagIndex

IDK = "I don't know."
INSTRUCTION = (
    "Answer the question using only the passages above. Cite the passage you used like [1]. "
    f"If the passages do not contain the answer, reply: {IDK}"
)
# Below this cosine similarity the closest chunk is treated as unrelated. all-MiniLM-L6-v2 puts
# the builtin Northwind questions at 0.53-0.83 from their closest chunk and unrelated questions below 0.15
# (measured by tests/test_rag_answer.py::test_threshold_separates_corpus_questions_from_unrelated_ones).
DEFAULT_THRESHOLD = 0.3
# Below this IDF-weighted keyword share no passage is keyword evidence: unrelated questions reach at
# most 0.26 on the Northwind corpus (same test); half the question's keyword weight in one passage is.
DEFAULT_COVERAGE = 0.5
ANSWER_MODES = ("auto", "extractive", "generative")
# `auto` quotes (extractive) for readers smaller than this; see docs/rag.md for the measurement.
EXTRACTIVE_BELOW = 1_000_000_000
CITATION = re.compile(r"\s?\[(\s*\d+\s*(?:[,;]\s*\d+\s*)*)\]")
IDK_PATTERN = re.compile(r"^\W*i (?:don'?t|do not) know\b", re.I)


@dataclass
class GroundedAnswer:
    """An answer with its evidence.

    `sources` are the cited passages in order of their number in the prompt, and `citations`
    those numbers (sources[i] was passage [citations[i]]); `passages` is everything retrieved,
    in prompt order; `prompt` is exactly what was sent (None when it abstained before asking).
    """

    answer: str
    sources: list[Passage]
    passages: list[Passage]
    abstained: bool
    dropped_citations: int
    prompt: Prompt | None
    citations: list[int] = field(default_factory=list)
    relevance: float = 0.0
    raw: str = ""
    coverage: float = 0.0
    mode: str = "generative"

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer, "mode": self.mode, "abstained": self.abstained, "dropped_citations": self.dropped_citations,
            "citations": self.citations, "relevance": self.relevance, "coverage": self.coverage,
            "sources": [p.to_dict() for p in self.sources], "passages": [p.to_dict() for p in self.passages],
        }


def format_passages(passages: list[Passage]) -> str:
    return "\n\n".join(f"[{i}] {p.text}" for i, p in enumerate(passages, 1))


def grounded_messages(turns: list[Message], passages: list[Passage], system: str | None = None) -> list[Message]:
    """The conversation with the numbered passages and the citation instruction put before the last user turn's text."""
    messages = [dict(m) for m in turns]
    last = messages[-1]
    last["content"] = f"Passages:\n{format_passages(passages)}\n\n{INSTRUCTION}\n\nQuestion: {last['content']}"
    if system:
        messages = [{"role": "system", "content": system}, *[m for m in messages if m["role"] != "system"]]
    return messages


def clean_citations(text: str, n_passages: int) -> tuple[str, list[int], int]:
    """(text without invalid markers, valid passage numbers in order of first use, number of invalid ones)."""
    cited: list[int] = []
    dropped = 0

    def keep(match: re.Match) -> str:
        nonlocal dropped
        numbers = [int(x) for x in re.split(r"[,;]", match.group(1))]
        valid = [n for n in numbers if 1 <= n <= n_passages]
        dropped += len(numbers) - len(valid)
        cited.extend(n for n in valid if n not in cited)
        if not valid:
            return ""
        lead = " " if match.group(0).startswith(" ") else ""
        return f"{lead}[{', '.join(map(str, valid))}]"

    return CITATION.sub(keep, text).strip(), cited, dropped


def strip_citations(text: str) -> str:
    """The answer text without any [n] markers (what answer metrics score)."""
    return CITATION.sub("", text).strip()


def answer_mode(mode: str, generator: Generator) -> str:
    """`extractive` or `generative` for `mode`; `auto` quotes for local readers under `EXTRACTIVE_BELOW` parameters."""
    if mode not in ANSWER_MODES:
        from attune.errors import unknown

        raise unknown("answer mode", mode, ANSWER_MODES)
    if mode != "auto":
        return mode
    count = getattr(getattr(generator, "model", None), "num_parameters", None)
    return "extractive" if callable(count) and count() < EXTRACTIVE_BELOW else "generative"


def quoted_answer(question: str, passages: list[Passage], scorer) -> tuple[str, list[int]]:
    """The best-scoring sentence of the passages with its passage's marker, and that passage number."""
    from attune.rag.extractive import extract_answer

    ranked = extract_answer(question, passages, scorer)
    if not ranked:
        return IDK, []
    best = ranked[0]
    return f"{best.text} [{best.passage}]", [best.passage]


def answer_question(
    index: RagIndex,
    question: str,
    generator: Generator,
    k: int = 5,
    params: GenerationParams | None = None,
    *,
    mode: Mode = "hybrid",
    filters: dict[str, Any] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    coverage: float = DEFAULT_COVERAGE,
    system: str | None = None,
    answer: str = "auto",
) -> GroundedAnswer:
    """Retrieve k passages and answer from them (generated or quoted, see `answer_mode`) with cited sources."""
    how = answer_mode(answer, generator)
    passages = index.search(question, k, mode=mode, filters=filters)
    dense = [p.scores["dense"] for p in passages if "dense" in p.scores]
    relevance = max(dense) if dense else index.relevance(question, filters)
    covered = index.keyword_coverage(question, passages)
    if not passages or (relevance < threshold and covered < coverage):
        return GroundedAnswer(IDK, [], passages, True, 0, None, relevance=relevance, coverage=covered, mode=how)
    if how == "extractive":
        from attune.rag.extractive import scorer_for

        text, cited = quoted_answer(question, passages, scorer_for(generator, index.reranker))
        sources = [passages[n - 1] for n in cited]
        return GroundedAnswer(text, sources, passages, not cited, 0, None, cited, relevance, text, covered, how)
    prompt = grounded_messages([{"role": "user", "content": question}], passages, system)
    raw = generator.generate([prompt], params or GenerationParams(max_new_tokens=160))[0]
    text, cited, dropped = clean_citations(raw, len(passages))
    if IDK_PATTERN.match(text):
        return GroundedAnswer(text, [], passages, True, dropped, prompt, relevance=relevance, raw=raw, coverage=covered, mode=how)
    numbers = sorted(cited)
    sources = [passages[n - 1] for n in numbers]
    return GroundedAnswer(text, sources, passages, False, dropped, prompt, numbers, relevance, raw, covered, how)
