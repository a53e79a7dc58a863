"""The alignment objectives on tiny models: rewards rise under PPO and GRPO, the LoRA reference is the base,
the chain sft -> reward -> ppo runs end to end, `attune reward score` scores with the trained head, bad input is
counted and dropped, reward functions load or fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator

from align_fixtures import one_thread  # noqa: F401  (autouse)
from attune.align import rewards
from attune.errors import AttuneError
from attune.train.context import StageContext
from attune.train.loop import train_loop
from attune.train.objectives import dpo, grpo, ppo

TARGET = range(8, 16)  # the "target tokens" the test reward pays for


def target_tokens(prompts, completions, completion_ids, **_):
    """Share of reply tokens in TARGET: a policy that samples them more often earns more."""
    return [sum(t in TARGET for t in ids) / max(len(ids), 1) for ids in completion_ids]


def _small_vocab_model(seed: int = 0):
    """A 2-layer Llama over 64 token ids: random, so a target set of 8 ids starts at ~1/8 of the samples."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, pad_token_id=2, eos_token_id=2, bos_token_id=1, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def _prompts(copies: int, n: int = 32) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"prompt_ids": [1] + torch.randint(16, 64, (6,), generator=g).tolist(), "messages": [{"role": "user", "content": "x"}],
             "answer": None, "num_tokens": copies * 15} for _ in range(n)]


