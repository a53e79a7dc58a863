"""Reward model training: a scalar score per (prompt, reply), learnt from preference pairs.

The model is the stage's base (with its adapter) plus a linear head on the final hidden state
of the reply's last token (`attune.align.reward_model`). The loss is the Bradley-Terry pairwise
loss, -log sigma(r_chosen - r_rejected - margin) (Ouyang et al. 2022; the optional margin of
Llama 2), with optional reward centring. Logged: `reward_accuracy` (share of pairs ranked right;
on the validation split as `eval_reward_accuracy`) and `reward_margin`.

The stage saves its adapter as usual plus `reward_head.safetensors` / `reward_model.json`; PPO
and GRPO name it with `reward_model: <stage or dir>`, and `attune reward score` uses it. A reward
stage does not change the policy: the stage after it starts from the same weights it started from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from attune.align.losses import pairwise_reward_loss
from attune.align.pairs import collate_pairs, eval_means, prepare_pairs, record_eval
from attune.align.reward_model import HEAD_FILE, INFO_FILE, attach_head, save_head, score_positions
from attune.train.config import TrainConfig
from attune.train.logprobs import final_hidden, unwrap

RECORD_KINDS = ("preference",)
PACKABLE = True
CHANGES_POLICY = False
HEAD = "attune_reward_head"


class Options(TrainConfig):
    margin: float = Field(0.0, ge=0, description="required score gap between chosen and rejected (Llama 2's margin)")
    center_coef: float | None = Field(
        None, ge=0, description="weight of mean((r_w + r_l)^2), keeping scores near 0 (Eisenstein 2023 use 0.01)"
    )
    lr: float = Field(1e-4, gt=0, description="peak learning rate (LoRA; the head learns at the same rate)")


def prepare(records: list, tokenizer: Any, options: Options, context: Any) -> list[dict]:
    return prepare_pairs(records, tokenizer, options.max_length, context)


def collate(rows: list[list[dict]], options: Options, pad_id: int) -> dict:
    return collate_pairs(rows, pad_id, packing=options.packing)


def setup(model: nn.Module, context: Any) -> None:
    """Add the scoring head (trainable) before the optimizer is built."""
    attach_head(model, HEAD).requires_grad_(True)


def scores(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen scores (P,), rejected scores (P,)) of the batch's pairs."""
    hidden = final_hidden(model, batch["input_ids"], batch.get("attention_mask"), batch["position_ids"])
    s = score_positions(getattr(unwrap(model), HEAD), hidden, batch["last"].to(hidden.device))
    return s[0::2], s[1::2]


def loss(model: nn.Module, batch: dict, context: Any) -> tuple[torch.Tensor, dict[str, float]]:
    opts = context.options
    chosen, rejected = scores(model, batch)
    margin = torch.full_like(chosen, opts.margin) if opts.margin else None
    value = pairwise_reward_loss(chosen, rejected, margin, opts.center_coef)
    with torch.no_grad():
        gap = chosen - rejected
        stats = {"reward_accuracy": float((gap > 0).float().sum()), "reward_margin": float(gap.sum())}
    if not model.training:
        record_eval(context, stats, len(gap))
    return value, {k: v / max(len(gap), 1) for k, v in stats.items()}


def evaluate(model: nn.Module, batches: list[dict], context: Any) -> dict[str, float]:
    """Pairwise accuracy and mean margin over the validation pairs just scored."""
    return eval_means(context)


def save(model: nn.Module, out_dir: Path, context: Any) -> None:
    """The head and what `load_reward_model` needs to rebuild the scorer from this stage dir."""
    import json

    save_head(getattr(unwrap(model), HEAD), out_dir / HEAD_FILE)
    (out_dir / INFO_FILE).write_text(json.dumps({"max_length": context.options.max_length}, indent=2))
