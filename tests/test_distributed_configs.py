"""Fast checks of the shipped launch configs, `attune launch-config` and scripts/gpu_check.sh's argument handling.

The GPU check itself needs CUDA; here it is run for syntax, options and its refusal without a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attune.cli import app

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
KINDS = {"ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_launch_config_prints_a_config_accelerate_reads(name):
    from accelerate.commands.config.config_args import ClusterConfig

    result = CliRunner().invoke(app, ["launch-config", name])
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path.is_file() and path.name == f"{name}.yaml"
    config = ClusterConfig.from_yaml_file(path)
    assert str(config.distributed_type).split(".")[-1] == KINDS[name]
    assert not config.use_cpu  # `--cpu` would start a single process
    if name.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2


def test_launch_config_unknown_name_lists_the_choices():
    result = CliRunner().invoke(app, ["launch-config", "zero4"])
    assert result.exit_code != 0
    assert "ddp, zero2, zero3, fsdp" in str(result.exception) + result.output


def _gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_gpu_check_script_parses_and_lists_its_checks():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    listed = _gpu_check("--list")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == ["sft-lora", "sft-full", "qlora", "dpo", "fsdp-1gpu", "zero3-1gpu", "vllm-serve", "sft-vs-trl", "unsloth"]
    helper = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--help"], capture_output=True, text=True)
    assert helper.returncode == 0 and all(n in helper.stdout for n in names)


def test_gpu_check_dry_run_selects_checks_and_stays_within_eight_minutes():
    dry = _gpu_check("--dry-run", "--only", "dpo,qlora", "--seconds", "10", "--out", "/tmp/x")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert len(lines) == 2 and "gpu_check.py dpo --out /tmp/x --seconds 10" in lines[0] and " qlora " in lines[1]
    everything = _gpu_check("--dry-run").stdout.splitlines()
    assert sum(int(line.split()[1]) for line in everything) < 8 * 60  # the per-check time limits


@pytest.mark.parametrize("args, message", [
    (("--only", "nope"), "unknown check 'nope'"),
    (("--bogus",), "unknown argument '--bogus'"),
    (("--seconds", "abc"), "--seconds must be a positive number"),
    (("--only",), "--only needs"),
])
def test_gpu_check_rejects_bad_arguments(args, message):
    proc = _gpu_check(*args)
    assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_refuses_to_run_without_a_gpu():
    proc = _gpu_check("--only", "sft-lora")
    assert proc.returncode == 3 and "no CUDA GPU" in proc.stderr
