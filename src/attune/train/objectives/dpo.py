"""Direct preference optimisation (DPO) and its variants: IPO, SLiC hinge, and reference-free SimPO.

The policy learns from (prompt, chosen, rejected) pairs without a reward model: the loss in
`attune.align.losses` compares the policy's log-probs of both replies with the reference's.
The reference is the frozen starting model: with a PEFT adapter, the same model with the
adapter disabled (no second copy in memory); otherwise a frozen copy. Because it never changes,
each pair's reference log-probs are computed once and cached (`cache_reference`), which is the
same as precomputing them before training and saves one forward per pair on every later epoch
and every evaluation. SimPO needs no reference at all.

Logged per step: the loss, `reward_chosen` / `reward_rejected` (beta x log-ratio, or beta x
mean log-prob for SimPO), `reward_margin`, `reward_accuracy` (share of pairs whose chosen reply
gets the higher implicit reward); evaluations add the same on the validation pairs.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from attune.align.losses import REFERENCE_FREE, PairLogps, PreferenceSettings, preference_loss
from attune.align.pairs import collate_pairs, eval_means, per_document_sums, prepare_pairs, record_eval
from attune.train.config import TrainConfig
from attune.train.logprobs import token_logprobs

RECORD_KINDS = ("preference",)
PACKABLE = True


class Options(TrainConfig):
    loss: Literal["sigmoid", "ipo", "hinge", "simpo"] = Field(
        "sigmoid", description="sigmoid: DPO (Rafailov 2023); ipo (Azar 2023); hinge: SLiC (Zhao 2023); simpo (Meng 2024)"
    )
    beta: float = Field(
        0.1, gt=0, description="strength of the preference vs the reference (DPO paper: 0.1; SimPO uses 2-10)"
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="sigmoid/simpo: assumed share of flipped labels (conservative DPO, Mitchell 2023)"
    )
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: target reward margin (the SimPO paper's gamma; TRL's default)")
    cache_reference: bool = Field(True, description="compute each pair's reference log-probs once and reuse them")
    lr: float = Field(5e-5, gt=0, description="peak learning rate (LoRA DPO; full-weight DPO uses ~5e-7)")


def prepare(records: list, tokenizer: Any, options: Options, context: Any) -> list[dict]:
    return prepare_pairs(records, tokenizer, options.max_length, context)


def setup(model: nn.Module, context: Any) -> None:
    """Freeze the reference before training starts (a no-op for PEFT models and for SimPO)."""
    if context.options.loss not in REFERENCE_FREE:
        context.prepare_reference(model)


def collate(rows: list[list[dict]], options: Options, pad_id: int) -> dict:
    return collate_pairs(rows, pad_id, packing=options.packing)


def pair_logps(model: nn.Module, batch: dict, chunk: int) -> PairLogps:
    """Summed reply log-probs of each pair's chosen and rejected documents under `model`."""
    logp = token_logprobs(model, batch["input_ids"], batch.get("attention_mask"), batch["labels"], batch["position_ids"], chunk)
    return PairLogps(*per_document_sums(logp, batch))


def reference_logps(model: nn.Module, batch: dict, context: Any) -> PairLogps:
    """The reference's pair log-probs, from the cache where every pair of the batch is in it."""
    opts = context.options
    cache: dict[int, tuple[float, float]] = context.state.setdefault("reference_cache", {})
    keys = batch["keys"]
    if not (opts.cache_reference and all(k in cache for k in keys)):
        with context.reference(model) as ref:
            logps = pair_logps(ref, batch, opts.loss_chunk_tokens)
        if not opts.cache_reference:
            return logps
        for k, c, r in zip(keys, logps.chosen.tolist(), logps.rejected.tolist()):
            cache[k] = (c, r)
    device = batch["input_ids"].device
    chosen = torch.tensor([cache[k][0] for k in keys], dtype=torch.float32, device=device)
    rejected = torch.tensor([cache[k][1] for k in keys], dtype=torch.float32, device=device)
    return PairLogps(chosen, rejected, torch.zeros_like(chosen), torch.zeros_like(rejected))


def loss(model: nn.Module, batch: dict, context: Any) -> tuple[torch.Tensor, dict[str, float]]:
    opts = context.options
    policy = pair_logps(model, batch, opts.loss_chunk_tokens)
    reference = None if opts.loss in REFERENCE_FREE else reference_logps(model, batch, context)
    settings = PreferenceSettings(beta=opts.beta, label_smoothing=opts.label_smoothing, simpo_gamma=opts.simpo_gamma)
    losses, chosen, rejected = preference_loss(opts.loss, policy, reference, settings)
    stats = {
        "reward_chosen": chosen.sum(),
        "reward_rejected": rejected.sum(),
        "reward_margin": (chosen - rejected).sum(),
        "reward_accuracy": (chosen > rejected).float().sum(),
        "logp_chosen": policy.chosen.detach().sum(),
        "logp_rejected": policy.rejected.detach().sum(),
    }
    if not model.training:  # summed over the whole validation set, averaged by `evaluate`
        record_eval(context, {k: float(v) for k, v in stats.items()}, len(losses))
    n = max(len(losses), 1)
    return losses.mean(), {k: float(v) / n for k, v in stats.items()}


def evaluate(model: nn.Module, batches: list[dict], context: Any) -> dict[str, float]:
    """Pair-weighted means of the reward statistics over the validation batches just scored."""
    return eval_means(context)
