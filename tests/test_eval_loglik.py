"""`choice` and `perplexity` scoring against hand-computed values on a bigram model with known probabilities.

The model's next-token distribution depends only on the current token (a fixed table), so every
log-likelihood below is a product of table entries that can be checked by hand.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from attune.evaluate.runner import encode_pair, rolling_windows, run_choice, run_perplexity
from attune.evaluate.tasks import load_task
from attune.prompting import StrategyContext, build_strategy

VOCAB = ["<s>", "a", "b", " "]
# P(next | current), rows = current token in VOCAB order; each row sums to 1
TABLE = [
    [0.1, 0.4, 0.3, 0.2],  # after <s>
    [0.1, 0.2, 0.5, 0.2],  # after a
    [0.1, 0.6, 0.1, 0.2],  # after b
    [0.1, 0.3, 0.3, 0.3],  # after space
]


class CharTokenizer:
    """One token per character of VOCAB; id 0 is both BOS and padding."""

    bos_token_id = 0
    eos_token_id = 0
    pad_token_id = 0
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [VOCAB.index(ch) for ch in text]}


class BigramLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(TABLE).log())

    @property
    def device(self) -> torch.device:
        return self.logits.device

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.logits[input_ids])


def generator():
    # the prompt is the user's text as is: no chat template, no added newline
    return SimpleNamespace(model=BigramLM(), tokenizer=CharTokenizer(), name="bigram", render=lambda prompt: prompt[-1]["content"])


def _task(tmp_path, rows, **spec):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(json.dumps({"name": "t", "data": "d.jsonl", **spec}))
    return load_task(tmp_path / "t.yaml")


def zero_shot():
    return build_strategy("zero-shot", {}, StrategyContext())


def test_encode_pair_moves_trailing_space_to_the_continuation():
    tok = CharTokenizer()
    assert encode_pair(tok, "a", " b") == ([1], [3, 2])
    assert encode_pair(tok, "b ", "ab") == ([2], [3, 1, 2])  # "b " + "ab": the space is scored with the option
    assert encode_pair(tok, "", "a") == ([0], [1])  # empty context -> the prefix (BOS) token


def test_choice_acc_and_acc_norm_by_hand(tmp_path):
    # context "a", options "b" and "ab" after the delimiter " ":
    #   log P(" b"  | a) = log(P(' '|a) P(b|' '))          = log(0.2 * 0.3)       = log 0.06  -> per char: log(0.06)/1 = -2.813
    #   log P(" ab" | a) = log(P(' '|a) P(a|' ') P(b|a))   = log(0.2 * 0.3 * 0.5) = log 0.03  -> per char: log(0.03)/2 = -1.753
    # acc picks "b" (higher total), acc_norm picks "ab" (higher per character); the label is "ab".
    task = _task(tmp_path, [{"q": "a", "choices": ["b", "ab"], "label": 1}], kind="choice", input="q", choice_prefix=" ")
    result = run_choice(generator(), task, zero_shot())
    assert result.rows[0]["logprobs"] == pytest.approx([math.log(0.06), math.log(0.03)], abs=1e-6)
    assert result.metrics == {"acc": 0.0, "acc_norm": 1.0}
    assert result.rows[0]["prediction"] == "b"


def test_choice_default_delimiter_is_a_space_without_chat_template(tmp_path):
    task = _task(tmp_path, [{"q": "b", "choices": ["a", "b"], "label": "a"}], kind="choice", input="q")
    result = run_choice(generator(), task, zero_shot())
    # log P(" a" | b) = log(0.2 * 0.3), log P(" b" | b) = log(0.2 * 0.3): a tie goes to the first option
    assert result.rows[0]["logprobs"] == pytest.approx([math.log(0.06)] * 2, abs=1e-6)
    assert result.metrics["acc"] == 1.0


def test_rolling_windows_cover_every_token_once():
    # ids 1..5 with prefix 0 and windows of 2: predict [1, 2] from [0, 1], then [3, 4] from [2, 3], then [5] from
    # [3, 4] (the last window still fills its context: only its last position is scored)
    assert rolling_windows([1, 2, 3, 4, 5], prefix=0, max_length=2) == [([0, 1], [1, 2]), ([2, 3], [3, 4]), ([3, 4], [5])]
    assert rolling_windows([1, 2, 3], prefix=0, max_length=8) == [([0, 1, 2], [1, 2, 3])]


@pytest.mark.parametrize("max_length", [2, 1024])
def test_perplexity_metrics_by_hand(tmp_path, max_length):
    # "ab a" from <s>: P(a|<s>) P(b|a) P(' '|b) P(a|' ') = 0.4 * 0.5 * 0.2 * 0.3 = 0.012 (a bigram needs no more context,
    # so windows of 2 tokens give the same total); "ba": P(b|<s>) P(a|b) = 0.3 * 0.6 = 0.18
    task = _task(tmp_path, [{"text": "ab a"}, {"text": "ba"}], kind="perplexity", max_length=max_length)
    result = run_perplexity(generator(), task)
    nll = -math.log(0.012) - math.log(0.18)
    tokens, words, nbytes = 6, 3, 6
    assert result.metrics["loss"] == pytest.approx(nll / tokens)
    assert result.metrics["perplexity"] == pytest.approx(math.exp(nll / tokens))
    assert result.metrics["word_perplexity"] == pytest.approx(math.exp(nll / words))
    assert result.metrics["byte_perplexity"] == pytest.approx(math.exp(nll / nbytes))
    assert result.metrics["bits_per_byte"] == pytest.approx(nll / nbytes / math.log(2))
    assert result.rows[0]["scores"]["loss"] == pytest.approx(-math.log(0.012) / 4)
