"""Reward model training: a scalar score per (prompt, reply), learnt from preference pairs.

The model is the stage's base (with its adapter) plus a linear head on the final hidden state
of the reply's last token (`attune.align.reward_model`). The loss is the Bradley-Terry pairwise
loss, -log sigma(r_chosen - r_rejected - margin) (Ouyang et al. 2022; the optional margin of
Llama 2), with optional reward centring. Logged: `reward_accuracy` (share of pairs ranked right;
on the validation split as `eval_reward_accuracy`) and `reward_margin`.

The stage saves its adapter as usual plus `reward_head.safetensors` / `reward_model.json`; PPO
and GRPO name it with `reward_model: <stage or dir>`, and `attune reward score` uses it. A reward
stage does not change the policy (`changes_policy = False`): the stage after it starts from the same weights it started from.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from attune.align.losses import pairwise_reward_loss
from attune.align.pairs import collate_pairs, prepare_pairs
from attune.align.reward_model import HEAD_FILE, INFO_FILE, attach_head, save_head, score_positions
from attune.train.config import TrainConfig
from attune.train.context import StageContext
from attune.train.logprobs import final_hidden, unwrap
from attune.train.objective import Batch, Example, Objective, RunningMeans

HEAD = "attune_reward_head"


class Options(TrainConfig):
    margin: float = Field(0.0, ge=0, description="required score gap between chosen and rejected (Llama 2's margin)")
    center_coef: float | None = Field(
        None, ge=0, description="weight of mean((r_w + r_l)^2), keeping scores near 0 (Eisenstein 2023 use 0.01)"
    )
    lr: float = Field(1e-4, gt=0, description="peak learning rate (LoRA; the head learns at the same rate)")


class Reward(Objective):
    Options = Options
    record_kinds = ("preference",)
    packable = True
    changes_policy = False

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        self.dropped_too_long = 0
        self.eval_sums = RunningMeans()

    def prepare(self, records: list) -> list[Example]:
        examples, dropped = prepare_pairs(records, self.context.tokenizer, self.options.max_length)
        self.dropped_too_long += dropped
        return examples

    def collate(self, rows: list[list[Example]]) -> Batch:
        return collate_pairs(rows, self.context.tokenizer.pad_token_id, packing=self.options.packing)

    def setup(self, model: nn.Module) -> None:
        """Add the scoring head (trainable) before the optimizer is built."""
        attach_head(model, HEAD).requires_grad_(True)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        opts = self.options
        chosen, rejected = scores(model, batch)
        margin = torch.full_like(chosen, opts.margin) if opts.margin else None
        value = pairwise_reward_loss(chosen, rejected, margin, opts.center_coef)
        with torch.no_grad():
            gap = chosen - rejected
            stats = {"reward_accuracy": float((gap > 0).float().sum()), "reward_margin": float(gap.sum())}
        if not model.training:
            self.eval_sums.add(stats, len(gap))
        return value, {k: v / max(len(gap), 1) for k, v in stats.items()}

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        """Pairwise accuracy and mean margin over the validation pairs just scored."""
        return self.eval_sums.pop()

    def save(self, model: nn.Module, out_dir: Path) -> None:
        """The head and what `load_reward_model` needs to rebuild the scorer from this stage dir."""
        import json

        save_head(getattr(unwrap(model), HEAD), out_dir / HEAD_FILE)
        (out_dir / INFO_FILE).write_text(json.dumps({"max_length": self.options.max_length}, indent=2))


def scores(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen scores (P,), rejected scores (P,)) of the batch's pairs."""
    hidden = final_hidden(model, batch["input_ids"], batch.get("attention_mask"), batch["position_ids"])
    s = score_positions(getattr(unwrap(model), HEAD), hidden, batch["last"].to(hidden.device))
    return s[0::2], s[1::2]
