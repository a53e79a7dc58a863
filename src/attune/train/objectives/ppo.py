"""PPO for language models (Ziegler et al. 2019; Ouyang et al. 2022): sample, score, then several clipped updates.

Per batch of prompts (`expand`, called by the loop):
  1. sample one reply per prompt from the policy (`attune.align.rollout`);
  2. score it with the reward model or a Python reward function (`attune.align.rewards`);
  3. with the policy as it is now, read the reply's log-probs and the value head's values; with the
     reference (the adapter disabled, or a frozen copy) its log-probs;
  4. per-token reward = -kl_coef * KL_t, plus the score on the last token; GAE gives advantages and
     returns; advantages are whitened over the batch; the KL coefficient is fixed or adapted
     towards `kl_target`;
  5. `ppo_epochs` passes over the batch in shuffled minibatches, each one optimizer step of the
     clipped policy loss + vf_coef * clipped value loss.

The value head is a linear head on the policy's own final hidden states, so with a LoRA the
policy, the value function and the reference all share one base model in memory.
Logged: `reward` (mean score), `kl` (mean summed KL to the reference per reply), `kl_coef`,
`reply_tokens`, `policy_loss`, `value_loss`, `clip_fraction`, `approx_kl`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from attune.align.reward_model import attach_head
from attune.align.rewards import reward_source
from attune.align.rl import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    masked_mean,
    masked_whiten,
    per_token_kl,
    token_rewards,
)
from attune.align.rollout import Rollout, held_out_reward, prepare_prompts, response_logprobs, sample, shuffled_minibatches
from attune.train.config import TrainConfig
from attune.train.context import StageContext
from attune.train.logprobs import unwrap
from attune.train.objective import Batch, Example, Objective, RunningMeans

VALUE_HEAD = "attune_value_head"


class Options(TrainConfig):
    reward_function: str | None = Field(None, description="module:function or file.py:function scoring replies (else reward_model)")
    max_new_tokens: int = Field(48, gt=0, description="longest sampled reply")
    ppo_epochs: int = Field(4, gt=0, description="passes over each rollout batch (Schulman et al. 2017 use 3-10)")
    minibatch_size: int = Field(8, gt=0, description="replies per optimizer step")
    clip: float = Field(0.2, gt=0, description="policy ratio clip epsilon (PPO paper)")
    value_clip: float = Field(0.2, gt=0, description="value clip around the rollout's values")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss (TRL's default)")
    gamma: float = Field(1.0, gt=0, le=1, description="discount (1: the episode is one reply)")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda (Ziegler et al. 2019)")
    kl_coef: float = Field(0.05, ge=0, description="initial (or fixed) weight of the per-token KL penalty")
    kl_control: Literal["fixed", "adaptive"] = Field("fixed", description="adaptive: steer KL towards kl_target")
    kl_target: float = Field(6.0, gt=0, description="adaptive: target KL per reply (Ziegler et al. 2019)")
    kl_horizon: int = Field(10000, gt=0, description="adaptive: controller horizon in replies")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="per-token KL estimate in the reward")
    whiten_rewards: bool = Field(False, description="whiten scores over the batch before adding the KL penalty")
    lr: float = Field(5e-5, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = Field("constant", description="constant: the step count varies with replies")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    val_fraction: float = Field(0.0, ge=0, lt=1, description="held-out prompts: eval_reward of sampled replies (costs rollouts)")
    packing: bool = Field(False, description="rollouts are padded batches, never packed")
    batch_tokens: int = Field(2048, gt=0, description="prompts per rollout: as many as fit, counting prompt + max_new_tokens each")


class PPO(Objective):
    Options = Options
    record_kinds = ("prompt", "preference")
    online = True
    takes_reward = True

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        self.dropped_too_long = 0
        self.eval_sums = RunningMeans()
        self.score: Callable[[Rollout], list[float]] | None = None
        self.kl_ctl: AdaptiveKLController | FixedKLController | None = None

    def needs_reference(self) -> bool:
        return True

    def prepare(self, records: list) -> list[Example]:
        opts = self.options
        examples, self.dropped_too_long = prepare_prompts(records, self.context.tokenizer, opts.max_length, opts.max_new_tokens, 1)
        return examples

    def collate(self, rows: list[list[Example]]) -> Batch:
        examples = [ex for row in rows for ex in row]
        return {"prompts": examples, "num_tokens": sum(ex["num_tokens"] for ex in examples)}

    def setup(self, model: nn.Module) -> None:
        """Value head (trainable), reward source and KL controller."""
        opts, ctx = self.options, self.context
        attach_head(model, VALUE_HEAD).requires_grad_(True)
        self.score = reward_source(ctx.reward_model, opts.reward_function, ctx.base_dir, str(ctx.device))
        self.kl_ctl = (
            AdaptiveKLController(opts.kl_coef, opts.kl_target, opts.kl_horizon)
            if opts.kl_control == "adaptive" else FixedKLController(opts.kl_coef)
        )

    def expand(self, model: nn.Module, batch: Batch) -> list[Batch]:
        """Roll out the batch's prompts and return its PPO minibatches, `ppo_epochs` passes of them."""
        opts, ctx, ctl = self.options, self.context, self.kl_ctl
        assert self.score is not None and ctl is not None, "setup() runs first"
        rollout = sample(model, ctx.tokenizer, batch["prompts"], opts.max_new_tokens, seed=opts.seed + ctx.step)
        scores = torch.tensor(self.score(rollout), dtype=torch.float32, device=rollout.input_ids.device)
        head = getattr(unwrap(model), VALUE_HEAD)
        everything = torch.arange(len(scores), device=scores.device)
        inputs = rollout.select(everything)
        with torch.no_grad():
            old_logp, old_values = response_logprobs(model, inputs, rollout.prompt_width, opts.loss_chunk_tokens, head)
            with ctx.reference(model) as ref:
                ref_logp, _ = response_logprobs(ref, inputs, rollout.prompt_width, opts.loss_chunk_tokens)
        mask = rollout.response_mask[:, : old_logp.shape[1]].float()
        kl = per_token_kl(old_logp, ref_logp, opts.kl_estimator) * mask
        shaped = masked_whiten(scores, torch.ones_like(scores), shift_mean=False) if opts.whiten_rewards else scores
        rewards = token_rewards(shaped, kl, mask, ctl.value)
        assert old_values is not None
        advantages, returns = gae(rewards, old_values, mask, opts.gamma, opts.lam)
        advantages = masked_whiten(advantages, mask)
        seq_kl = float(kl.sum(1).mean())
        stats = {
            "reward": float(scores.mean()),
            "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
            "kl": seq_kl,
            "kl_coef": ctl.value,
            "reply_tokens": float(mask.sum(1).mean()),
        }
        ctl.update(seq_kl, len(scores))
        minibatches = []
        for idx, width, mb in shuffled_minibatches(rollout, mask, opts.minibatch_size, opts.ppo_epochs, opts.seed + ctx.step):
            minibatches.append({
                **mb,
                "old_logp": old_logp[idx, :width],
                "old_values": old_values[idx, :width],
                "advantages": advantages[idx, :width],
                "returns": returns[idx, :width],
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
        head = getattr(unwrap(model), VALUE_HEAD)
        logp, values = response_logprobs(model, batch, batch["prompt_width"], opts.loss_chunk_tokens, head)
        assert values is not None
        mask = batch["mask"]
        policy = clipped_policy_loss(logp, batch["old_logp"], batch["advantages"], mask, opts.clip)
        value_loss, value_clipped = clipped_value_loss(values, batch["old_values"], batch["returns"], mask, opts.value_clip)
        total = policy.loss + opts.vf_coef * value_loss
        return total, {
            **batch["rollout"],
            "policy_loss": float(policy.loss.detach()),
            "value_loss": float(value_loss.detach()),
            "clip_fraction": policy.clip_fraction,
            "value_clip_fraction": value_clipped,
            "approx_kl": policy.approx_kl,
            "entropy_proxy": float(-masked_mean(logp.detach(), mask)),
        }

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        """Mean reward of replies sampled for the held-out prompts (logged as eval_reward)."""
        return self.eval_sums.pop()

    def save(self, model: nn.Module, out_dir: Path) -> None:
        """The value head beside the adapter (to resume PPO from this stage; serving needs only the adapter)."""
        import json

        from attune.align.reward_model import save_head

        assert self.kl_ctl is not None
        save_head(getattr(unwrap(model), VALUE_HEAD), out_dir / "value_head.safetensors")
        (out_dir / "ppo.json").write_text(json.dumps({"final_kl_coef": self.kl_ctl.value}, indent=2))
