"""Recipes: YAML in, validated objects out; every error names the file, line and path."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from attune.recipe import RecipeError, dump_recipe, load_recipe

BAD = """\
name: support-bot
model: builtin:smollm2-135m-instruct
stages:
  - objective: sft
    data: {path: data/tickets.jsonl}
    train: {epochs: 3, lr: -2.0e-4, batch_tokns: 4096}
  - objective: sft
    data: data/x.jsonl
    train:
      max_length: 4
    adaptr: {type: lora}
evalute:
  tasks: [a.yaml]
"""


def test_every_error_is_listed_with_line_and_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).splitlines()[1:] == [
        f"  {path}:6: stages[0].train.lr: must be > 0.0",
        f"  {path}:6: stages[0].train.batch_tokns: unknown key 'batch_tokns' (did you mean 'batch_tokens'?)",
        f"  {path}:10: stages[1].train.max_length: must be > 8",
        f"  {path}:11: stages[1].adaptr: unknown key 'adaptr' (did you mean 'adapter'?)",
        f"  {path}:12: evalute: unknown key 'evalute' (did you mean 'evaluate'?)",
    ]


def test_defaults_are_filled_and_paths_resolve(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: demo\nmodel: builtin:smollm2-135m-instruct\nstages:\n  - {objective: sft, data: d.jsonl}\n")
    recipe = load_recipe(path)
    stage = recipe.stages[0]
    assert stage.name == "sft" and stage.train.lr == 2e-4 and stage.sources[0].path == "d.jsonl"
    assert recipe.path("d.jsonl") == tmp_path / "d.jsonl"
    assert "batch_tokens: 4096" in dump_recipe(recipe)


def test_unknown_objective_and_missing_file_and_bad_compare(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nmodel: m\nstages:\n  - {objective: sfft, data: d.jsonl}\n")
    with pytest.raises(RecipeError, match=r"unknown objective 'sfft' \(did you mean 'sft'\?\)"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    path.write_text("name: x\nmodel: m\nstages:\n  - {objective: sft, data: d.jsonl}\ncompare:\n  - {stage: dpo}\n")
    with pytest.raises(RecipeError, match=r"compare: stage 'dpo' is not a stage of this recipe \['sft'\]"):
        load_recipe(path)


def test_recipe_check_cli_exit_codes(tmp_path):
    from attune.cli import app

    good = tmp_path / "ok.yaml"
    good.write_text("name: demo\nmodel: builtin:smollm2-135m-instruct\n")
    result = CliRunner().invoke(app, ["recipe", "check", str(good)])
    assert result.exit_code == 0 and "name: demo" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    result = CliRunner().invoke(app, ["recipe", "check", str(bad)])
    assert result.exit_code == 1


@pytest.mark.parametrize("stage,message", [
    ({"objective": "sft", "teacher": "m"}, "stages[0]: objective 'sft' takes no `teacher:` (only distill does)"),
    ({"objective": "dpo", "reward_model": "r"}, "stages[0]: objective 'dpo' takes no `reward_model:` (only ppo and grpo do)"),
    ({"objective": "distill"}, "stages[0]: distill needs `teacher: MODEL` (a model reference or an earlier stage)"),
    ({"objective": "grpo"}, "stages[0]: grpo needs exactly one of `reward_model:`"),
    ({"objective": "ppo", "reward_model": "r", "train": {"reward_function": "m:f"}}, "stages[0]: ppo needs exactly one of"),
    ({"objective": "distill", "teacher": "m", "train": {"student_layers": 2}},
     "stages[0]: a 2-layer student is a new model with no base for an adapter; set `adapter: full`"),
])
def test_what_an_objective_takes_is_checked_when_the_recipe_loads(tmp_path, stage, message):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "model": "m", "stages": [{"data": "d.jsonl", **stage}]}))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert f"{path}:" in str(info.value) and message in str(info.value)


def test_a_stage_cannot_start_from_an_adapter_that_cannot_merge(tmp_path):
    from attune.recipe import parse_recipe

    stages = [{"objective": "sft", "data": "d.jsonl", "adapter": {"type": "prefix"}}, {"objective": "sft", "data": "d.jsonl"}]
    with pytest.raises(RecipeError, match="its prefix adapter cannot be merged into the weights"):
        parse_recipe({"name": "r", "model": "m", "stages": stages})
    side_by_side = parse_recipe({"name": "r", "model": "m", "stages": [stages[0], {**stages[1], "start": "base"}]})
    assert side_by_side.stages[1].adapter.type == "lora"  # the default shape, visible in `recipe check`
    assert "type: lora" in dump_recipe(side_by_side)
