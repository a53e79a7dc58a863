"""Sequence-level distillation: the teacher cache, a recipe run twice, and the truncated student."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from attune.distill import cache_key, teacher_responses, truncate_layers
from attune.errors import AttuneError
from attune.models.generation import GenerationParams
from attune.recipe import load_recipe
from attune.runs import stage_output
from attune.train.pipeline import run_recipe


class CountingTeacher:
    """A fake generator that answers deterministically and counts every prompt it is sent."""

    name = "fake-teacher"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts, params):
        self.calls += len(prompts)
        return [f"answer to {p[-1]['content']}" for p in prompts]


PROMPTS = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]


def test_second_run_reuses_the_cache_without_teacher_calls(tmp_path):
    params = GenerationParams(max_new_tokens=16)
    cache = tmp_path / "cache.jsonl"
    first = CountingTeacher()
    answers, asked = teacher_responses(first, "fake", PROMPTS, params, cache, batch_size=2)
    assert (first.calls, asked) == (5, 5)
    assert answers[3] == "answer to question 3"
    second = CountingTeacher()
    again, asked = teacher_responses(second, "fake", PROMPTS + PROMPTS[:1], params, cache)
    assert (second.calls, asked) == (0, 0)
    assert again == answers + answers[:1]
    # the teacher factory is not even called when everything is cached
    _, asked = teacher_responses(lambda: pytest.fail("teacher loaded"), "fake", PROMPTS, params, cache)
    assert asked == 0


def test_cache_is_keyed_by_teacher_prompt_and_params(tmp_path):
    params = GenerationParams(max_new_tokens=16)
    keys = {
        cache_key("a", PROMPTS[0], params),
        cache_key("b", PROMPTS[0], params),
        cache_key("a", PROMPTS[1], params),
        cache_key("a", PROMPTS[0], GenerationParams(max_new_tokens=17)),
    }
    assert len(keys) == 4
    cache = tmp_path / "cache.jsonl"
    teacher_responses(CountingTeacher(), "a", PROMPTS[:2], params, cache)
    changed = CountingTeacher()
    teacher_responses(changed, "a", PROMPTS[:3], GenerationParams(max_new_tokens=8), cache)
    assert changed.calls == 3


def test_a_corrupt_cache_line_names_the_file_and_line(tmp_path):
    cache = tmp_path / "cache.jsonl"
    cache.write_text('{"key": "k", "response": "r"}\n{"oops"\n')
    with pytest.raises(AttuneError) as err:
        teacher_responses(CountingTeacher(), "a", PROMPTS, GenerationParams(), cache)
    assert str(err.value).startswith(f"{cache}:2: not a teacher-cache line (")
    assert str(err.value).endswith("); delete the file to regenerate")


def _distill_recipe(tmp_path, model_dir, loss: str) -> str:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name a colour for item {i}."}) + "\n" for i in range(12)))
    recipe = {
        "name": "distil",
        "model": str(model_dir),
        "output_dir": str(tmp_path / "runs"),
        "stages": [{
            "objective": "distill",
            "teacher": str(model_dir),
            "data": {"path": str(prompts)},
            "adapter": {"type": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
            "train": {"loss": loss, "max_new_tokens": 6, "max_steps": 2, "batch_tokens": 256, "max_length": 64,
                      "warmup_ratio": 0.0, "val_fraction": 0.2},
        }],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.mark.parametrize("loss", ["sequence", "logit"])
def test_distill_recipe_trains_and_a_second_run_asks_the_teacher_nothing(tmp_path, tiny_model_dir, loss):
    recipe = load_recipe(_distill_recipe(tmp_path, tiny_model_dir, loss))
    first = json.loads((stage_output(run_recipe(recipe, show_progress=False), "distill").dir / "distill.json").read_text())
    assert first["teacher_calls"] == 12
    second_run = run_recipe(recipe, show_progress=False)
    second = json.loads((stage_output(second_run, "distill").dir / "distill.json").read_text())
    assert second["teacher_calls"] == 0
    assert second["cache"] == str(tmp_path / "runs" / "distil" / "teacher-cache.jsonl")
    rows = [json.loads(line) for line in (stage_output(second_run, "distill").dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and "eval_loss" in rows[-1]
    if loss == "logit":
        assert "kd_loss" in rows[-1]


def test_distill_without_a_teacher_fails_when_the_recipe_loads(tmp_path, tiny_model_dir):
    path = _distill_recipe(tmp_path, tiny_model_dir, "sequence")
    data = yaml.safe_load(open(path))
    del data["stages"][0]["teacher"]
    open(path, "w").write(yaml.safe_dump(data))
    with pytest.raises(AttuneError) as err:
        load_recipe(path)  # before any model loads
    assert f"{path}:" in str(err.value)
    assert "stages[0]: distill needs `teacher: MODEL` (a model reference or an earlier stage)" in str(err.value)


def test_truncate_layers_keeps_spread_layers_and_still_generates(tokenizer):
    from conftest import make_tiny_model

    model = make_tiny_model(tokenizer, layers=4)
    student = truncate_layers(model, 2)
    assert student.config.num_hidden_layers == 2 and len(model.model.layers) == 4
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, model.model.layers[3].mlp.up_proj.weight)
    ids = torch.tensor([[1, 2, 3]])
    assert student.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 6)
    with pytest.raises(AttuneError) as err:
        truncate_layers(model, 5)
    assert str(err.value) == "truncate_layers: n must be between 1 and 4 (the model's layer count), got 5"


def test_random_student_has_the_shape_but_not_the_weights(tokenizer):
    from attune.distill import random_student
    from conftest import make_tiny_model

    model = make_tiny_model(tokenizer, layers=4)
    student = random_student(model, 2)
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert student.model.embed_tokens.weight.shape == model.model.embed_tokens.weight.shape
    assert not torch.equal(student.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)


def test_a_stage_teacher_labels_chat_prompts_for_a_truncated_student(tmp_path, tokenizer):
    """sft (the teacher) -> distill from that stage into a 1-layer student; chat labels replaced by teacher answers."""
    from conftest import make_tiny_model

    model_dir = tmp_path / "tiny4"
    make_tiny_model(tokenizer, layers=4).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Colour of item {i}?"}, {"role": "assistant", "content": "gold label"}]}) + "\n"
        for i in range(10)))
    stage_train = {"max_steps": 2, "batch_tokens": 256, "max_length": 64, "warmup_ratio": 0.0, "val_fraction": 0.0}
    recipe = {
        "name": "chain", "model": str(model_dir), "output_dir": str(tmp_path / "runs"),
        "stages": [
            {"name": "teacher", "objective": "sft", "data": str(chats), "adapter": {"type": "lora", "r": 4, "targets": "all-linear"},
             "train": stage_train},
            {"name": "student", "objective": "distill", "teacher": "teacher", "data": str(chats), "adapter": "full",
             "train": {**stage_train, "teacher_answers": "all", "student_layers": 1, "max_new_tokens": 4}},
        ],
    }
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = run_recipe(load_recipe(path), show_progress=False)
    out = stage_output(run, "student")
    info = json.loads((out.dir / "distill.json").read_text())
    assert info["teacher"] == str(run / "stages" / "teacher" / "merged") and info["teacher_calls"] == 10
    cached = [json.loads(line) for line in (tmp_path / "runs" / "chain" / "teacher-cache.jsonl").read_text().splitlines()]
    assert len(cached) == 10 and all(row["prompt"][-1]["role"] == "user" for row in cached)  # gold replies were dropped
    assert out.model is not None and json.loads((out.model / "config.json").read_text())["num_hidden_layers"] == 1
    assert out.summary["total_params"] < stage_output(run, "teacher").summary["total_params"]
    # a second run retrains the teacher into a new run dir; same weights, so the cache answers everything
    again = run_recipe(load_recipe(path), show_progress=False)
    assert again != run
    assert json.loads((stage_output(again, "student").dir / "distill.json").read_text())["teacher_calls"] == 0


def test_a_teacher_directory_is_known_by_its_weights_not_its_path(tmp_path):
    from attune.distill.cache import teacher_identity

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"same weights")
        (tmp_path / name / "README.md").write_text(name)  # not part of the identity
    assert teacher_identity(str(tmp_path / "a")) == teacher_identity(str(tmp_path / "b")) != str(tmp_path / "a")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"other weights")
    assert teacher_identity(str(tmp_path / "a")) != teacher_identity(str(tmp_path / "b"))
    assert teacher_identity("builtin:smollm2-135m-instruct") == "builtin:smollm2-135m-instruct"


def test_a_truncated_student_needs_full_weights(tmp_path, tiny_model_dir):
    """Refused when the recipe loads (before any model), naming the file, line, stage and the fix."""
    path = _distill_recipe(tmp_path, tiny_model_dir, "sequence")
    data = yaml.safe_load(open(path))
    data["stages"][0]["train"]["student_layers"] = 1
    open(path, "w").write(yaml.safe_dump(data))
    with pytest.raises(AttuneError) as err:
        load_recipe(path)
    assert f"{path}:" in str(err.value)
    assert "stages[0]: a 1-layer student is a new model with no base for an adapter; set `adapter: full`" in str(err.value)
