"""GRPO (Shao et al. 2024, DeepSeekMath): PPO without a value function, advantages from a group of samples.

Per batch of prompts (`expand`): each prompt is answered `group_size` times; every reply is
scored (reward model or Python reward functions: exact answers, format checks, house style); a
reply's advantage is its reward minus its group's mean, over the group's std
(`attune.align.rl.group_advantages`). Each of `iterations` passes over the replies, in
minibatches, is one optimizer step of the clipped surrogate plus beta * KL(policy || reference)
(the k3 estimator, per token), averaged over all reply tokens of the minibatch (the token-level
mean of DAPO, Yu et al. 2025, which TRL also uses by default).

With one iteration the policy that sampled is the one being updated, so the old log-probs are
the current ones detached (ratio 1; no extra forward), as in TRL. Groups whose replies all score
the same carry no signal (advantage 0); `zero_std_share` logs how often that happens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from attune.align.rewards import reward_source
from attune.align.rl import clipped_policy_loss, group_advantages, masked_mean, per_token_kl
from attune.align.rollout import Rollout, held_out_reward, prepare_prompts, response_logprobs, sample, shuffled_minibatches
from attune.train.config import TrainConfig
from attune.train.context import StageContext
from attune.train.objective import Batch, Example, Objective, RunningMeans


class Options(TrainConfig):
    reward_function: str | None = Field(None, description="module:function or file.py:function scoring replies (else reward_model)")
    group_size: int = Field(8, gt=1, description="replies sampled per prompt (TRL's num_generations)")
    max_new_tokens: int = Field(48, gt=0, description="longest sampled reply")
    beta: float = Field(0.04, ge=0, description="KL weight (the DeepSeekMath paper's 0.04; 0 skips the reference)")
    clip: float = Field(0.2, gt=0, description="policy ratio clip epsilon")
    iterations: int = Field(1, gt=0, description="optimisation passes over each batch of replies (GRPO's mu)")
    minibatch_size: int | None = Field(None, gt=0, description="replies per optimizer step (default: the whole batch)")
    scale_rewards: bool = Field(True, description="divide by the group std (False: Dr. GRPO, Liu et al. 2025)")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="per-token KL estimate (GRPO uses k3)")
    lr: float = Field(5e-5, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = Field("constant", description="constant: the step count varies with replies")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    val_fraction: float = Field(0.0, ge=0, lt=1, description="held-out prompts: eval_reward of sampled replies (costs rollouts)")
    packing: bool = Field(False, description="rollouts are padded batches, never packed")
    batch_tokens: int = Field(
        4096, gt=0, description="prompts per rollout: as many as fit, each costing group_size x (prompt + max_new_tokens)"
    )


class GRPO(Objective):
    Options = Options
    record_kinds = ("prompt", "preference")
    online = True
    takes_reward = True

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        self.dropped_too_long = 0
        self.eval_sums = RunningMeans()
        self.score: Callable[[Rollout], list[float]] | None = None

    def needs_reference(self) -> bool:
        return self.options.beta > 0

    def prepare(self, records: list) -> list[Example]:
        opts = self.options
        examples, self.dropped_too_long = prepare_prompts(
            records, self.context.tokenizer, opts.max_length, opts.max_new_tokens, opts.group_size
        )
        return examples

    def collate(self, rows: list[list[Example]]) -> Batch:
        examples = [ex for row in rows for ex in row]
        return {"prompts": examples, "num_tokens": sum(ex["num_tokens"] for ex in examples)}

    def setup(self, model: nn.Module) -> None:
        ctx = self.context
        self.score = reward_source(ctx.reward_model, self.options.reward_function, ctx.base_dir, str(ctx.device))

    def expand(self, model: nn.Module, batch: Batch) -> list[Batch]:
        """Sample `group_size` replies per prompt, score them, and return `iterations` passes of minibatches."""
        opts, ctx = self.options, self.context
        assert self.score is not None, "setup() runs first"
        G = opts.group_size
        prompts = [ex for ex in batch["prompts"] for _ in range(G)]  # consecutive groups of one prompt
        rollout = sample(model, ctx.tokenizer, prompts, opts.max_new_tokens, seed=opts.seed + ctx.step)
        rewards = torch.tensor(self.score(rollout), dtype=torch.float32, device=rollout.input_ids.device)
        advantages = group_advantages(rewards, G, scale=opts.scale_rewards)
        everything = torch.arange(len(rewards), device=rewards.device)
        inputs = rollout.select(everything)
        width = inputs["input_ids"].shape[1] - rollout.prompt_width
        mask = rollout.response_mask[:, :width].float()
        with torch.no_grad():
            old_logp = response_logprobs(model, inputs, rollout.prompt_width, opts.loss_chunk_tokens)[0] if opts.iterations > 1 else None
            ref_logp = None
            if opts.beta > 0:
                with ctx.reference(model) as ref:
                    ref_logp = response_logprobs(ref, inputs, rollout.prompt_width, opts.loss_chunk_tokens)[0]
        grouped = rewards.view(-1, G)
        stats = {
            "reward": float(rewards.mean()),
            "reward_std": float(grouped.std(dim=1).mean()),
            "zero_std_share": float((grouped.std(dim=1) == 0).float().mean()),
            "reply_tokens": float(mask.sum(1).mean()),
        }
        size = opts.minibatch_size or len(rewards)
        minibatches = []
        for idx, w, mb in shuffled_minibatches(rollout, mask, size, opts.iterations, opts.seed + ctx.step):
            minibatches.append({
                **mb,
                "advantages": advantages[idx][:, None],
                "old_logp": old_logp[idx, :w] if old_logp is not None else None,
                "ref_logp": ref_logp[idx, :w] if ref_logp is not None else None,
                "rollout": stats,
            })
        return minibatches

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        opts = self.options
        if "prompts" in batch:  # a validation batch of held-out prompts
            assert self.score is not None
            value, scores = held_out_reward(model, batch, self.context.tokenizer, opts.max_new_tokens, opts.seed, self.score)
            self.eval_sums.add({"reward": sum(scores)}, len(scores))
            return value, {}
        logp, _ = response_logprobs(model, batch, batch["prompt_width"], opts.loss_chunk_tokens)
        mask = batch["mask"]
        old = batch["old_logp"] if batch["old_logp"] is not None else logp.detach()
        policy = clipped_policy_loss(logp, old, batch["advantages"], mask, opts.clip)
        total, metrics = policy.loss, {**batch["rollout"], "policy_loss": float(policy.loss.detach()),
                                       "clip_fraction": policy.clip_fraction}
        if batch["ref_logp"] is not None:
            kl = masked_mean(per_token_kl(logp, batch["ref_logp"], opts.kl_estimator), mask)
            total = total + opts.beta * kl
            metrics["kl"] = float(kl.detach())
        return total, metrics

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        """Mean reward of replies sampled for the held-out prompts (logged as eval_reward)."""
        return self.eval_sums.pop()
