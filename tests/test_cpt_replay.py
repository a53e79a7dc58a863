"""Replay against forgetting: the `start: base` stage option, per-task validation, the replay plot's numbers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import torch
import yaml

from attune.evaluate.compare import CandidateResult, CompareResult
from attune.evaluate.replay_plot import replay_plots, replay_points
from attune.evaluate.runner import TaskResult
from attune.recipe import load_recipe, parse_recipe
from attune.runs import stage_output
from attune.train.pipeline import _load_stage_records, run_recipe


def _texts(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_stages_that_start_from_base_are_not_chained(tmp_path, tiny_model_dir):
    docs = _texts(tmp_path / "docs.jsonl", [f"The Zephyr {i} battery stores {i + 5} kWh. " * 8 for i in range(8)])
    general = _texts(tmp_path / "general.jsonl", [f"Rivers run to the sea, sentence {i}. " * 6 for i in range(8)])
    train = {"max_steps": 1, "batch_tokens": 256, "max_length": 64, "val_fraction": 0.25}
    recipe = {
        "name": "sides", "model": str(tiny_model_dir), "output_dir": str(tmp_path / "runs"),
        "stages": [
            {"name": "plain", "objective": "cpt", "start": "base", "data": str(docs), "train": train},
            {"name": "replayed", "objective": "cpt", "start": "base", "data": str(docs),
             "replay": {"path": str(general), "ratio": 0.5}, "train": train},
        ],
    }
    path = tmp_path / "sides.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = run_recipe(load_recipe(path), show_progress=False)
    assert stage_output(run, "replayed").summary["base_model"] == str(tiny_model_dir)
    assert not (run / "stages" / "plain" / "merged").exists()  # nothing after it starts from it
    # the replay set is validated on its own: eval_loss/<task> for the domain and for the replay set
    tasks = stage_output(run, "replayed").summary["eval_loss_per_task"]
    assert set(tasks) == {"docs", "replay"} and all(v > 0 for v in tasks.values())
    assert stage_output(run, "plain").summary["eval_loss_per_task"] == {}


def test_each_dataset_is_split_before_mixing(tmp_path):
    a = _texts(tmp_path / "a.jsonl", [f"alpha {i}" for i in range(20)])
    b = _texts(tmp_path / "b.jsonl", [f"beta {i}" for i in range(4)])
    recipe = parse_recipe({"name": "m", "model": "unused", "stages": [{
        "objective": "cpt", "data": [{"path": str(a)}, {"path": str(b), "name": "small", "weight": 1.0}],
        "train": {"val_fraction": 0.25}}]})
    train, val, per_task = _load_stage_records(recipe, recipe.stages[0], ("text",))
    assert sorted(per_task) == ["a", "small"] and len(per_task["a"]) == 5 and len(per_task["small"]) == 1
    held = {r.text for r in val}
    assert held == {r.text for v in per_task.values() for r in v}
    assert not held & {r.text for r in train}  # up-sampling the small set never leaks a held-out record
    assert len(train) == 18 and sum(r.text.startswith("beta") for r in train) == 9  # equal weights: half of 15 + 3


def _result(tmp_path: Path, losses: dict[str, tuple[float, float]], probe: dict[str, dict[str, float]]) -> CompareResult:
    run = tmp_path / "run"
    stages = [
        {"name": "lora", "objective": "cpt", "adapter": {"type": "lora"}},
        {"name": "lora-replay", "objective": "cpt", "adapter": {"type": "lora"}, "replay": {"path": "g", "ratio": 0.5}},
        {"name": "full", "objective": "cpt", "adapter": {"type": "full"}},
    ]
    recipe = parse_recipe({"name": "r", "model": "m", "stages": stages})
    candidates = []
    for name, (domain, general) in losses.items():
        tasks = [TaskResult("domain-ppl", "perplexity", {"loss": domain}), TaskResult("general-ppl", "perplexity", {"loss": general})]
        adapter = str(run / "stages" / name / "adapter") if name.startswith("lora") else None
        model = str(run / "stages" / name / "model") if name == "full" else "builtin:smollm2-135m-instruct"
        stage = None if name == "base" else name
        candidates.append(CandidateResult(name, model, adapter, "zero-shot", tasks, probe.get(name, {}), stage=stage))
    return CompareResult("r", run, candidates, probe["base"], stages={s.name: s for s in recipe.stages})


def test_replay_points_are_gains_and_losses_against_the_base(tmp_path):
    losses = {"base": (3.0, 2.0), "lora": (2.0, 2.5), "lora-replay": (2.25, 2.125), "full": (1.0, 3.0)}
    probe = {"base": {"k/acc": 0.5}, "lora": {"k/acc": 0.375}, "lora-replay": {"k/acc": 0.5}, "full": {"k/acc": 0.25}}
    points = {p.stage: p for p in replay_points(_result(tmp_path, losses, probe))}
    assert set(points) == {"lora", "lora-replay", "full"}
    assert (points["lora"].domain_gain, points["lora"].general_increase, points["lora"].forgetting) == (1.0, 0.5, 0.125)
    assert (points["lora-replay"].domain_gain, points["lora-replay"].general_increase) == (0.75, 0.125)
    assert points["lora-replay"].replay and not points["lora"].replay and points["full"].adapter == "full"
    assert (points["full"].domain_gain, points["full"].general_increase, points["full"].forgetting) == (2.0, 1.0, 0.25)
    png = base64.b64decode(replay_plots(_result(tmp_path / "again", losses, probe))["replay: domain gain vs general loss"])
    assert png.startswith(b"\x89PNG")


def test_no_replay_plot_without_cpt_stages_or_two_perplexity_tasks(tmp_path):
    losses = {"base": (3.0, 2.0), "lora": (2.0, 2.5)}
    result = _result(tmp_path, losses, {"base": {}})
    result.candidates = [CandidateResult(c.name, c.model, c.adapter, c.strategy, c.tasks[:1], stage=c.stage) for c in result.candidates]
    assert replay_plots(result) == {}


def test_cpt_with_lora_can_train_the_embeddings_too(tmp_path, tiny_model_dir):
    """`modules_to_save: [embed_tokens]` makes the (tied) embedding matrix trainable beside the LoRA weights."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    docs = _texts(tmp_path / "docs.jsonl", [f"Zephyr sensors {i} report humidity. " * 8 for i in range(6)])
    recipe = {
        "name": "emb", "model": str(tiny_model_dir), "output_dir": str(tmp_path / "runs"),
        "stages": [{"objective": "cpt", "data": str(docs), "adapter": {"type": "lora", "r": 4, "modules_to_save": ["embed_tokens"]},
                    "train": {"max_steps": 1, "lr": 1e-2, "batch_tokens": 256, "max_length": 64, "val_fraction": 0}}],
    }
    path = tmp_path / "emb.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = stage_output(run_recipe(load_recipe(path), show_progress=False), "cpt")
    saved = load_file(str(out.adapter / "adapter_model.safetensors"))
    embedding = next(v for k, v in saved.items() if "embed_tokens" in k)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).model.embed_tokens.weight
    assert embedding.shape == base.shape and not torch.equal(embedding, base.detach())
