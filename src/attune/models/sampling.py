"""Decoding settings, choosing each row's next token, and turning token ids into text deltas that respect stop strings.

Every row in a batch has its own decoding settings (one request greedy, the next sampled at
temperature 0.8 with its own seed), so sampling is per row: greedy rows take the argmax, sampled
rows draw from their own `torch.Generator` after temperature and nucleus (top-p) filtering
(Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass
class GenerationParams:
    """Decoding settings. temperature 0 means greedy (the default, for reproducible evals)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


def nucleus_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """The distribution to sample from: softmax(logits / T), cut to the smallest set whose mass reaches top_p."""
    import torch

    logits = logits.float()
    temperature = max(temperature, torch.finfo(torch.float32).tiny)  # a smaller T would round to 0 in fp32
    probs = torch.softmax((logits - logits.max()) / temperature, dim=-1)  # shifted: a tiny T gives 0/T, not inf/inf
    if top_p >= 1.0:
        return probs
    sorted_p, order = torch.sort(probs, descending=True)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of the tokens ranked above each one
    keep = before < top_p
    keep[..., 0] = True  # the top token always survives (its `before` can round above a tiny top_p)
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum(dim=-1, keepdim=True)


def next_tokens(logits: torch.Tensor, settings: Sequence[tuple[float, float, torch.Generator | None]]) -> torch.Tensor:
    """One token per row of `logits` (B, V); `settings[i]` = (temperature, top_p, generator) of row i."""
    import torch

    tokens = torch.argmax(logits, dim=-1)
    for i, (temperature, top_p, generator) in enumerate(settings):
        if temperature > 0:
            probs = nucleus_probs(logits[i], temperature, top_p)
            tokens[i] = torch.multinomial(probs, 1, generator=generator)[0]
    return tokens


class TextStream:
    """Incremental detokenization: text deltas that never split a character or leak a stop string.

    The whole completion is decoded again at each token (a byte-level BPE token can end in the
    middle of a UTF-8 character, so decoding tokens one by one would be wrong). Text that could
    still turn out to be the start of a stop string is held back until it cannot.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = 0  # characters of the completion already handed out
        self.text = ""

    def add(self, token: int) -> tuple[str, bool]:
        """Append a token; return (new text safe to emit, whether a stop string was reached)."""
        self.ids.append(token)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = min((i for i in (self.text.find(s) for s in self.stop) if i != -1), default=-1)
        if cut != -1:
            self.text = self.text[:cut]
            return self._take(len(self.text)), True
        end = len(self.text)
        if self.text.endswith("\ufffd"):  # an incomplete character: wait for its next byte
            end -= 1
        end -= self._held_back(self.text[:end])
        return self._take(max(end, self.emitted)), False

    def flush(self) -> str:
        """Everything not yet emitted (the sequence ended for another reason than a stop string)."""
        return self._take(len(self.text))

    def _held_back(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _take(self, end: int) -> str:
        piece = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return piece
