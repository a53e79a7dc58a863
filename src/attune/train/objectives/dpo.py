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

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from attune.align.losses import REFERENCE_FREE, PairLogps, PreferenceSettings, preference_loss
from attune.align.pairs import collate_pairs, per_document_sums, prepare_pairs
from attune.train.config import TrainConfig
from attune.train.context import StageContext
from attune.train.logprobs import token_logprobs
from attune.train.objective import Batch, Example, Objective, RunningMeans


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


class DPO(Objective):
    Options = Options
    record_kinds = ("preference",)
    packable = True

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        self.dropped_too_long = 0
        self.reference_cache: dict[int, tuple[float, float]] = {}
        self.eval_sums = RunningMeans()

    def needs_reference(self) -> bool:
        return self.options.loss not in REFERENCE_FREE

    def prepare(self, records: list) -> list[Example]:
        examples, dropped = prepare_pairs(records, self.context.tokenizer, self.options.max_length)
        self.dropped_too_long += dropped
        return examples

    def collate(self, rows: list[list[Example]]) -> Batch:
        return collate_pairs(rows, self.context.tokenizer.pad_token_id, packing=self.options.packing)

    def reference_logps(self, model: nn.Module, batch: Batch) -> PairLogps:
        """The reference's pair log-probs, from the cache where every pair of the batch is in it."""
        opts, cache, keys = self.options, self.reference_cache, batch["keys"]
        if not (opts.cache_reference and all(k in cache for k in keys)):
            with self.context.reference(model) as ref:
                logps = pair_logps(ref, batch, opts.loss_chunk_tokens)
            if not opts.cache_reference:
                return logps
            for k, c, r in zip(keys, logps.chosen.tolist(), logps.rejected.tolist()):
                cache[k] = (c, r)
        device = batch["input_ids"].device
        chosen = torch.tensor([cache[k][0] for k in keys], dtype=torch.float32, device=device)
        rejected = torch.tensor([cache[k][1] for k in keys], dtype=torch.float32, device=device)
        return PairLogps(chosen, rejected, torch.zeros_like(chosen), torch.zeros_like(rejected))

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        opts = self.options
        policy = pair_logps(model, batch, opts.loss_chunk_tokens)
        reference = None if opts.loss in REFERENCE_FREE else self.reference_logps(model, batch)
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
            self.eval_sums.add({k: float(v) for k, v in stats.items()}, len(losses))
        n = max(len(losses), 1)
        return losses.mean(), {k: float(v) / n for k, v in stats.items()}

    def evaluate(self, model: nn.Module, batches: list[Batch]) -> dict[str, float]:
        """Pair-weighted means of the reward statistics over the validation batches just scored."""
        return self.eval_sums.pop()


def pair_logps(model: nn.Module, batch: Batch, chunk: int) -> PairLogps:
    """Summed reply log-probs of each pair's chosen and rejected documents under `model`."""
    logp = token_logprobs(model, batch["input_ids"], batch.get("attention_mask"), batch["labels"], batch["position_ids"], chunk)
    return PairLogps(*per_document_sums(logp, batch))
