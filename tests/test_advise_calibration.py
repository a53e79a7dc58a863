"""The advisor calibrated to this machine and to the user's data; estimates against a measured run."""

from __future__ import annotations

import json
import statistics
import time

import pytest

from attune.advise.hardware import get_hardware
from attune.advise.probe import PREFILL_TOKENS, Probe, calibrated, probe_machine


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr("attune.models.builtin.cache_root", lambda: tmp_path)
    return tmp_path


def test_calibrated_profile_by_hand():
    hw = get_hardware("cpu")
    probe = Probe("Some CPU", 2, matmul_gflops=200.0, model="m", prefill_tokens_per_s=300.0, forward_gflops=80.0,
                  decode_s_per_token=0.05, measured_at="2026-12-02 15:00")
    cal = calibrated(hw, probe, weight_bytes=0.5e9)
    assert cal.peak_tflops == pytest.approx(0.2) and cal.mfu == pytest.approx(0.4)
    assert cal.effective_flops == pytest.approx(80e9)  # the model's own forward rate
    assert cal.bandwidth_gbs == pytest.approx(10.0)  # 0.5 GB read per 0.05 s decode step
    assert "Some CPU" in cal.source and f"{PREFILL_TOKENS}-token prefill" in cal.source
    assert calibrated(hw, Probe("c", 2, 200.0), None).mfu == hw.mfu  # no model step: the profile's MFU stays


def test_probe_measures_once_and_is_cached(cache, tiny_model_dir, tiny_model):
    n = sum(p.numel() for p in tiny_model.parameters())
    first = probe_machine(str(tiny_model_dir), n)
    assert first.matmul_gflops > 0 and first.forward_gflops > 0 and 0 < first.decode_s_per_token < 5
    files = list((cache / "advise").glob("probe-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["model"] == str(tiny_model_dir)
    assert probe_machine(str(tiny_model_dir), n) == first  # read back, not measured again
    assert probe_machine(None).model is None  # another key: matmul only
    assert len(list((cache / "advise").glob("probe-*.json"))) == 2


def test_counts_come_from_the_users_data(tmp_path, tokenizer):
    from attune.advise.datacounts import counts_from_data
    from attune.data.render import encode_chat

    rows = [{"conversations": [{"from": "human", "value": f"Ticket {i}: my parcel is late"},
                               {"from": "gpt", "value": '{"category": "shipping"}'}]} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = counts_from_data(tmp_path / "d.jsonl", "builtin:smollm2-135m-instruct")
    enc = encode_chat(tokenizer, [{"role": "user", "content": "Ticket 1: my parcel is late"},
                                  {"role": "assistant", "content": '{"category": "shipping"}'}], max_length=512)
    reply = sum(label != -100 for label in enc.labels)
    assert counts == {"labelled_examples": 5, "tokens_per_example": len(enc.input_ids),
                      "prompt_tokens": len(enc.input_ids) - reply, "output_tokens": reply}


@pytest.mark.slow
def test_builtin_lora_estimates_are_within_2x_of_a_measured_run(tmp_path):
    """Training time and per-query latency the calibrated advisor estimates vs measured, same machine, same data."""
    from attune.advise import advise
    from attune.advise.datacounts import counts_from_recipe
    from attune.advise.situation import Situation
    from attune.evaluate.tasks import load_task
    from attune.models import GenerationParams, load_generator
    from attune.recipe import parse_recipe
    from attune.runs import stage_output
    from attune.train.pipeline import run_recipe

    recipe = parse_recipe({
        "name": "calibration", "model": "builtin:smollm2-135m-instruct", "output_dir": str(tmp_path / "runs"),
        "stages": [{"name": "sft", "objective": "sft", "data": {"path": "builtin:tickets-train", "limit": 48},
                    "adapter": {"type": "lora", "r": 16, "alpha": 32, "targets": "all-linear"},
                    "train": {"epochs": 1, "lr": 2.0e-3, "batch_tokens": 1024, "max_length": 256}}],
    })
    counts = counts_from_recipe(recipe)
    advice = advise(Situation(goal="task", model=recipe.model, hardware="cpu", calibrate="fresh", **counts))  # probed now
    cost = advice.option("lora").cost
    summary = stage_output(run_recipe(recipe), "sft")
    measured_train = summary.summary["train_seconds"]
    assert 0.5 <= cost.time.seconds / measured_train <= 2.0, (cost.time.describe(), measured_train, advice.facts.hardware.source)

    generator = load_generator(recipe.model, str(summary.adapter))
    params = GenerationParams(max_new_tokens=counts["output_tokens"] + 8)
    latencies = []
    for ex in load_task("builtin:tickets").examples[:5]:
        t0 = time.perf_counter()
        generator.generate([ex["input"]], params)
        latencies.append(time.perf_counter() - t0)
    measured_latency = statistics.median(latencies)
    assert 0.5 <= cost.query.latency_s / measured_latency <= 2.0, (cost.query.describe(), measured_latency)
