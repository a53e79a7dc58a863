"""Prompt handling for a base model: no chat template, and a tokenizer that adds BOS (like Gemma 3).

Training, generation, serving and choice scoring must all see the same token ids: the plain
"User:/Assistant:" template, the BOS exactly once, the reply starting where generation starts.
"""

from __future__ import annotations

import copy

import pytest
from tests.conftest import make_tiny_model

from attune.data.render import IGNORE, PLAIN_STOP, document_ids, encode_chat, encode_completion, encode_text, render_chat
from attune.models.generation import GenerationParams, HFGenerator

CHAT = [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Four."}]


@pytest.fixture
def base_tokenizer(tokenizer):
    """The builtin tokenizer made to look like a base model's: no chat template, BOS added to every text."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    tok.add_bos_token = True
    assert tok("a")["input_ids"][0] == tok.bos_token_id
    return tok


def test_plain_template_text_and_generation_prompt(base_tokenizer):
    tok = base_tokenizer
    assert render_chat(tok, CHAT) == f"User: What is two plus two?\nAssistant: Four.{tok.eos_token}\n"
    assert render_chat(tok, CHAT[:1], add_generation_prompt=True) == "User: What is two plus two?\nAssistant:"
    system = [{"role": "system", "content": "Be brief."}, *CHAT[:1]]
    assert render_chat(tok, system, add_generation_prompt=True).startswith("System: Be brief.\nUser:")


def test_training_ids_are_the_generation_prompt_then_the_reply(base_tokenizer):
    tok = base_tokenizer
    enc = encode_chat(tok, CHAT, max_length=128)
    prompt = HFGenerator(None, tok, "t").encode(CHAT[:1])
    assert enc.input_ids[: len(prompt)] == prompt
    assert prompt[0] == tok.bos_token_id and prompt.count(tok.bos_token_id) == 1
    assert enc.labels[: len(prompt)] == [IGNORE] * len(prompt)
    learned = [i for i in enc.labels if i != IGNORE]
    assert enc.input_ids[len(prompt) : len(prompt) + len(learned)] == learned
    assert tok.decode(learned) == f" Four.{tok.eos_token}"  # the newline after EOS is never generated: no loss


def test_bos_once_for_every_record_kind(base_tokenizer):
    tok = base_tokenizer
    bos = tok.bos_token_id
    for enc in (encode_completion(tok, "2+2=", "4", max_length=64), encode_text(tok, "Some text.", max_length=64)):
        assert enc.input_ids[0] == bos and enc.input_ids.count(bos) == 1 and enc.labels[0] == IGNORE
    assert encode_text(tok, "Some text.", max_length=64).labels[1:] == encode_text(tok, "Some text.", max_length=64).input_ids[1:]


def test_a_template_that_writes_bos_gets_no_second_one(base_tokenizer):
    tok = copy.deepcopy(base_tokenizer)
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    ids = encode_chat(tok, CHAT, max_length=64, supervise="all").input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert document_ids(tok, render_chat(tok, CHAT)) == ids


def test_tokenizer_without_bos_is_unchanged(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    assert document_ids(tok, "Hello there") == tok("Hello there", add_special_tokens=False)["input_ids"]


def test_generation_sees_the_bos_as_transformers_does(base_tokenizer):
    """Greedy output for a raw-text prompt equals `model.generate` on the tokenizer's own encoding (with BOS)."""
    tok = base_tokenizer
    model = make_tiny_model(tok, seed=3).eval()
    gen = HFGenerator(model, tok, "tiny")
    prompts = ["What is the capital of France?", "Hi"]
    outputs = gen.generate(prompts, GenerationParams(max_new_tokens=8))
    for prompt, output in zip(prompts, outputs):
        enc = tok(prompt, return_tensors="pt")
        assert enc["input_ids"][0, 0] == tok.bos_token_id
        ref = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        assert output == tok.decode(ref[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def test_chat_prompt_stops_at_the_next_plain_turn(base_tokenizer):
    """A base model that writes the next "User:" turn itself is cut there (it never learned EOS)."""
    tok = base_tokenizer
    gen = HFGenerator(make_tiny_model(tok), tok, "tiny")
    assert gen.stops(CHAT[:1], GenerationParams()) == [PLAIN_STOP]
    assert gen.stops("raw text", GenerationParams(stop=["x"])) == ["x"]
    assert gen.reply(" Paris.", CHAT[:1]) == "Paris." and gen.reply(" Paris.", "raw") == " Paris."


def test_stop_string_ends_generation_early(base_tokenizer):
    """With a stop string every row shares, generation ends there instead of at max_new_tokens."""
    tok = base_tokenizer
    model = make_tiny_model(tok, seed=5).eval()
    gen = HFGenerator(model, tok, "tiny")
    free = gen.generate(["Once upon a time"], GenerationParams(max_new_tokens=24))[0]
    assert len(free) > 4
    stop = free[2:5]  # a stop string the greedy continuation is known to reach
    calls: list[int] = []
    original = model.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.forward = counting
    cut = gen.generate(["Once upon a time"], GenerationParams(max_new_tokens=24, stop=[stop]))[0]
    assert cut == free[: free.find(stop)]
    assert len(calls) < 24
