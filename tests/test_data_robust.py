"""Odd data files are named, never silently read wrong (issue 22, findings 4 and 9)."""

from __future__ import annotations

import json

import pytest

from attune.data import DataError, load_records
from attune.data.check import check_file
from attune.errors import AttuneError

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
ALPACA = {"instruction": "Say hi", "output": "hi"}


def _jsonl(path, rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_an_oversized_line_is_an_error_naming_the_line_and_its_size(tmp_path, monkeypatch):
    import attune.data.readers as readers

    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 1000)
    big = {"messages": [{"role": "user", "content": "x" * 5000}, {"role": "assistant", "content": "ok"}]}
    f = tmp_path / "big.jsonl"
    f.write_text(_jsonl(f, [CHAT, big, CHAT]))
    with pytest.raises(DataError, match=r"big.jsonl:2.*50\d\d bytes.*limit of 1000"):
        load_records(f)
    report = check_file(f)
    assert [p.source for p in report.problems] == [f"{f}:2"] and report.counts == {"chat": 2}


def test_data_check_and_train_agree_on_an_empty_file(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    with pytest.raises(AttuneError, match="no usable records"):
        load_records(f)
    report = check_file(f)
    assert not report.ok and "no usable records" in report.problems[0].message


@pytest.mark.parametrize("encoding, words", [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-32", "UTF-32")])
def test_utf16_and_utf32_are_refused_with_the_reason(tmp_path, encoding, words):
    f = tmp_path / "wide.jsonl"
    f.write_bytes(_jsonl(f, [CHAT, CHAT]).encode(encoding))
    for run in (lambda: load_records(f), lambda: check_file(f)):
        with pytest.raises(AttuneError, match=f"{words}.*convert it to UTF-8"):
            run()


def test_a_utf8_bom_is_skipped(tmp_path):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + _jsonl(f, [CHAT, CHAT]).encode())
    assert len(load_records(f)) == 2 and check_file(f).ok


def test_invalid_utf8_is_named_by_line(tmp_path):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(_jsonl(f, [CHAT]).encode() + '{"text": "café"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.jsonl:2.*invalid UTF-8 .*byte"):
        load_records(f)
    assert "invalid UTF-8" in check_file(f).problems[0].message


@pytest.mark.parametrize("split", ["file", "blank-line"])
def test_text_files_are_checked_for_their_encoding_like_jsonl(tmp_path, split):
    """A plain-text corpus gets the same encoding checks: BOM skipped, UTF-16 refused, bad bytes named by line."""
    from attune.data.source import DataSource

    def load(path):
        return load_records(DataSource(path=str(path), format="text", text_split=split))

    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfFirst paragraph.\n\nSecond one.\n")
    texts = [r.text for r in load(bom)]
    assert texts[0].startswith("First") and "\ufeff" not in "".join(texts)
    wide = tmp_path / "wide.txt"
    wide.write_bytes("Some text.\n".encode("utf-16"))
    with pytest.raises(AttuneError, match="UTF-16.*convert it to UTF-8"):
        load(wide)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"ok line\n\n" + "caf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt:3.*invalid UTF-8"):
        load(bad)


def test_a_mixed_file_says_which_format_was_detected(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text(_jsonl(f, [CHAT, ALPACA, CHAT]))
    report = check_file(f)
    [problem] = report.problems
    assert problem.source == f"{f}:2"
    assert f"format chat (detected from {f}:1)" in problem.message and "looks like instruction" in problem.message


def test_training_counts_and_prints_records_it_drops_or_truncates(tmp_path, tiny_model_dir, capsys):
    """Finding 4: a record whose reply lies past max_length was dropped without a word."""
    from attune.recipe import load_recipe
    from attune.runs import stage_output
    from attune.train.pipeline import run_recipe
    from test_train_pipeline import _recipe

    recipe_path = _recipe(tmp_path, tiny_model_dir, max_steps=1)
    data = tmp_path / "orders.jsonl"
    long = {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}
    data.write_text(data.read_text() + json.dumps(long) + "\n")
    run = run_recipe(load_recipe(recipe_path), show_progress=False)
    counts = stage_output(run, "sft").summary["records_dropped_or_truncated"]
    assert counts == {"dropped_no_labels": 1, "truncated": 1}
    printed = capsys.readouterr()
    assert "1 record(s) dropped" in " ".join((printed.out + printed.err).split())
