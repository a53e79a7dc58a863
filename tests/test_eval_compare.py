"""compare end to end on a tiny model: strategies, an adapter, the shipped probe, forgetting, the report.

Plus the shipped general-skills probe (sizes, right answers, checks that parse) and the report's
training curves, every numeric metric a stage logged included.
"""

from __future__ import annotations

import json
import re

import pytest

from attune.evaluate.compare import load_probe, run_compare
from attune.evaluate.metrics import parse_checks
from attune.evaluate.report import forgetting, training_series
from attune.recipe import parse_recipe


def test_general_probe_ships_four_honest_tasks():
    probe = {t.name: t for t in load_probe("builtin:general-probe")}
    assert {n: (t.spec.kind, len(t.examples)) for n, t in probe.items()} == {
        "probe-knowledge": ("choice", 40), "probe-arithmetic": ("generate", 30),
        "probe-instructions": ("generate", 20), "probe-text": ("perplexity", 12),
    }
    for ex in probe["probe-arithmetic"].examples:  # every reference is the right answer
        a, op, b = re.match(r"What is (\d+) ([+x-]) (\d+)\?", ex["query"]).groups()
        assert int(ex["reference"]) == {"+": int(a) + int(b), "-": int(a) - int(b), "x": int(a) * int(b)}[op]
    labels = [ex["label"] for ex in probe["probe-knowledge"].examples]
    assert len(set(labels)) == 4 and max(labels.count(i) for i in range(4)) <= 16  # the right option moves around
    assert all(parse_checks(ex["reference"]) for ex in probe["probe-instructions"].examples)


def test_training_series_keeps_every_numeric_metric_with_its_own_steps():
    rows = [
        {"step": 1, "epoch": 0.5, "loss": 2.0, "reward": 0.1, "kl": 0.0, "stopped": False, "note": "x"},
        {"step": 2, "epoch": 1.0, "loss": 1.5, "reward": 0.3, "kl": 0.02, "eval_loss": 1.7, "eval_acc": 0.5},
    ]
    series = training_series(rows)
    assert list(series)[0] == "loss"
    assert series == {
        "loss": ([1, 2], [2.0, 1.5]), "reward": ([1, 2], [0.1, 0.3]), "kl": ([1, 2], [0.0, 0.02]),
        "eval_loss": ([2], [1.7]), "eval_acc": ([2], [0.5]),
    }


def _lora_adapter(tiny_model_dir, tmp_path):
    """A LoRA whose B matrices are non-zero, so the adapted model really differs from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    path = tmp_path / "adapter"
    model.save_pretrained(path)
    return path


def _small_probe(tmp_path, n: int = 3):
    """The shipped probe's four tasks, first `n` examples each (the whole probe is for real models)."""
    import yaml

    from attune.builtin import builtin_path

    names = []
    for task in yaml.safe_load(builtin_path("general-probe").read_text())["tasks"]:
        spec = yaml.safe_load(builtin_path(task).read_text())
        spec.update(data=str(builtin_path(f"probes/{spec['data']}")), limit=n)
        (tmp_path / task).write_text(yaml.safe_dump(spec))
        names.append(str(tmp_path / task))
    (tmp_path / "probe.yaml").write_text(yaml.safe_dump({"tasks": names}))
    return str(tmp_path / "probe.yaml")


def test_compare_on_tiny_model_writes_table_probe_curves_and_report(tmp_path, tiny_model_dir):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    (tmp_path / "qa.yaml").write_text(json.dumps(
        {"name": "qa", "data": "qa.jsonl", "input": "question", "reference": "answer", "metrics": ["exact_match", "f1"],
         "max_new_tokens": 4}))
    run = tmp_path / "run"
    (run / "stages/sft").mkdir(parents=True)
    (run / "stages/sft/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 1, "loss": 3.0, "lr": 1e-3, "reward": 0.2}, {"step": 2, "loss": 2.5, "lr": 5e-4, "reward": 0.4, "eval_loss": 2.7},
    ]))
    adapter = _lora_adapter(tiny_model_dir, tmp_path)
    recipe = parse_recipe({
        "name": "tiny", "model": str(tiny_model_dir),
        "stages": [{"objective": "sft", "data": str(data)}],  # not a candidate: only its logged curves are used
        "evaluate": {"tasks": ["qa.yaml"], "forgetting": _small_probe(tmp_path)},
        "compare": [
            {"strategy": "zero-shot"},
            {"strategy": "few-shot", "k": 2, "selection": "random", "pool": "qa.yaml"},
            {"name": "lora", "adapter": str(adapter)},
        ],
    }, base_dir=tmp_path)
    result = run_compare(recipe, run)

    names = [c.name for c in result.candidates]
    assert names == ["zero-shot", "few-shot k=2 random", "lora"]
    assert set(result.base_probe) == {"probe-knowledge/acc", "probe-arithmetic/exact_match",
                                      "probe-instructions/follows_instructions", "probe-text/perplexity"}
    zero, few, lora = result.candidates
    assert forgetting(zero, result.base_probe) == forgetting(few, result.base_probe) == 0.0  # prompting keeps the weights
    scored = [k for k in result.base_probe if not k.endswith("/perplexity")]
    assert forgetting(lora, result.base_probe) == pytest.approx(sum(result.base_probe[k] - lora.probe[k] for k in scored) / 3)
    assert lora.probe["probe-text/perplexity"] != result.base_probe["probe-text/perplexity"]
    assert few.tasks[0].rows[0]["meta"]["shots"] and few.cost["prompt_tokens_per_query"] > zero.cost["prompt_tokens_per_query"]

    saved = json.loads((run / "compare.json").read_text())
    assert [c["name"] for c in saved["candidates"]] == names and saved["candidates"][2]["forgetting"] is not None
    md = (run / "report.md").read_text()
    assert "| forgetting | general ppl |" in md and "## General-skills probe" in md
    assert "| base (zero-shot, few-shot k=2 random) |" in md and "\n| lora | " in md
    page = (run / "report.html").read_text()
    assert [m for m in re.findall(r'<h2>([^<]+)</h2><img', page)] == ["scores", "forgetting", "training: sft"]


def test_eval_cli_scores_a_choice_task_and_writes_every_example(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from attune.cli import app

    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", "builtin:probe-knowledge", "--model", str(tiny_model_dir), "--limit", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "acc_norm" in result.output
    saved = json.loads(out.read_text())["results"][0]
    assert saved["task"] == "probe-knowledge" and len(saved["rows"]) == 3
    assert all(len(r["logprobs"]) == 4 and r["sent"].endswith("<|im_start|>assistant\n") for r in saved["rows"])
