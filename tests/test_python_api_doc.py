"""docs/python-api.md is a notebook: its Python blocks run top to bottom, here on a tiny random model.

Only the first block (the parameters: model, steps, held-out size) is replaced; every other line
runs as written. The results are then checked against what the same operations give on their own.
"""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
PARAMS = 'MODEL = "builtin:smollm2-135m-instruct"'


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_walkthrough_runs_top_to_bottom(tiny_model_dir, tmp_path, monkeypatch, capsys):
    code = blocks()
    assert code[0].startswith(PARAMS), "the first block must be the parameters cell"
    code[0] = f"MODEL = {str(tiny_model_dir)!r}\nSTEPS, HELDOUT = 2, 3\n"
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for i, block in enumerate(code):
        exec(compile(block, f"{DOC.name}[block {i}]", "exec"), ns)
    out = capsys.readouterr().out

    from attune import api
    from attune.evaluate.runner import TaskResult

    run = ns["run"]
    assert isinstance(run, api.TrainResult) and run.run_dir.is_relative_to(tmp_path / "runs" / "tickets")
    assert (run.adapter / "adapter_config.json").is_file() and run.base_model == str(tiny_model_dir)
    assert [m["step"] for m in run.stage("sft").metrics] == [1, 2]
    assert api.load_run(tmp_path / "runs" / "tickets" / "latest") == run
    assert "unknown key 'trian'" in out and "did you mean 'train'" in out
    after = ns["after"]
    assert isinstance(after.tasks[0], TaskResult) and len(after.tasks[0].rows) == 3
    assert set(after.scores["tickets"]) == {"exact_match", "json_valid", "json_fields"}
    names = [c.name for c in ns["table"].candidates]
    assert len(names) == 2 and (run.run_dir / "compare.json").is_file()
    assert ns["report"].chunks > 0 and ns["answer"].passages and isinstance(ns["answer"].answer, str)
    assert ns["reply"].choices[0].message.content is not None
    assert str(tiny_model_dir) in out  # /v1/models listed the base under the -m string
    assert ns["advice"].ranked


def test_cli_eval_and_api_agree(tiny_model_dir, tmp_path):
    """`attune eval --out` writes what `api.evaluate(...).to_dict()` returns (the CLI is a layer over it)."""
    import json

    from typer.testing import CliRunner

    from attune import api
    from attune.cli import app

    out = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["eval", "builtin:tickets", "-m", str(tiny_model_dir), "--limit", "2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    cli = json.loads(out.read_text())
    direct = api.evaluate("builtin:tickets", model=str(tiny_model_dir), limit=2)
    assert cli["results"][0]["metrics"] == direct.tasks[0].metrics
    assert [r["prediction"] for r in cli["results"][0]["rows"]] == [r["prediction"] for r in direct.tasks[0].rows]


def test_api_raises_the_cli_messages(tmp_path):
    import pytest
    from typer.testing import CliRunner

    from attune import AttuneError, api
    from attune.cli import app

    bad = tmp_path / "r.yaml"
    bad.write_text("name: r\nmodel: builtin:smollm2-135m-instruct\nstages:\n  - objective: sft\n    data: d.jsonl\n    trian: {}\n")
    with pytest.raises(AttuneError) as api_err:
        api.train(bad)
    res = CliRunner().invoke(app, ["train", str(bad)])
    assert res.exit_code != 0 and str(api_err.value) == str(res.exception)
    with pytest.raises(AttuneError, match="not a run directory"):
        api.load_run(tmp_path)
    with pytest.raises(AttuneError, match="unknown option"):
        api.evaluate("builtin:tickets", options={"kk": 3})


def test_import_attune_is_cheap():
    import subprocess
    import sys

    code = "import sys, attune, attune.api; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
