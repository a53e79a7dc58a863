"""Eval reads every format training reads, with input and reference where training puts its mask."""

from __future__ import annotations

import json

import pytest

from attune.data.render import IGNORE, encode_chat, render_chat
from attune.errors import AttuneError
from attune.evaluate.pools import pool_from_path
from attune.evaluate.tasks import load_task

TICKET = "Triage: my card was charged twice"
ANSWER = '{"category": "billing", "priority": "high"}'
SYSTEM = "You triage tickets."

ROWS = {
    "messages": {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TICKET},
                              {"role": "assistant", "content": ANSWER}]},
    "sharegpt": {"conversations": [{"from": "system", "value": SYSTEM}, {"from": "human", "value": TICKET},
                                   {"from": "gpt", "value": ANSWER}]},
    "alpaca": {"system": SYSTEM, "instruction": TICKET, "input": "", "output": ANSWER},
    "preference": {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TICKET}],
                   "chosen": ANSWER, "rejected": '{"category": "shipping"}'},
    "prompt": {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TICKET}], "answer": ANSWER},
}


def _task(tmp_path, rows, **fields):
    (tmp_path / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "t", "data": "held.jsonl", "metrics": ["exact_match"], **fields}
    (tmp_path / "t.yaml").write_text(json.dumps(spec))
    return tmp_path / "t.yaml"


@pytest.mark.parametrize("fmt", sorted(ROWS))
def test_every_training_format_is_a_task_with_only_data_and_metrics(tmp_path, fmt):
    task = load_task(_task(tmp_path, [ROWS[fmt]] * 2))
    ex = task.examples[0]
    assert len(task.examples) == 2
    assert ex["input"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TICKET}]
    assert ex["query"] == TICKET and ex["reference"] == ANSWER


def test_completion_rows_keep_prompt_and_completion(tmp_path):
    ex = load_task(_task(tmp_path, [{"prompt": "2+2=", "completion": "4"}])).examples[0]
    assert (ex["input"], ex["reference"]) == ("2+2=", "4")


def test_sharegpt_held_out_reference_is_what_training_learns(tmp_path, tokenizer):
    """The prompt eval renders is exactly training's unlabelled prefix before the last reply, and the
    reference is exactly the last labelled span (less the end-of-turn marker)."""
    conversation = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello, how can I help?"},
                    {"from": "human", "value": TICKET}, {"from": "gpt", "value": ANSWER}]
    ex = load_task(_task(tmp_path, [{"conversations": conversation}])).examples[0]
    messages = [*ex["input"], {"role": "assistant", "content": ex["reference"]}]
    enc = encode_chat(tokenizer, messages, max_length=512)
    end = max(i for i, label in enumerate(enc.labels) if label != IGNORE) + 1
    start = max(i for i, label in enumerate(enc.labels[:end]) if label == IGNORE) + 1
    assert tokenizer.decode(enc.input_ids[:start]) == render_chat(tokenizer, ex["input"], add_generation_prompt=True)
    learnt = tokenizer.decode(enc.input_ids[start:end])
    assert learnt.startswith(ex["reference"]) and learnt[len(ex["reference"]):] == "<|im_end|>"


def test_explicit_mapping_and_plain_fields_still_work(tmp_path):
    rows = [{"input": "2+2?", "reference": "4"}]
    assert load_task(_task(tmp_path, rows)).examples[0]["reference"] == "4"
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]
    assert load_task(_task(tmp_path, rows, input="conversations")).examples[0]["reference"] == "yo"


def test_format_errors_name_the_line_and_field(tmp_path):
    rows = [ROWS["sharegpt"], {"conversations": [{"from": "robot", "value": "x"}]}]
    with pytest.raises(AttuneError, match=r"held.jsonl:2: conversations\[0\].from: unknown role 'robot'"):
        load_task(_task(tmp_path, rows))
    rows = [{"prompt": "What is 2+2?"}]
    with pytest.raises(AttuneError, match=r"held.jsonl:1: no reference to score against"):
        load_task(_task(tmp_path, rows))


def test_pool_from_training_data_respects_the_limit(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]} for i in range(5)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = pool_from_path(str(tmp_path / "train.jsonl"), limit=3)
    assert [p["reference"] for p in pool] == ["a0", "a1", "a2"] and pool[0]["query"] == "q0"
