"""Prompting strategies build exactly the prompt they promise; instruction checks by hand."""

from __future__ import annotations

import json

import pytest

from attune.errors import AttuneError
from attune.evaluate.metrics import follows_instructions
from attune.evaluate.tasks import load_task
from attune.prompting import StrategyContext, build_strategy

POOL = [
    {"input": "I was charged twice for my order", "query": "I was charged twice for my order", "reference": "billing"},
    {"input": "My parcel never arrived", "query": "My parcel never arrived", "reference": "shipping"},
    {"input": "The app crashes when I log in", "query": "The app crashes when I log in", "reference": "technical"},
    {"input": "Please change my account email", "query": "Please change my account email", "reference": "account"},
]


def _example(text: str) -> dict:
    return {"input": text, "query": text, "reference": "?"}


def test_zero_shot_uses_template_and_system():
    ctx = StrategyContext(system="Be brief.", template="Q: {input}")
    built = build_strategy("zero-shot", {}, ctx).build("2+2?", _example("2+2?"))
    assert built.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q: 2+2?"}]


def test_cot_asks_for_steps_and_extracts_after_the_last_answer():
    cot = build_strategy("cot", {}, StrategyContext())
    prompt = cot.build("2+2?", _example("2+2?")).prompt
    assert prompt[-1]["content"].startswith("2+2?\n\nThink step by step.") and "'Answer:'" in prompt[-1]["content"]
    assert cot.extract("2 and 2 make 4.\nAnswer: wrong\nAnswer: 4") == "4"


def test_few_shot_random_is_seeded_and_puts_shots_before_the_query():
    a = build_strategy("few-shot", {"k": 2, "selection": "random"}, StrategyContext(pool=POOL, seed=3))
    b = build_strategy("few-shot", {"k": 2, "selection": "random"}, StrategyContext(pool=POOL, seed=3))
    built = a.build("hello", _example("hello"))
    assert built.meta == b.build("other", _example("other")).meta  # random shots are the same for every query
    shots = [POOL[i] for i in built.meta["shots"]]
    assert built.prompt == [
        {"role": "user", "content": shots[0]["input"]}, {"role": "assistant", "content": shots[0]["reference"]},
        {"role": "user", "content": shots[1]["input"]}, {"role": "assistant", "content": shots[1]["reference"]},
        {"role": "user", "content": "hello"},
    ]


def test_few_shot_similarity_picks_the_nearest_pool_examples():
    few = build_strategy("few-shot", {"k": 1, "selection": "similarity"}, StrategyContext(pool=POOL))
    assert few.build("You took the payment two times", _example("You took the payment two times")).meta["shots"] == [0]
    assert few.build("Where is my delivery?", _example("Where is my delivery?")).meta["shots"] == [1]
    # a query that is itself in the pool never gets itself as a shot
    assert 2 not in few.build(POOL[2]["query"], POOL[2]).meta["shots"]


def test_few_shot_without_pool_is_a_clear_error():
    with pytest.raises(AttuneError, match="few-shot needs an example pool"):
        build_strategy("few-shot", {}, StrategyContext())


@pytest.mark.parametrize(
    "reply, checks, expected",
    [
        ("Yes.", {"one_of": ["yes", "no"]}, 1.0),
        ("Yes, it is hot.", {"one_of": ["yes", "no"]}, 0.0),
        ("the sea is calm today", {"lowercase": True, "min_words": 3}, 1.0),
        ("The sea is calm today", {"lowercase": True}, 0.0),
        ("MADRID", {"uppercase": True}, 1.0),
        ("123", {"uppercase": True}, 0.0),  # no letters: not "in capitals"
        ('["apple", "pear", "fig"]', {"json_list_length": 3}, 1.0),
        ('["apple", "pear"]', {"json_list_length": 3}, 0.0),
        ("Blue, mostly.", {"max_words": 5}, 1.0),
        ("It is blue on most clear days", {"max_words": 5}, 0.0),
        ("sure, cats are soft.", {"starts_with": "Sure"}, 1.0),
        ("It was sunny. Thank you.", {"ends_with": "Thank you."}, 1.0),
        ("red\n\ngreen\nblue\n", {"lines": 3}, 1.0),
        ("A loyal pet that barks.", {"excludes": ["dog"], "min_words": 3}, 1.0),
        ("Dogs bark.", {"excludes": ["dog"]}, 0.0),
        ("the quick brown fox jumps over the lazy dog", {"equals": "The quick brown fox jumps over the lazy dog."}, 1.0),
        ("The river ran under the old bridge.", {"contains": ["river", "bridge"]}, 1.0),
        ("The river ran fast.", {"contains": ["river", "bridge"]}, 0.0),
        ('{"name": "Ada"}', {"json_keys": ["name"]}, 1.0),
        ("1, 2, 3, 4, 5", {"matches": r"1,\s*2,\s*3,\s*4,\s*5"}, 1.0),
        ("- sleep well\n- eat vegetables", {"bullets": 2}, 1.0),
        ("- sleep well", {"bullets": 2}, 0.0),
    ],
)
def test_follows_instructions_by_hand(reply, checks, expected):
    assert follows_instructions(reply, json.dumps(checks)) == expected


def test_bad_instruction_checks_fail_when_the_task_loads(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"q": "hi", "c": json.dumps({"max_wrods": 3})}) + "\n")
    (tmp_path / "t.yaml").write_text(json.dumps({"name": "t", "data": "d.jsonl", "input": "q", "reference": "c",
                                                 "metrics": ["follows_instructions"]}))
    with pytest.raises(AttuneError, match=r"d.jsonl:1: unknown instruction check 'max_wrods' \(did you mean 'max_words'\?\)"):
        load_task(tmp_path / "t.yaml")
