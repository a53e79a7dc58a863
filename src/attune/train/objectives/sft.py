"""Supervised fine-tuning: next-token loss on the assistant turns (or completions) only.

Covers task-specific SFT and instruction tuning: chat records are rendered with the model's
chat template and only the supervised turns carry loss (`supervise`), completion records
supervise the completion, text records everything.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from attune.train.batching import pack_rows
from attune.train.config import TrainConfig
from attune.train.logprobs import lm_loss_sum
from attune.train.objective import Batch, Example, Objective


class Options(TrainConfig):
    supervise: Literal["assistant", "all", "last"] = Field(
        "assistant", description="which chat turns carry loss: every assistant turn, all turns, or the last one"
    )


class SFT(Objective):
    Options = Options
    record_kinds = ("chat", "completion", "text")
    packable = True

    dropped_no_labels = 0
    truncated = 0

    def prepare(self, records: list) -> list[Example]:
        """Tokenize records; examples with nothing to learn (all labels masked) are dropped and counted."""
        from attune.data import encode_record

        examples = []
        for record in records:
            enc = encode_record(self.context.tokenizer, record, max_length=self.options.max_length, supervise=self.options.supervise)
            self.truncated += int(enc.truncated)
            if all(label == -100 for label in enc.labels[1:]):
                self.dropped_no_labels += 1
                continue
            examples.append({"input_ids": enc.input_ids, "labels": enc.labels, "num_tokens": len(enc.input_ids)})
        return examples

    def collate(self, rows: list[list[Example]]) -> Batch:
        return pack_rows(rows, self.context.tokenizer.pad_token_id, attention_mask=not self.options.packing)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return lm_mean_loss(model, batch, self.options.loss_chunk_tokens), {}


def lm_mean_loss(model: torch.nn.Module, batch: Batch, chunk: int) -> torch.Tensor:
    """Mean next-token loss over the batch's labelled tokens (SFT, continued pretraining, sequence-level KD)."""
    total, n = lm_loss_sum(
        model, batch["input_ids"], batch["labels"], attention_mask=batch.get("attention_mask"),
        position_ids=batch.get("position_ids"), chunk=chunk,
    )
    return total / max(n, 1)