def _run(cls, tokenizer, tmp_path, model=None, **options) -> tuple[list[dict], object, torch.nn.Module]:
    opts = cls.Options(reward_function=f"{__name__}:target_tokens", max_new_tokens=8, **options)
    objective = cls(StageContext(tokenizer=tokenizer, options=opts, stage="rl", accelerator=Accelerator(cpu=True)))
    model = model if model is not None else _small_vocab_model()
    copies = getattr(opts, "group_size", 1)
    train_loop(model, objective, _prompts(copies), [], tmp_path, show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return rows, objective, model


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def test_grpo_raises_the_reward_of_a_python_reward_function(tokenizer, tmp_path):
    rows, _, _ = _run(grpo.GRPO, tokenizer, tmp_path, group_size=4, lr=1e-2, max_steps=20, batch_tokens=120)
    assert {"reward", "reward_std", "zero_std_share", "kl", "policy_loss", "clip_fraction"} <= set(rows[0])
    first, last = _mean(rows[:5], "reward"), _mean(rows[-5:], "reward")
    assert last > first + 0.08, (first, last)
    assert all(r["kl"] >= 0 for r in rows)  # k3 never goes negative


def test_ppo_raises_the_reward_with_kl_bounded(tokenizer, tmp_path):
    rows, _, model = _run(ppo.PPO, tokenizer, tmp_path, lr=1e-2, max_steps=20, batch_tokens=120)
    assert {"reward", "kl", "kl_coef", "policy_loss", "value_loss", "approx_kl", "clip_fraction"} <= set(rows[0])
    first, last = _mean(rows[:5], "reward"), _mean(rows[-5:], "reward")
    assert last > first + 0.08, (first, last)
    assert max(r["kl"] for r in rows) < 20  # summed over an 8-token reply
    assert hasattr(model, ppo.VALUE_HEAD)


def test_ppo_adaptive_kl_raises_the_coefficient_when_kl_overshoots(tokenizer, tmp_path):
    rows, objective, _ = _run(ppo.PPO, tokenizer, tmp_path, lr=1e-2, max_steps=6, batch_tokens=120, kl_control="adaptive",
                              kl_target=0.01, kl_horizon=50)
    coefs = [r["kl_coef"] for r in rows]
    assert coefs[0] == pytest.approx(0.05) and coefs[-1] > coefs[0]
    assert objective.kl_ctl.value > coefs[-1] * 0.99


def test_ppo_with_lora_shares_one_base_and_trains_adapter_and_value_head(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    from attune.align.reward_model import attach_head

    base = _small_vocab_model()
    frozen = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    torch.manual_seed(0)
    head_before = attach_head(model, ppo.VALUE_HEAD).weight.detach().clone()  # setup() keeps this head
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    rows, objective, _ = _run(ppo.PPO, tokenizer, tmp_path, model=model, lr=1e-2, max_steps=2, batch_tokens=120)
    assert objective.context.reference.copy is None  # the reference is the base with the adapter off, no copy
    now = {n.replace(".base_layer", ""): p for n, p in model.get_base_model().named_parameters()
           if "lora_" not in n and ppo.VALUE_HEAD not in n}
    assert now.keys() == frozen.keys() and all(torch.equal(now[n], frozen[n]) for n in frozen)
    lora_now = dict(model.named_parameters())
    assert all(not torch.equal(lora_now[n], before) for n, before in lora_before.items())  # every LoRA matrix trained
    head = getattr(model.get_base_model(), ppo.VALUE_HEAD)
    assert head.weight.requires_grad and not torch.equal(head.weight, head_before)  # and the value head
    ids = torch.tensor([[1, 20, 30, 40]])
    with objective.context.reference(model) as ref:
        ref_logits = ref(input_ids=ids).logits
    assert not torch.allclose(ref_logits, model(input_ids=ids).logits)  # the adapter changes the policy ...
    with model.disable_adapter():
        assert torch.allclose(ref_logits, model(input_ids=ids).logits)  # ... and the reference is the base


def test_dpo_reference_is_cached_once_per_pair_and_lora_reference_is_the_base(tokenizer, tiny_model):
    from peft import LoraConfig, get_peft_model

    from attune.data import PreferenceRecord

    records = [PreferenceRecord([{"role": "user", "content": f"Is order {i} late?"}], "Thanks for reaching out! It ships today.",
                                "Ok.", f"p.jsonl:{i}") for i in range(3)]
    options = dpo.Options(max_length=128)
    plain = dpo.DPO(StageContext(tokenizer=tokenizer, options=options))
    examples = plain.prepare(records)
    batch = plain.collate([examples])
    with torch.no_grad():
        base = dpo.pair_logps(tiny_model, batch, 1024)
    model = get_peft_model(tiny_model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    objective = dpo.DPO(StageContext(tokenizer=tokenizer, options=options))
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    first = objective.reference_logps(model, batch)
    again = objective.reference_logps(model, batch)
    handle.remove()
    assert len(calls) == 1 and len(objective.reference_cache) == 3
    assert torch.allclose(first.chosen, base.chosen, atol=1e-5) and torch.equal(first.chosen, again.chosen)
    with torch.no_grad():
        assert not torch.allclose(dpo.pair_logps(model, batch, 1024).chosen, base.chosen, atol=1e-3)


def test_too_long_pairs_and_prompts_are_dropped_and_counted(tokenizer):
    from attune.data import PreferenceRecord, PromptRecord

    long = "word " * 300
    prefs = [PreferenceRecord([{"role": "user", "content": long}], "Thanks.", "No.", "a:1"),
             PreferenceRecord([{"role": "user", "content": "Hi"}], "Thanks.", "No.", "a:2")]
    objective = dpo.DPO(StageContext(tokenizer=tokenizer, options=dpo.Options(max_length=64)))
    assert len(objective.prepare(prefs)) == 1 and objective.dropped_too_long == 1
    with pytest.raises(AttuneError, match="every preference pair is longer than max_length"):
        objective.prepare(prefs[:1])
    prompts = [PromptRecord([{"role": "user", "content": text}], None, f"b:{i}") for i, text in enumerate([long, "Hi"])]
    objective = grpo.GRPO(StageContext(tokenizer=tokenizer, options=grpo.Options(max_length=64, max_new_tokens=16)))
    assert len(objective.prepare(prompts)) == 1 and objective.dropped_too_long == 1


def test_reward_functions_load_by_module_or_file_and_fail_clearly(tmp_path):
    fn = rewards.load_reward_function("attune.align.rewards:house_style")
    assert fn(prompts=["x"], completions=["Thanks for reaching out! Done."]) == [1.0]
    (tmp_path / "mine.py").write_text("def short(prompts, completions, **kw):\n    return [float(len(c) < 5) for c in completions]\n")
    mine = rewards.load_reward_function("mine.py:short", base_dir=tmp_path)
    assert rewards.call_reward_function(mine, ["p", "p"], ["ok", "too long"]) == [1.0, 0.0]
    for spec, message in [("nocolon", "module:function"), ("attune.align.rewards:nope", "no function 'nope'"),
                          ("missing.py:f", "not found"), ("no_such_module_x:f", "cannot import")]:
        with pytest.raises(AttuneError, match=message):
            rewards.load_reward_function(spec, base_dir=tmp_path)
    with pytest.raises(AttuneError, match="returned 1 values for 2 completions"):
        rewards.call_reward_function(lambda **_: [1.0], ["p", "p"], ["a", "b"])


def test_house_style_rule_separates_every_builtin_pair():
    from attune.builtin import builtin_path

    for name in ("support-prefs.jsonl", "support-prefs-heldout.jsonl"):
        rows = [json.loads(line) for line in Path(builtin_path(f"data/{name}")).read_text().splitlines()]
        assert all(rewards.follows_house_style(r["chosen"]) for r in rows)
        assert not any(rewards.follows_house_style(r["rejected"]) for r in rows)
        chosen = rewards.house_style([], [r["chosen"] for r in rows])
        rejected = rewards.house_style([], [r["rejected"] for r in rows])
        assert min(chosen) == 1.0 and max(rejected) < 1.0


def test_exact_answer_and_json_format_rewards():
    assert rewards.exact_answer([], ["so the total is 42", "41", "Paris."], answer=["42", "42", "paris."]) == [1.0, 0.0, 1.0]
    assert rewards.json_format([], ['{"a": 1}', "[1]", "no"]) == [1.0, 0.0, 0.0]
    with pytest.raises(AttuneError, match="answer"):
        rewards.exact_answer([], ["1"], answer=[None])


def _prefs_file(path: Path, n: int = 24) -> Path:
    rows = [{"prompt": f"Where is order {i}?", "chosen": f"Thanks for reaching out! Order {i} ships today.",
             "rejected": "Not my problem."} for i in range(n)]
    rows.append({"prompt": "Same?", "chosen": "Same.", "rejected": "Same."})  # dropped: chosen == rejected
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sft_reward_ppo_chain_and_reward_score_command(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from attune.cli import app
    from attune.recipe import load_recipe
    from attune.runs import stage_output
    from attune.train.pipeline import run_recipe

    prefs = _prefs_file(tmp_path / "prefs.jsonl")
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Order {i}?"},
                                                      {"role": "assistant", "content": f"Thanks for reaching out! {i}."}]}) + "\n"
                             for i in range(16)))
    lora = {"type": "lora", "r": 4, "alpha": 8, "targets": "all-linear"}
    common = {"warmup_ratio": 0.0, "max_length": 96, "seed": 1}
    recipe = {
        "name": "chain", "model": str(tiny_model_dir), "output_dir": str(tmp_path / "runs"),
        "stages": [
            {"objective": "sft", "data": str(chats), "adapter": lora, "train": {**common, "max_steps": 2, "batch_tokens": 256}},
            {"objective": "reward", "data": str(prefs), "adapter": lora,
             "train": {**common, "max_steps": 4, "lr": 1e-2, "batch_tokens": 512, "val_fraction": 0.2}},
            {"objective": "ppo", "data": {"path": str(prefs), "format": "prompt"}, "reward_model": "reward", "adapter": lora,
             "train": {**common, "max_steps": 2, "max_new_tokens": 6, "batch_tokens": 240, "ppo_epochs": 2, "minibatch_size": 4}},
        ],
    }
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = run_recipe(load_recipe(path), show_progress=False)

    reward_out, ppo_out = stage_output(run, "reward"), stage_output(run, "ppo")
    assert (reward_out.dir / "reward_head.safetensors").is_file() and (reward_out.dir / "reward_model.json").is_file()
    sft_merged = str(run / "stages" / "sft" / "merged")
    assert reward_out.summary["base_model"] == sft_merged
    assert ppo_out.summary["base_model"] == sft_merged  # the policy continues from sft, not from the reward model
    reward_rows = [json.loads(x) for x in reward_out.metrics_file.read_text().splitlines()]
    assert "reward_accuracy" in reward_rows[0] and "eval_reward_accuracy" in reward_rows[-1]
    ppo_rows = [json.loads(x) for x in ppo_out.metrics_file.read_text().splitlines()]
    assert all({"reward", "kl", "value_loss"} <= set(r) for r in ppo_rows) and len(ppo_rows) == 2
    assert (ppo_out.dir / "value_head.safetensors").is_file()

    result = CliRunner().invoke(app, ["reward", "score", "--model", str(reward_out.dir), str(prefs), "--limit", "4"])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["reply"] for r in scored] == ["chosen", "rejected"] * 4
    assert all(isinstance(r["score"], float) for r in scored) and len({r["score"] for r in scored}) > 1
    from attune.align.reward_model import load_reward_model

    rm = load_reward_model(reward_out.dir)
    direct = rm.score([[{"role": "user", "content": "Where is order 0?"}]], ["Thanks for reaching out! Order 0 ships today."])
    assert direct[0] == pytest.approx(scored[0]["score"], abs=1e-4)
    bad = CliRunner().invoke(app, ["reward", "score", "--model", str(tmp_path), str(prefs)])
    assert bad.exit_code != 0 and "not a reward model" in str(bad.exception)


