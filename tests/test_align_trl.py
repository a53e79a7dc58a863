"""attune's preference losses and gradients equal TRL's on the same tiny model, pairs and reference.

DPO (sigmoid, ipo, hinge) runs through TRL's own `DPOTrainer._compute_loss`; SimPO through TRL's
`CPOTrainer.cpo_loss` on its `get_batch_logps`; the reward loss through `RewardTrainer.compute_loss`
on a `LlamaForSequenceClassification` sharing the reward model's weights. attune's side runs on
packed rows (several pairs per row), TRL's on padded rows: equal results also show the packing
changes nothing.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from align_fixtures import one_thread  # noqa: F401  (autouse)
from attune.data import PreferenceRecord
from attune.train.context import StageContext
from attune.train.objectives import dpo, reward
from conftest import make_tiny_model

TOL = 1e-5


def _records() -> list[PreferenceRecord]:
    prompts = ["My hub is offline.", "I was charged twice for order #40818.", "How do I reset the T7 thermostat?"]
    return [
        PreferenceRecord(
            [{"role": "user", "content": p}],
            f"Thanks for reaching out! Here is what to do about it, step {i}.",
            ["No.", "Read the FAQ before writing to us.", "Hello. Restart it and it will be fine, probably."][i],
            f"prefs.jsonl:{i + 1}",
        )
        for i, p in enumerate(prompts)
    ]


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _assert_same_grads(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys() and ours
    scale = max(float(g.abs().max()) for g in theirs.values())
    assert scale > 0
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=TOL * max(1.0, scale), rtol=0), name


@pytest.fixture(scope="module")
def setting(tokenizer):
    """Policy, a different frozen reference, the pairs as attune examples, and a real TRL DPOTrainer."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    policy, ref = make_tiny_model(tokenizer, seed=3), make_tiny_model(tokenizer, seed=4)
    options = dpo.Options(max_length=256)
    examples = dpo.DPO(StageContext(tokenizer=tokenizer, options=options)).prepare(_records())
    args = DPOConfig(output_dir="/tmp/attune-test-trl-dpo", report_to=[], use_cpu=True, bf16=False, max_length=None)
    dummy = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=dummy, processing_class=tokenizer)
    return SimpleNamespace(policy=policy, ref=ref, examples=examples, trainer=trainer)


def _trl_batch(tokenizer, examples: list[dict]) -> dict:
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    return DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)([{k: ex[k] for k in keys} for ex in examples])


@pytest.mark.parametrize("loss_type,packing", [("sigmoid", True), ("sigmoid", False), ("ipo", True), ("hinge", True)])
def test_dpo_loss_and_gradients_equal_trl(setting, tokenizer, loss_type, packing):
    beta = 0.3
    options = dpo.Options(loss=loss_type, beta=beta, max_length=256, packing=packing, cache_reference=False)
    objective = dpo.DPO(StageContext(tokenizer=tokenizer, options=options))
    objective.context.reference.copy = setting.ref
    rows = [setting.examples[:2], setting.examples[2:]] if packing else [[ex] for ex in setting.examples]
    batch = objective.collate(rows)
    if packing:
        assert batch["input_ids"].shape[0] == 2  # two pairs (four documents) share the first row
    setting.policy.train()
    ours, metrics = objective.loss(setting.policy, batch)
    ours.backward()
    our_grads = _grads(setting.policy)

    trainer = setting.trainer
    trainer.loss_types, trainer.loss_weights, trainer.beta = [loss_type], [1.0], beta
    theirs = trainer._compute_loss(trainer.model, _trl_batch(tokenizer, setting.examples), False)
    theirs.backward()
    assert float(ours) == pytest.approx(float(theirs), abs=TOL, rel=TOL)
    _assert_same_grads(our_grads, _grads(setting.policy))
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert metrics["reward_margin"] == pytest.approx(logged["rewards/margins"], abs=TOL)
    assert metrics["reward_accuracy"] == pytest.approx(logged["rewards/accuracies"], abs=TOL)
    assert metrics["logp_chosen"] == pytest.approx(logged["logps/chosen"], rel=TOL)


