"""What the studio relies on in training: SIGTERM stops with a checkpoint, and one trainer per run dir.

The studio stops a run by sending SIGTERM (`attune.studio.jobs`); the loop stops at the next step
boundary with a checkpoint and `--resume` finishes it. A second trainer on a run dir that is being
trained is refused before it writes anything, whether it comes from the CLI or the studio.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from attune.errors import AttuneError
from attune.recipe import load_recipe
from attune.runs import check_not_training, new_run_dir, training_lock, training_pid
from attune.train.checkpoint import list_checkpoints
from attune.train.pipeline import run_recipe

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _recipe(tmp_path, model_dir, **train):
    rows = [{"messages": [{"role": "user", "content": f"Where is order {i} going?"},
                          {"role": "assistant", "content": f"Order {i} ships to Oslo."}]} for i in range(32)]
    (tmp_path / "orders.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {"name": "tiny", "model": str(model_dir), "output_dir": str(tmp_path / "runs"),
              "stages": [{"objective": "sft", "data": {"path": str(tmp_path / "orders.jsonl")},
                          "adapter": {"type": "lora", "r": 4, "alpha": 8},
                          "train": {"lr": 1e-2, "batch_tokens": 128, "max_length": 64, "log_every": 1, **train}}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_second_trainer_on_a_run_dir_is_refused_and_writes_nothing(tmp_path, tiny_model_dir):
    recipe = load_recipe(_recipe(tmp_path, tiny_model_dir))
    run = new_run_dir(tmp_path / "runs", "tiny")
    (run / "recipe.yaml").write_text("written by the first trainer\n")
    with training_lock(run):
        assert training_pid(run) == os.getpid()
        with pytest.raises(AttuneError, match=f"already being trained by process {os.getpid()}"):
            run_recipe(recipe, run, resume=True, show_progress=False)
        with pytest.raises(AttuneError, match="already being trained"):
            check_not_training(run)
        assert (run / "recipe.yaml").read_text() == "written by the first trainer\n"
        assert not (run / "provenance.json").exists() and not (run / "stages").exists()
    assert training_pid(run) is None
    check_not_training(run)


@pytest.mark.timeout(600)
def test_sigterm_stops_at_a_step_with_a_checkpoint_and_resume_finishes(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir, max_steps=400, save_every=1000)
    run = new_run_dir(tmp_path / "runs", "tiny")
    (run / "recipe.yaml").write_text(recipe.read_text())  # as the studio's start_training does before it launches
    cmd = [sys.executable, "-m", "attune", "train", str(recipe), "--resume", str(run), "--no-progress"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run / "stages" / "sft" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.1)
    if training_pid(run) != proc.pid:
        proc.kill()
        pytest.fail(f"no live trainer recorded in {run}: {proc.communicate()[0][-4000:]}")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    step = json.loads(metrics.read_text().splitlines()[-1])["step"]
    assert f"training stopped by SIGTERM at step {step}/400" in out and "Traceback" not in out
    ckpts = list_checkpoints(run / "stages" / "sft" / "checkpoints")
    assert [int(c.name.split("-")[1]) for c in ckpts] == [step]  # save_every 1000: this checkpoint is the stop's own
    assert not (run / "stages" / "sft" / "summary.json").exists() and training_pid(run) is None

    short = _recipe(tmp_path, tiny_model_dir, max_steps=step + 2, save_every=1000)
    done = subprocess.run([sys.executable, "-m", "attune", "train", str(short), "--resume", str(run), "--no-progress"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, step + 3))  # continued from the checkpoint, no step repeated or skipped
    assert json.loads((run / "stages" / "sft" / "summary.json").read_text())["steps"] == step + 2
