"""Quiet, plain output where users run attune: no third-party warnings, progress lines in logs, choices in --help."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from attune.cli import app
from attune.train.progress import PlainProgress
from test_train_pipeline import _recipe


def test_train_in_a_pipe_prints_progress_lines_and_no_warnings(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir, max_steps=12)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "attune", "train", str(recipe)], capture_output=True, text=True, env=env,
                          timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    lines = re.findall(r"train step (\d+)/12  loss [\d.]+ .* tok/s  ETA \S+", out)
    assert lines and lines[-1] == "12"
    assert "warning" not in out.lower(), out


def test_plain_progress_every_n_steps_or_seconds():
    stream = io.StringIO()
    progress = PlainProgress(total=25, start=0, stream=stream, every_steps=10, every_seconds=3600)
    for step in range(1, 26):
        progress.update({"step": step, "loss": 1.0 / step, "tokens_per_s": 100.0})
    steps = [int(m) for m in re.findall(r"train step (\d+)/25", stream.getvalue())]
    assert steps == [10, 20, 25]
    assert stream.getvalue().splitlines()[-1].endswith("ETA 0s")


@pytest.mark.parametrize("command, option, choices", [
    (["eval"], "--strategy", ["zero-shot", "few-shot", "cot", "rag"]),
    (["eval"], "--selection", ["random", "similarity"]),
    (["rag", "ask"], "--mode", ["hybrid", "dense", "bm25"]),
    (["serve"], "--backend", ["transformers", "vllm"]),
    (["advise"], "--access", ["weights", "api"]),
    (["export"], "--gguf-dtype", ["f32", "f16"]),
])
def test_enumerated_options_list_their_choices(command, option, choices):
    runner = CliRunner()
    help_text = runner.invoke(app, [*command, "--help"], terminal_width=200).output
    assert "|".join(choices) in re.sub(r"\s+", "", help_text).replace("<", "").replace(">", "") or all(c in help_text for c in choices)
    bad = runner.invoke(app, [*command, option, "nope"], terminal_width=200)
    assert bad.exit_code == 2 and all(f"'{c}'" in bad.output for c in choices), bad.output


def test_bitsandbytes_is_imported_only_for_qlora(tmp_path, tiny_model_dir):
    """One CLI process trains LoRA without importing bitsandbytes, then QLoRA with it (the gate lifts)."""
    pytest.importorskip("bitsandbytes")
    import yaml

    lora = _recipe(tmp_path, tiny_model_dir, max_steps=2)
    spec = yaml.safe_load(lora.read_text())
    spec["name"], spec["stages"][0]["adapter"]["type"] = "tiny-q", "qlora"
    qlora = tmp_path / "qlora.yaml"
    qlora.write_text(yaml.safe_dump(spec))
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from attune.cli import app\n"
        "def train(recipe):\n"
        "    res = CliRunner().invoke(app, ['train', recipe, '--no-progress'])\n"
        "    assert res.exit_code == 0, (res.output, res.exception)\n"
        "    return sys.modules.get('bitsandbytes') is not None\n"
        f"print('lora', train({str(lora)!r}), 'peft' in sys.modules)\n"
        f"print('qlora', train({str(qlora)!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lora False True" in done.stdout and "qlora True" in done.stdout, done.stdout
