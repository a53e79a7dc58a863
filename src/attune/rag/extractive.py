"""Extractive answers: quote the retrieved sentence that best answers the question, with its citation.

A small reader copies facts badly: handed the right passage, a 135M model still answers wrongly
or cites the wrong number (docs/rag.md has the measurement). Quoting a sentence of a retrieved
passage cannot misstate it. Every sentence of the k passages is a candidate, read with its
section heading (so "It lasts 9 hours" keeps its subject); a scorer picks one:

- `LikelihoodScorer`: log P(question | sentence) under the reader model, the unsupervised passage
  reranker of Sachan et al. 2022 ("Improving Passage Retrieval with Zero-Shot Question
  Generation"): the sentence from which the model finds the question likeliest answers it.
- `CrossEncoderScorer`: the index's reranker (a local cross-encoder) on (question, sentence).

The answer is the sentence followed by its passage's marker, e.g. "... for 9 hours during a power
cut. [2]", so citations read the same as in generative answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from attune.errors import AttuneError
from attune.rag.passage import Passage

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
QUESTION_PROMPT = "Passage: {context}\nPlease write a question based on this passage.\nQuestion:"
Scorer = Callable[[str, list[str]], list[float]]


@dataclass
class Sentence:
    """A candidate answer: `text` quoted from passage number `passage` (1-based), read with `context`."""

    passage: int
    text: str
    context: str
    score: float = 0.0


def _sentences(passage: Passage, number: int) -> list[Sentence]:
    """The passage's sentences (and list items), without the section line a chunk starts with."""
    section = str(passage.metadata.get("section") or "")
    body = passage.text
    if section and body.startswith(section + "\n"):
        body = body[len(section) + 1 :]
    out = []
    for line in body.splitlines():
        line = line.strip().lstrip("-*# ").strip()
        for piece in SENTENCE_END.split(line):
            if len(piece.split()) >= 2:
                out.append(Sentence(number, piece, f"{section}: {piece}" if section else piece))
    return out


def candidates(passages: list[Passage]) -> list[Sentence]:
    """Every sentence of every passage, numbered by the passage's place in the list (1-based)."""
    return [s for n, p in enumerate(passages, 1) for s in _sentences(p, n)]


class LikelihoodScorer:
    """log P(question | sentence) under a causal LM with local weights (Sachan et al. 2022)."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def __call__(self, question: str, contexts: list[str]) -> list[float]:
        import torch

        from attune.train.logprobs import IGNORE, sequence_logprobs

        def ids(text: str) -> list[int]:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

        target = ids(" " + question.strip())
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        scores: list[float] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(contexts), self.batch_size):
                prefixes = [ids(QUESTION_PROMPT.format(context=c)) for c in contexts[start : start + self.batch_size]]
                width = max(len(p) for p in prefixes) + len(target)
                rows = [p + target + [pad] * (width - len(p) - len(target)) for p in prefixes]
                labels = [[IGNORE] * len(p) + target + [IGNORE] * (width - len(p) - len(target)) for p in prefixes]
                mask = [[1] * (len(p) + len(target)) + [0] * (width - len(p) - len(target)) for p in prefixes]
                device = self.model.device
                with torch.no_grad():
                    total, _ = sequence_logprobs(
                        self.model, torch.tensor(rows, device=device), torch.tensor(mask, device=device),
                        torch.tensor(labels, device=device),
                    )
                scores += [float(s) for s in total]
        finally:
            self.model.train(was_training)
        return scores


class CrossEncoderScorer:
    """The index's cross-encoder reranker, applied to (question, sentence in its section)."""

    def __init__(self, reranker: Any) -> None:
        self.reranker = reranker

    def __call__(self, question: str, contexts: list[str]) -> list[float]:
        return [float(s) for s in self.reranker.model.predict([(question, c) for c in contexts], show_progress_bar=False)]


def scorer_for(generator: Any, reranker: Any | None = None) -> Scorer:
    """The reranker when the index has one, else the reader's own likelihood (it needs local weights)."""
    if reranker is not None:
        return CrossEncoderScorer(reranker)
    model, tokenizer = getattr(generator, "model", None), getattr(generator, "tokenizer", None)
    if not hasattr(model, "forward") or tokenizer is None:
        raise AttuneError(
            f"extractive answers are chosen by the reader's likelihood (local weights) or a --rerank cross-encoder; "
            f"{getattr(generator, 'name', 'this model')} is API-only: use --answer generative or give --rerank"
        )
    return LikelihoodScorer(model, tokenizer)


def extract_answer(question: str, passages: list[Passage], scorer: Scorer) -> list[Sentence]:
    """Every candidate sentence scored, best first (empty when the passages hold no sentence)."""
    found = candidates(passages)
    if not found:
        return []
    for sentence, score in zip(found, scorer(question, [s.context for s in found])):
        sentence.score = score
    return sorted(found, key=lambda s: -s.score)
