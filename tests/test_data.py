"""The data layer: formats, exact error messages, loss masks per template shape, split, mixing, streaming."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from attune.data import (
    ChatRecord,
    DataError,
    PreferenceRecord,
    encode_chat,
    encode_preference,
    iter_records,
    load_records,
    mix_datasets,
    train_val_split,
)
from attune.data.check import check_file

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_five_faults_are_all_reported_with_lines(tmp_path):
    f = _jsonl(tmp_path / "bad.jsonl", [
        CHAT,
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
        "{bad json",
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]},
        {"messages": "nope"},
    ])
    report = check_file(f)
    assert [str(p) for p in report.problems] == [
        f"{f}:2: messages: empty response",
        f"{f}:3: malformed JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{f}:4: messages[0].role: unknown role 'robot' (expected system, user or assistant)",
        f"{f}:5: messages[1].content: missing field",
        f"{f}:6: messages: expected a non-empty list of messages",
    ]
    assert report.counts == {"chat": 1}
    with pytest.raises(DataError, match="4 bad record"):
        load_records(f)  # the empty response is droppable; the other four are not


def test_clean_file_counts_and_cli_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from attune.cli import app

    good = _jsonl(tmp_path / "good.jsonl", [CHAT, CHAT])
    result = CliRunner().invoke(app, ["data", "check", str(good)])
    assert result.exit_code == 0 and "ok: 2 records" in result.stdout
    bad = _jsonl(tmp_path / "bad.jsonl", [CHAT, "{oops"])
    result = CliRunner().invoke(app, ["data", "check", str(bad)])
    assert result.exit_code == 1 and f"{bad}:2: malformed JSON" in result.stdout


def test_formats_are_detected_and_converted(tmp_path):
    rows = {
        "sharegpt": {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        "alpaca": {"instruction": "Add", "input": "1+1", "output": "2"},
        "completion": {"prompt": "2+2=", "completion": "4"},
        "preference": {"prompt": "q", "chosen": [{"role": "assistant", "content": "good"}], "rejected": "bad"},
        "text": {"text": "some text"},
        "prompt": {"prompt": "q", "answer": "a"},
    }
    kinds = {}
    for name, row in rows.items():
        (record,) = load_records(_jsonl(tmp_path / f"{name}.jsonl", [row]))
        kinds[name] = record.kind
    assert kinds == {"sharegpt": "chat", "alpaca": "chat", "completion": "completion", "preference": "preference",
                     "text": "text", "prompt": "prompt"}
    (alpaca,) = load_records(tmp_path / "alpaca.jsonl")
    assert alpaca.messages == [{"role": "user", "content": "Add\n\n1+1"}, {"role": "assistant", "content": "2"}]
    (pref,) = load_records(tmp_path / "preference.jsonl")
    assert pref.chosen == "good" and pref.prompt == [{"role": "user", "content": "q"}]


def test_droppable_preference_faults_are_dropped_with_a_count(tmp_path, capsys):
    f = _jsonl(tmp_path / "p.jsonl", [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "same", "rejected": "same"},
        {"prompt": "q", "chosen": "", "rejected": "b"},
    ])
    records = load_records(f)
    assert len(records) == 1
    assert "dropped 2 record(s): 1 chosen and rejected are identical, 1 empty response" in capsys.readouterr().err
    assert [str(p) for p in check_file(f).problems] == [
        f"{f}:2: chosen: chosen and rejected are identical",
        f"{f}:3: chosen: empty response",
    ]


def test_unknown_format_and_missing_file(tmp_path):
    f = _jsonl(tmp_path / "x.jsonl", [{"foo": 1}])
    with pytest.raises(DataError, match=r"cannot tell the format from fields \['foo'\]"):
        load_records(f)
    with pytest.raises(Exception, match="data file not found"):
        load_records(tmp_path / "missing.jsonl")


def _supervised(tokenizer, enc):
    return tokenizer.decode([i for i, label in zip(enc.input_ids, enc.labels) if label != -100])


TEMPLATES = {
    "llama3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
        "<|end_header_id|>\n\n{% endif %}"
    ),
    "gemma": (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
        "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
}


@pytest.mark.parametrize("shape", ["chatml", "llama3", "gemma", "none"])
def test_only_assistant_turns_are_supervised_for_every_template_shape(tokenizer, shape):
    tok = tokenizer
    original = tok.chat_template
    try:
        if shape in TEMPLATES:
            tok.chat_template = TEMPLATES[shape]
        elif shape == "none":
            tok.chat_template = None
        messages = [
            {"role": "user", "content": "What is two plus two?"},
            {"role": "assistant", "content": "Four."},
            {"role": "user", "content": "And three plus three?"},
            {"role": "assistant", "content": "Six."},
        ]
        text = _supervised(tok, encode_chat(tok, messages, max_length=512))
        assert "Four." in text and "Six." in text
        assert "two plus two" not in text and "three plus three" not in text
        last = _supervised(tok, encode_chat(tok, messages, max_length=512, supervise="last"))
        assert "Six." in last and "Four." not in last
        end = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "gemma": "<end_of_turn>", "none": tok.eos_token}[shape]
        assert text.count(end.strip()) >= 2 or end.strip() in text  # the end-of-turn marker is learned too
    finally:
        tok.chat_template = original


def test_truncation_and_preference_encoding(tokenizer):
    enc = encode_chat(tokenizer, [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}], max_length=32)
    assert enc.truncated and len(enc.input_ids) == 32
    rec = PreferenceRecord([{"role": "user", "content": "long " * 100}], "good answer", "bad", "x:1")
    pair = encode_preference(tokenizer, rec, max_length=40)
    assert pair.truncated and len(pair.prompt_ids) + len(pair.chosen_ids) <= 40
    assert tokenizer.decode(pair.chosen_ids).startswith("good answer")


def test_split_is_deterministic_and_disjoint():
    records = list(range(100))
    a, b = train_val_split(records, 0.1, seed=1)
    assert (a, b) == train_val_split(records, 0.1, seed=1)
    assert len(b) == 10 and not set(a) & set(b) and sorted(a + b) == records


def test_mixing_proportions():
    big, small = [("big", i) for i in range(900)], [("small", i) for i in range(100)]
    by_weight = mix_datasets([big, small], [1, 1], strategy="weights", seed=0)
    assert sum(1 for r in by_weight if r[0] == "small") == 500
    by_temp = mix_datasets([big, small], [1, 1], strategy="temperature", temperature=2.0, seed=0)
    share = sum(1 for r in by_temp if r[0] == "small") / len(by_temp)
    assert abs(share - 10 / (30 + 10)) < 0.01  # sqrt(100) / (sqrt(900) + sqrt(100))


def test_streaming_reads_lazily(tmp_path):
    f = tmp_path / "big.jsonl"
    with open(f, "w") as fh:
        for i in range(20000):
            fh.write(json.dumps({"text": f"document {i} " + "x" * 200}) + "\n")
    tracemalloc.start()
    first = [r for _, r in zip(range(5), iter_records(f))]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [r.text.split()[1] for r in first] == ["0", "1", "2", "3", "4"]
    assert peak < f.stat().st_size / 10  # a 4 MB file, read with well under 400 kB


def test_chat_record_renders_with_template(tokenizer):
    from attune.data import encode_record

    enc = encode_record(tokenizer, ChatRecord(CHAT["messages"], "x:1"), max_length=64)
    assert _supervised(tokenizer, enc).startswith("hello")


def test_csv_parquet_json_and_text_inputs(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"prompt": ["2+2=", "3+3="], "completion": ["4", "6"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(frame.to_dict(orient="records")))
    for name in ("d.csv", "d.parquet", "d.json"):
        records = load_records(tmp_path / name)
        assert [(r.prompt, r.completion) for r in records] == [("2+2=", "4"), ("3+3=", "6")], name
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("First block.\n\nSecond block.")
    assert [r.text for r in load_records(tmp_path / "docs")] == ["First block.\n\nSecond block."]
    from attune.recipe import DataSource

    split = load_records(DataSource(path=str(tmp_path / "docs"), text_split="blank-line"))
    assert [r.text for r in split] == ["First block.", "Second block."]