def test_simpo_loss_and_gradients_equal_trl_cpo(setting, tokenizer):
    from trl.experimental.cpo import CPOTrainer

    beta, gamma = 2.0, 0.7
    options = dpo.Options(loss="simpo", beta=beta, simpo_gamma=gamma, max_length=256)
    objective = dpo.DPO(StageContext(tokenizer=tokenizer, options=options))
    ours, _ = objective.loss(setting.policy, objective.collate([setting.examples]))
    ours.backward()
    our_grads = _grads(setting.policy)

    padded = _trl_batch(tokenizer, setting.examples)
    labels = padded["input_ids"].masked_fill(padded["completion_mask"] == 0, -100)
    logits = setting.policy(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    avg = CPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    chosen, rejected = avg.chunk(2)
    cpo = SimpleNamespace(alpha=0.0, loss_type="simpo", beta=beta, simpo_gamma=gamma, label_smoothing=0.0,
                          accelerator=SimpleNamespace(device=torch.device("cpu")))
    losses, _, _ = CPOTrainer.cpo_loss(cpo, chosen, rejected)
    losses.mean().backward()
    assert float(ours) == pytest.approx(float(losses.mean()), abs=TOL, rel=TOL)
    _assert_same_grads(our_grads, _grads(setting.policy))


@pytest.mark.parametrize("margin,center", [(0.0, None), (0.5, 0.01)])
def test_reward_loss_and_gradients_equal_trl(tokenizer, margin, center):
    from accelerate import Accelerator
    from transformers import LlamaForSequenceClassification
    from trl.trainer.reward_trainer import RewardTrainer

    lm = make_tiny_model(tokenizer, seed=5)
    options = reward.Options(max_length=256, margin=margin, center_coef=center)
    objective = reward.Reward(StageContext(tokenizer=tokenizer, options=options))
    examples = objective.prepare(_records())
    objective.setup(lm)
    torch.nn.init.normal_(getattr(lm, reward.HEAD).weight, std=0.5)  # a head that tells pairs apart
    lm.train()
    ours, _ = objective.loss(lm, objective.collate([examples]))
    ours.backward()
    our_grads = _grads(lm)

    # TRL scores the last non-pad token; pad with an id no sequence contains (SmolLM2 pads with its end-of-turn)
    pad = len(tokenizer) - 1
    config = lm.config.__class__(**{**lm.config.to_dict(), "pad_token_id": pad, "id2label": {0: "score"}})
    cls = LlamaForSequenceClassification(config)
    cls.model.load_state_dict(lm.model.state_dict())
    cls.model.embed_tokens.padding_idx = lm.model.embed_tokens.padding_idx  # same frozen embedding row as the LM
    cls.score.weight.data.copy_(getattr(lm, reward.HEAD).weight.data)
    cls.train()
    seqs = [ex["prompt_ids"] + ex[side] for side in ("chosen_ids", "rejected_ids") for ex in examples]
    width = max(map(len, seqs))
    inputs = {
        "input_ids": torch.tensor([s + [pad] * (width - len(s)) for s in seqs]),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs]),
    }
    if margin:
        inputs["margin"] = torch.full((len(examples),), margin)
    fake = SimpleNamespace(model=cls, args=SimpleNamespace(center_rewards_coefficient=center), accelerator=Accelerator(cpu=True),
                           _metrics={"train": __import__("collections").defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    theirs = RewardTrainer.compute_loss(fake, cls, inputs)
    theirs.backward()
    assert float(ours) == pytest.approx(float(theirs), abs=TOL, rel=TOL)
    their_grads = _grads(cls)
    their_grads[f"{reward.HEAD}.weight"] = their_grads.pop("score.weight")
    _assert_same_grads(our_grads, their_grads)