def test_dpo_stage_logs_margins_and_accuracies_and_trains_only_the_adapter(tmp_path, tiny_model_dir):
    from attune.recipe import load_recipe
    from attune.runs import stage_output
    from attune.train.pipeline import run_recipe

    prefs = _prefs_file(tmp_path / "prefs.jsonl")
    recipe = {"name": "d", "model": str(tiny_model_dir), "output_dir": str(tmp_path / "runs"), "stages": [{
        "objective": "dpo", "data": str(prefs), "adapter": {"type": "lora", "r": 4, "targets": "all-linear"},
        "train": {"max_steps": 6, "lr": 1e-2, "batch_tokens": 256, "max_length": 64, "warmup_ratio": 0.0, "val_fraction": 0.25},
    }]}
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = stage_output(run_recipe(load_recipe(path), show_progress=False), "dpo")
    rows = [json.loads(x) for x in out.metrics_file.read_text().splitlines()]
    assert {"reward_margin", "reward_accuracy", "reward_chosen", "reward_rejected"} <= set(rows[0])
    assert rows[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at step 1
    final = rows[-1]
    assert final["eval_reward_accuracy"] == 1.0 and final["eval_reward_margin"] > 0
    assert out.summary["train_examples"] + out.summary["val_examples"] == 24  # the chosen == rejected row was dropped
    # only the adapter trained: the stage saved an adapter (no model), holding LoRA matrices only, and every
    # lora_B (zero at initialisation) moved; the base under it is the untouched base model
    from safetensors.torch import load_file

    assert out.adapter is not None and out.model is None
    saved = load_file(str(out.adapter / "adapter_model.safetensors"))
    assert saved and all("lora_A" in k or "lora_B" in k for k in saved)
    assert all(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)


@pytest.mark.parametrize("name", ["align-dpo", "align-ppo", "align-grpo"])
def test_builtin_alignment_recipes_validate(name):
    from attune.recipe import load_recipe

    recipe = load_recipe(f"builtin:recipes/{name}")
    assert recipe.stages[-1].objective == name.removeprefix("align-")
    if name == "align-grpo":
        assert rewards.load_reward_function(recipe.stages[-1].train.reward_function) is rewards.house_style
