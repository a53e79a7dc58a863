"""Every metric against hand-computed values; tasks fail clearly before any model loads."""

from __future__ import annotations

import json

import pytest

from attune.errors import AttuneError
from attune.evaluate.metrics import (
    bleu,
    contains,
    exact_match,
    f1,
    json_fields,
    json_schema,
    json_valid,
    regex,
    rouge_l,
)
from attune.evaluate.tasks import load_task
from attune.prompting.extraction import extract


def test_exact_match_normalises_and_compares_json():
    assert exact_match("The Paris.", "paris") == 1.0
    assert exact_match("Paris, France", "paris") == 0.0
    assert exact_match('{"a": 1, "b": 2}', '{"b":2,"a":1}') == 1.0
    assert exact_match('```json\n{"a": 1}\n```', '{"a": 1}') == 1.0


def test_contains_and_regex():
    assert contains("It is Paris, I think", "paris") == 1.0
    assert contains("Lyon", "paris") == 0.0
    assert regex("order 12345 shipped", r"\d{5}") == 1.0
    assert regex("ABC", "ignored", pattern="^[A-Z]+$") == 1.0
    assert regex("abc", "ignored", pattern="^[A-Z]+$") == 0.0


def test_f1_by_hand():
    # prediction tokens: cat sat mat ; reference: cat sat on mat -> common 3, P=3/3, R=3/4, F1=2*1*0.75/1.75
    assert f1("the cat sat mat", "the cat sat on the mat") == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert f1("dog", "cat") == 0.0


def test_rouge_l_by_hand():
    # LCS of [one two three four] and [one three four five] is [one three four] -> P = R = 3/4, F = 0.75
    assert rouge_l("one two three four", "one three four five") == pytest.approx(0.75)
    # LCS of [x y] and [x z y w] is [x y] -> P = 1, R = 1/2, F = 2/3
    assert rouge_l("x y", "x z y w") == pytest.approx(2 / 3)


def test_bleu_bounds():
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert bleu("completely different words here", "the cat sat on the mat") < 0.1


def test_json_metrics():
    assert json_valid('{"a": 1}') == 1.0 and json_valid("{a: 1}") == 0.0
    schema = {"type": "object", "required": ["category"], "properties": {"category": {"enum": ["billing", "shipping"]}}}
    assert json_schema('{"category": "billing"}', schema=schema) == 1.0
    assert json_schema('{"category": "other"}', schema=schema) == 0.0
    assert json_fields('{"category": "billing", "priority": "low"}', '{"category": "billing", "priority": "high"}') == 0.5


def test_extraction():
    assert extract("Let me think.\nAnswer: 42", "after_answer") == "42"
    assert extract("line one\nline two", "last_line") == "line two"
    assert extract('Sure! {"a": 1} done', "first_json") == '{"a": 1}'
    assert extract("The answer is 7.", "regex", r"is (\d+)") == "7"


def _task(tmp_path, **fields):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    spec = {"name": "t", "data": "d.jsonl", "input": "question", "reference": "answer", **fields}
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_task_bad_input_errors(tmp_path):
    assert load_task(_task(tmp_path)).examples[0]["reference"] == "4"
    with pytest.raises(AttuneError, match=r"data file .*missing.jsonl not found"):
        load_task(_task(tmp_path, data="missing.jsonl"))
    with pytest.raises(AttuneError, match=r"field 'prompt' \(mapped in task 't'\) is not in the data; fields: \['answer', 'question'\]"):
        load_task(_task(tmp_path, input="prompt"))
    with pytest.raises(AttuneError, match=r"unknown metric 'exact_mach' \(did you mean 'exact_match'\?\)"):
        load_task(_task(tmp_path, metrics=["exact_mach"]))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(AttuneError, match=r"task 't' has no examples"):
        load_task(_task(tmp_path, data="empty.jsonl"))
    with pytest.raises(AttuneError, match="task file not found"):
        load_task(tmp_path / "nope.yaml")


def test_builtin_tickets_task_loads():
    task = load_task("builtin:tickets")
    assert len(task.examples) == 80 and json.loads(task.examples[0]["reference"])["category"]


def test_builtin_support_tasks_judge_the_held_out_pairs_by_the_data_rule():
    """support-style passes every chosen reply and fails every rejected one, as the training rule does."""
    from attune.align.rewards import follows_house_style
    from attune.evaluate.metrics import follows_instructions

    style, choice = load_task("builtin:support-style"), load_task("builtin:support-choice")
    assert len(style.examples) == len(choice.examples) == 50
    for s, c in zip(style.examples, choice.examples):
        chosen, rejected = c["choices"]
        assert c["label"] == 0 and s["query"] == c["query"]
        assert follows_instructions(chosen, s["reference"]) == 1.0 == float(follows_house_style(chosen))
        assert follows_instructions(rejected, s["reference"]) == 0.0 == float(follows_house_style(rejected))
