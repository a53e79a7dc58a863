"""`attune train` end to end on the tiny model: outputs, PEFT round-trip, export, SIGKILL + resume, 2 processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from attune.recipe import load_recipe
from attune.runs import stage_output
from attune.train.checkpoint import list_checkpoints
from attune.train.pipeline import run_recipe

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _write_data(path: Path, n: int = 48) -> Path:
    rows = []
    for i in range(n):
        city = ["Paris", "Rome", "Oslo", "Lima"][i % 4]
        rows.append({"messages": [
            {"role": "user", "content": f"Where is order {i} going?"},
            {"role": "assistant", "content": f"Order {i} ships to {city}."},
        ]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recipe(tmp_path: Path, model_dir: Path, **train) -> Path:
    data = _write_data(tmp_path / "orders.jsonl")
    recipe = {
        "name": "tiny",
        "model": str(model_dir),
        "output_dir": str(tmp_path / "runs"),
        "stages": [{
            "objective": "sft",
            "data": {"path": str(data)},
            "adapter": {"type": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
            "train": {"lr": 1e-2, "batch_tokens": 256, "max_length": 64, "warmup_ratio": 0.0, "seed": 3, **train},
        }],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_train_writes_a_peft_adapter_that_plain_peft_loads(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = run_recipe(load_recipe(_recipe(tmp_path, tiny_model_dir, epochs=2)), show_progress=False)
    out = stage_output(run, "sft")
    summary = out.summary
    assert summary["trainable_params"] > 0 and summary["steps"] > 0 and summary["tokens_seen"] > 0
    assert (run / "recipe.yaml").is_file() and (run / "provenance.json").is_file()
    assert (run.parent / "latest").resolve() == run.resolve()
    losses = [json.loads(x)["loss"] for x in out.metrics_file.read_text().splitlines()]
    assert losses[-1] < losses[0]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, str(out.adapter))
    ids = torch.tensor([[1, 2, 3, 4]])
    with model.disable_adapter():
        plain = model(input_ids=ids).logits
    assert not torch.allclose(model(input_ids=ids).logits, plain)


def test_export_merges_and_matches(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from attune.train.export import merge_adapter

    run = run_recipe(load_recipe(_recipe(tmp_path, tiny_model_dir, max_steps=3)), show_progress=False)
    out = stage_output(run, "sft")
    diff = merge_adapter(str(tiny_model_dir), str(out.adapter), tmp_path / "merged")
    assert diff is not None and diff <= 1e-4
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert (tmp_path / "merged" / "tokenizer_config.json").is_file()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "attune", *args]


@pytest.mark.timeout(600)
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir):
    """Kill `attune train` with SIGKILL after a checkpoint; `--resume` ends with the same weights (atol 1e-6)."""
    from safetensors.torch import load_file

    recipe = _recipe(tmp_path, tiny_model_dir, max_steps=12, save_every=2, epochs=50)
    subprocess.run(_cli("train", str(recipe), "--no-progress"), env=ENV, check=True, capture_output=True)
    reference = load_recipe(recipe)
    full_run = (tmp_path / "runs" / "tiny" / "latest").resolve()
    full = load_file(list_checkpoints(full_run / "stages" / "sft" / "checkpoints")[-1] / "trainable.safetensors")

    proc = subprocess.Popen(_cli("train", str(recipe), "--no-progress"), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    killed_run = None
    while time.time() < deadline:
        latest = tmp_path / "runs" / "tiny" / "latest"
        if latest.exists() and latest.resolve() != full_run:
            killed_run = latest.resolve()
            ckpts = list_checkpoints(killed_run / "stages" / "sft" / "checkpoints")
            if ckpts and int(ckpts[-1].name.split("-")[1]) >= 4:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed_run is not None
    assert not (killed_run / "stages" / "sft" / "summary.json").exists()  # really killed mid-run
    subprocess.run(_cli("train", str(recipe), "--resume", str(killed_run), "--no-progress"), env=ENV, check=True, capture_output=True)
    resumed = load_file(list_checkpoints(killed_run / "stages" / "sft" / "checkpoints")[-1] / "trainable.safetensors")
    assert reference.stages[0].train.max_steps == 12
    for name, value in full.items():
        assert torch.allclose(value, resumed[name], atol=1e-6), name


@pytest.mark.timeout(600)
def test_two_processes_match_one_process_with_same_global_batch(tmp_path, tiny_model_dir):
    """torchrun x2 with grad_accum 1 == one process with grad_accum 2 (same global batch); losses within 1e-5."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = _recipe(tmp_path / "one", tiny_model_dir, max_steps=4, grad_accum=2)
    two = _recipe(tmp_path / "two", tiny_model_dir, max_steps=4, grad_accum=1)
    subprocess.run(_cli("train", str(one), "--no-progress"), env=ENV, check=True, capture_output=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "-m", "attune"]
    proc = subprocess.run([*launcher, "train", str(two), "--no-progress"], env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def losses(root: Path) -> list[float]:
        run = (root / "runs" / "tiny" / "latest").resolve()
        return [json.loads(x)["loss"] for x in (run / "stages" / "sft" / "metrics.jsonl").read_text().splitlines()]

    single, double = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(single) == len(double) == 4
    assert max(abs(a - b) for a, b in zip(single, double)) < 1e-5


@pytest.mark.timeout(600)
def test_two_processes_stop_together_on_a_time_budget(tmp_path, tiny_model_dir):
    """Under torchrun the time-budget check is all-reduced: both ranks stop after step 1, no hang."""
    recipe = _recipe(tmp_path, tiny_model_dir, epochs=50, max_seconds=1e-6)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534", "-m", "attune"]
    proc = subprocess.run([*launcher, "train", str(recipe), "--no-progress"], env=ENV, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = (tmp_path / "runs" / "tiny" / "latest").resolve() / "stages" / "sft"
    assert [json.loads(x)["step"] for x in (stage / "metrics.jsonl").read_text().splitlines()] == [1]
    assert [c.name for c in list_checkpoints(stage / "checkpoints")] == ["step-00000001"]


def test_cpt_then_sft_chain_with_replay(tmp_path, tiny_model_dir):
    """cpt (with replay) -> sft: the second stage starts from the first stage's merged weights."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"d{i}.md").write_text(f"The Zephyr {i} battery stores {i + 5} kWh. " * 20)
    general = _jsonl_text(tmp_path / "general.jsonl", [f"General sentence number {i} about the weather." for i in range(10)])
    data = _write_data(tmp_path / "orders.jsonl")
    recipe = {
        "name": "chain", "model": str(tiny_model_dir), "output_dir": str(tmp_path / "runs"),
        "stages": [
            {"objective": "cpt", "data": {"path": str(docs)}, "replay": {"path": str(general), "ratio": 0.3},
             "train": {"max_steps": 2, "batch_tokens": 256, "max_length": 64, "lr": 1e-2}},
            {"objective": "sft", "data": {"path": str(data)}, "train": {"max_steps": 2, "batch_tokens": 256, "max_length": 64}},
        ],
    }
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = run_recipe(load_recipe(path), show_progress=False)
    assert stage_output(run, "cpt").summary["steps"] == 2
    assert stage_output(run, "sft").summary["base_model"] == str(run / "stages" / "cpt" / "merged")
    assert (run / "stages" / "cpt" / "merged" / "config.json").is_file()


def _jsonl_text(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path
