"""DDP, DeepSpeed ZeRO-2/3 and FSDP2 on 2 CPU processes (gloo), through the shipped launch configs.

One launch per launcher trains a four-stage recipe (SFT and DPO, LoRA and full, each from the base)
and is compared with one single-process run of the same recipe at the same global batch: the loss
curves (1e-4) and the saved adapters/models (1e-5), which must load with plain PEFT / transformers.
Resume after SIGKILL and the launch-time refusals get launches of their own. Master ports 29600-29699.
"""

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

from attune.builtin import builtin_path
from attune.train.checkpoint import WEIGHTS, list_checkpoints

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
STAGES = ("sft-lora", "sft-full", "dpo-lora", "dpo-full")
STEPS = 3
PORTS = {"ddp": 29611, "zero2": 29612, "zero3": 29613, "fsdp": 29614}


def _chats(path: Path, n: int = 32) -> Path:
    rows = [{"messages": [
        {"role": "user", "content": f"Where is order {i} going?"},
        {"role": "assistant", "content": f"Order {i} ships to {['Paris', 'Rome', 'Oslo', 'Lima'][i % 4]}."},
    ]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _prefs(path: Path, n: int = 32) -> Path:
    rows = [{"prompt": f"Where is order {i}?", "chosen": f"Thanks for asking! Order {i} ships today.",
             "rejected": "Not my problem."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _stage(name: str, data: Path, adapter: dict, **train) -> dict:
    objective = name.split("-")[0]
    # Adam divides by the gradient's running RMS, so summation-order noise in tiny gradients becomes a
    # share of the learning rate: lr 1e-3 keeps that under 1e-5 while 3 steps still move every weight
    lr = 1e-3 * (0.1 if adapter["type"] == "full" else 1.0)
    # fp32: the check is that sharding changes nothing; bf16 autocast (what `auto` picks where bf16 is
    # faster) rounds each layout's partial sums differently, far above 1e-5
    return {
        "name": name, "objective": objective, "start": "base", "data": {"path": str(data)}, "adapter": adapter,
        "train": {"lr": lr, "batch_tokens": 192, "max_length": 64, "warmup_ratio": 0.0, "seed": 3,
                  "max_steps": STEPS, "val_fraction": 0.0, "save_every": 1, "precision": "fp32", **train},
    }


def write_recipe(root: Path, model_dir: Path, grad_accum: int, stages: tuple[str, ...] = STAGES, **train) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    chats, prefs = _chats(root / "chats.jsonl"), _prefs(root / "prefs.jsonl")
    lora = {"type": "lora", "r": 4, "alpha": 8, "targets": "all-linear"}
    specs = {
        "sft-lora": _stage("sft-lora", chats, lora, grad_accum=grad_accum, **train),
        "sft-full": _stage("sft-full", chats, {"type": "full"}, grad_accum=grad_accum, **train),
        "dpo-lora": _stage("dpo-lora", prefs, lora, grad_accum=grad_accum, **train),
        "dpo-full": _stage("dpo-full", prefs, {"type": "full"}, grad_accum=grad_accum, **train),
    }
    recipe = {"name": "dist", "model": str(model_dir), "output_dir": str(root / "runs"), "stages": [specs[s] for s in stages]}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def launch(config: str, port: int, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file <shipped config> -m attune ...` on 2 CPU processes."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(builtin_path(f"accelerate/{config}.yaml")),
           "--num_processes", "2", "--main_process_port", str(port), "-m", "attune", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def run_dir(root: Path) -> Path:
    return (root / "runs" / "dist" / "latest").resolve()


def losses(run: Path, stage: str) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "stages" / stage / "metrics.jsonl").read_text().splitlines()]


def saved_weights(run: Path, stage: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = run / "stages" / stage
    path = out / "adapter" / "adapter_model.safetensors" if (out / "adapter").is_dir() else out / "model" / "model.safetensors"
    return load_file(str(path))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    from conftest import make_tiny_model

    path = tmp_path_factory.mktemp("model")
    make_tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory, model_dir):
    """The reference: one process, grad_accum 2 (= 2 processes x grad_accum 1)."""
    root = tmp_path_factory.mktemp("single")
    proc = subprocess.run([sys.executable, "-m", "attune", "train", str(write_recipe(root, model_dir, 2)), "--no-progress"],
                          env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir(root)


@pytest.fixture(scope="session")
def deepspeed_ops():
    """DeepSpeed's CPU communication op JIT-compiles on first use (minutes on 2 busy cores): build it
    once here, in one process, so the two ranks of a launch do not both wait on the build lock."""
    pytest.importorskip("deepspeed")
    code = ("from deepspeed.accelerator import get_accelerator\n"
            "b = get_accelerator().create_op_builder('ShareMemCommBuilder')\n"
            "import deepspeed.ops\n"
            "b.load() if b is not None and deepspeed.ops.__compatible_ops__.get(b.NAME) else None\n")
    subprocess.run([sys.executable, "-c", code], env=ENV, check=True, capture_output=True, timeout=1500)


def _check_launcher(config: str, tmp_path: Path, model_dir: Path, single: Path, stages: tuple[str, ...] = STAGES) -> Path:
    root = tmp_path / config
    proc = launch(config, PORTS[config], "train", str(write_recipe(root, model_dir, 1, stages)), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = run_dir(root)
    for stage in stages:
        ours, ref = losses(run, stage), losses(single, stage)
        assert len(ours) == len(ref) == STEPS, stage
        got, want = saved_weights(run, stage), saved_weights(single, stage)
        assert got.keys() == want.keys() and got, stage
        assert all(got[k].shape == v.shape and got[k].numel() > 0 for k, v in want.items()), stage  # complete, not partial
        d_loss = max(abs(a - b) for a, b in zip(ours, ref))
        d_weight = max(float((got[k] - v).abs().max()) for k, v in want.items())
        print(f"{config} {stage}: max |d loss| {d_loss:.1e}, max |d weight| {d_weight:.1e}")
        assert d_loss < 1e-4 and d_weight < 1e-5, (stage, ours, ref, d_weight)
        if stage.endswith("lora"):  # LoRA B starts at 0: training moved it far beyond the tolerance
            assert max(float(v.abs().max()) for k, v in got.items() if "lora_B" in k) > 1e-4
    _loads_with_plain_libraries(run, model_dir, full="sft-full" in stages)
    return run


def _loads_with_plain_libraries(run: Path, model_dir: Path, full: bool) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        plain = base(input_ids=ids).logits
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(run / "stages" / "sft-lora" / "adapter"))
    with torch.no_grad():
        assert not torch.allclose(peft(input_ids=ids).logits, plain, atol=1e-4)
        if full:
            model = AutoModelForCausalLM.from_pretrained(run / "stages" / "sft-full" / "model")
            assert not torch.allclose(model(input_ids=ids).logits, plain, atol=1e-4)


@pytest.mark.timeout(1200)
def test_ddp_matches_one_process(tmp_path, model_dir, single):
    _check_launcher("ddp", tmp_path, model_dir, single)


@pytest.mark.timeout(1800)
def test_zero3_matches_one_process_and_exports_merged(tmp_path, model_dir, single, deepspeed_ops):
    """ZeRO-3 (the sharded weights case): complete adapters, and `attune export --merge` equals base + adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = _check_launcher("zero3", tmp_path, model_dir, single)
    out = tmp_path / "merged"
    proc = subprocess.run([sys.executable, "-m", "attune", "export", str(run), "--stage", "sft-lora", "--out", str(out)],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(run / "stages" / "sft-lora" / "adapter"))
    merged = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, peft(input_ids=ids).logits, atol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_zero2_matches_one_process(tmp_path, model_dir, single, deepspeed_ops):
    _check_launcher("zero2", tmp_path, model_dir, single)


@pytest.mark.timeout(1200)
def test_fsdp_matches_one_process(tmp_path, model_dir, single):
    """LoRA only: FSDP with full fine-tuning is refused on CPU (it crashes there, see the refusal test)."""
    _check_launcher("fsdp", tmp_path, model_dir, single, ("sft-lora", "dpo-lora"))


def _kill_then_resume(config: str, port: int, tmp_path: Path, model_dir: Path, stage: str) -> None:
    """SIGKILL one rank after a checkpoint; `--resume` ends with the weights of an uninterrupted run (1e-6)."""
    steps = 6
    full_root, kill_root = tmp_path / "full", tmp_path / "kill"
    recipe_full = write_recipe(full_root, model_dir, 1, (stage,))
    recipe_kill = write_recipe(kill_root, model_dir, 1, (stage,))
    for path in (recipe_full, recipe_kill):
        spec = yaml.safe_load(path.read_text())
        spec["stages"][0]["train"]["max_steps"] = steps
        path.write_text(yaml.safe_dump(spec))
    proc = launch(config, port, "train", str(recipe_full), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-4000:]
    want = _last_weights(run_dir(full_root), stage)

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(builtin_path(f"accelerate/{config}.yaml")),
           "--num_processes", "2", "--main_process_port", str(port + 1), "-m", "attune", "train", str(recipe_kill), "--no-progress"]
    launcher = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, killed = time.time() + 900, None
    try:
        while time.time() < deadline and launcher.poll() is None:
            latest = kill_root / "runs" / "dist" / "latest"
            ckpts = list_checkpoints(latest.resolve() / "stages" / stage / "checkpoints") if latest.exists() else []
            if ckpts and int(ckpts[-1].name.split("-")[1]) >= 2:
                killed = _kill_one_rank(launcher.pid)
                break
            time.sleep(0.05)
    finally:
        launcher.wait(timeout=300) if killed else os.killpg(launcher.pid, signal.SIGKILL)
    assert killed, "no checkpoint appeared before the deadline"
    run = run_dir(kill_root)
    assert not (run / "stages" / stage / "summary.json").exists()  # really killed mid-run
    proc = launch(config, port + 2, "train", str(recipe_kill), "--resume", str(run), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = _last_weights(run, stage)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert torch.allclose(got[name], value, atol=1e-6), name


def _last_weights(run: Path, stage: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(list_checkpoints(run / "stages" / stage / "checkpoints")[-1] / WEIGHTS))


def _kill_one_rank(launcher_pid: int) -> int | None:
    """SIGKILL the training process of rank 1 (a child of the launcher's torchrun agent)."""
    import psutil

    for child in psutil.Process(launcher_pid).children(recursive=True):
        env = child.environ() if child.is_running() else {}
        if env.get("RANK") == "1" and "attune" in " ".join(child.cmdline()):
            os.kill(child.pid, signal.SIGKILL)
            return child.pid
    return None


@pytest.mark.slow  # three launches
@pytest.mark.timeout(1800)
def test_fsdp_rank_killed_then_resumed_matches_uninterrupted(tmp_path, model_dir):
    _kill_then_resume("fsdp", 29620, tmp_path, model_dir, "sft-lora")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_zero3_rank_killed_then_resumed_matches_uninterrupted(tmp_path, model_dir, deepspeed_ops):
    _kill_then_resume("zero3", 29630, tmp_path, model_dir, "sft-lora")


@pytest.mark.timeout(1200)
def test_sharded_launch_refuses_what_cannot_work_before_any_step(tmp_path, model_dir):
    """Under FSDP: full fine-tuning on CPU (it crashes there), an online objective (grpo generates from
    the whole model) and a logit-distillation teacher too big to replicate on each process are refused
    before the first step, with the reason."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {i}", "answer": str(i)}) + "\n" for i in range(8)))
    chats = _chats(tmp_path / "chats.jsonl")
    from transformers import LlamaConfig

    huge = tmp_path / "huge-teacher"
    LlamaConfig(hidden_size=16384, intermediate_size=53248, num_hidden_layers=126, num_attention_heads=128,
                num_key_value_heads=8, vocab_size=49152).save_pretrained(huge)  # a 405B config, no weights
    stages = [
        {"name": "full", "objective": "sft", "data": {"path": str(chats)}, "adapter": {"type": "full"}, "train": {"max_steps": 1}},
        {"name": "rl", "objective": "grpo", "data": {"path": str(prompts)},
         "train": {"max_steps": 1, "reward_function": "attune.align.rewards:exact_answer"}},
        {"name": "kd", "objective": "distill", "teacher": str(huge), "data": {"path": str(chats)},
         "train": {"loss": "logit", "max_steps": 1}},
    ]
    for i, stage in enumerate(stages):
        recipe = {"name": "bad", "model": str(model_dir), "output_dir": str(tmp_path / "runs"), "stages": [stage]}
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        proc = launch("fsdp", 29640 + i, "train", str(path), "--no-progress", timeout=600)
        assert proc.returncode != 0
        expected = ["crashes on CPU processes", "generates rollouts", "the teacher is not"][i]
        assert expected in proc.stderr, proc.stderr[-3000:]
        assert "[rank0]: Traceback" not in proc.stderr, proc.stderr[-3000:]  # (the launcher prints its own)
        assert not list((tmp_path / "runs").rglob("metrics.jsonl"))  # no step ran
