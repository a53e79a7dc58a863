"""`precision: auto` decides by measuring the machine; bf16 autocast trains the same curve as fp32."""

from __future__ import annotations

import json

import pytest
import yaml

from attune.train import precision as prec

FAST = {"cpu": "test cpu", "fp32_gflops": 300.0, "bf16_gflops": 2400.0, "matmul_speedup": 8.0, "step_speedup": 2.3}
SLOW = {"cpu": "test cpu", "fp32_gflops": 130.0, "bf16_gflops": 0.3, "matmul_speedup": 0.0023, "step_speedup": 0.05}


@pytest.mark.parametrize(
    ("requested", "probe", "expected"),
    [("auto", FAST, "bf16"), ("auto", SLOW, "fp32"), ("fp32", FAST, "fp32"), ("bf16", SLOW, "bf16"), ("fp16", FAST, "fp32")],
)
def test_cpu_precision_follows_the_measurement(monkeypatch, requested, probe, expected):
    monkeypatch.setattr(prec, "cpu_probe", lambda refresh=False: probe)
    choice = prec.choose_precision(requested, "cpu")
    assert choice.precision == expected
    if requested in ("auto", "bf16"):
        assert f"{probe['bf16_gflops']:.1f}" in choice.reason  # the measured numbers are in the reason


def test_probe_measures_once_per_machine_and_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTUNE_CACHE", str(tmp_path))
    calls = []
    measured = {k: v for k, v in FAST.items() if k != "cpu"}
    monkeypatch.setattr(prec, "_measure", lambda: calls.append(1) or dict(measured))
    first = prec.cpu_probe()
    second = prec.cpu_probe()
    assert first == second and len(calls) == 1
    assert first["cpu"] == prec.cpu_model() and list(tmp_path.rglob("precision-*.json"))
    prec.cpu_probe(refresh=True)
    assert len(calls) == 2


def test_real_probe_returns_positive_rates(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTUNE_CACHE", str(tmp_path))
    probe = prec.cpu_probe()
    assert probe["fp32_gflops"] > 0 and probe["bf16_gflops"] > 0 and probe["step_speedup"] > 0


def _train(tmp_path, model_dir, precision: str) -> tuple[list[float], dict]:
    from attune.recipe import load_recipe
    from attune.runs import stage_output
    from attune.train.pipeline import run_recipe

    data = tmp_path / "orders.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Where is order {i} going?"},
        {"role": "assistant", "content": f"Order {i} ships to {['Paris', 'Rome', 'Oslo'][i % 3]}."},
    ]}) + "\n" for i in range(32)))
    recipe = tmp_path / f"{precision}.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": precision, "model": str(model_dir), "output_dir": str(tmp_path / "runs"),
        "stages": [{"objective": "sft", "data": {"path": str(data)},
                    "adapter": {"type": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
                    "train": {"lr": 1e-2, "batch_tokens": 256, "max_length": 64, "warmup_ratio": 0.0, "seed": 3,
                              "max_steps": 4, "precision": precision}}],
    }))
    out = stage_output(run_recipe(load_recipe(recipe), show_progress=False), "sft")
    return [json.loads(x)["loss"] for x in out.metrics_file.read_text().splitlines()], out.summary


def test_bf16_autocast_trains_the_same_curve_as_fp32(tmp_path, tiny_model_dir):
    """bf16 autocast (fp32 master weights) follows the fp32 loss curve of the tiny model within 3 %."""
    fp32, s32 = _train(tmp_path, tiny_model_dir, "fp32")
    bf16, s16 = _train(tmp_path, tiny_model_dir, "bf16")
    assert s32["precision"]["precision"] == "fp32" and s16["precision"]["precision"] == "bf16"
    assert "reason" in s16["precision"]
    assert len(fp32) == len(bf16) == 4
    assert fp32 != bf16  # autocast really ran in bf16
    for a, b in zip(fp32, bf16):
        assert abs(a - b) <= 0.03 * abs(a), (fp32, bf16)
    assert bf16[-1] < bf16[0]
