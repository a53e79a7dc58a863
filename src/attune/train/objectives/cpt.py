"""Continued (domain-adaptive) pretraining: next-token loss on raw text.

Documents are tokenized with EOS appended and cut into `max_length` blocks (a long document
becomes several blocks rather than being truncated); blocks are packed into rows with the same
restarting position ids as SFT, so no token attends across a document boundary. Replay of general
text against forgetting is mixed in by the pipeline (`replay: {path, ratio}`).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from attune.train.batching import pack_rows
from attune.train.config import TrainConfig
from attune.train.logprobs import lm_loss_sum

RECORD_KINDS = ("text",)
PACKABLE = True


class Options(TrainConfig):
    min_block: int = Field(16, gt=1, description="drop document tails shorter than this many tokens")


def prepare(records: list, tokenizer: Any, options: Options, context: Any) -> list[dict]:
    from attune.data import encode_text

    examples = []
    for record in records:
        ids = encode_text(tokenizer, record.text, max_length=10**9).input_ids
        for start in range(0, len(ids), options.max_length):
            block = ids[start : start + options.max_length]
            if len(block) >= options.min_block:
                examples.append({"input_ids": block, "labels": block, "num_tokens": len(block)})
    return examples


def collate(rows: list[list[dict]], options: Options, pad_id: int) -> dict:
    return pack_rows(rows, pad_id, attention_mask=not options.packing)


def loss(model: torch.nn.Module, batch: dict, context: Any) -> tuple[torch.Tensor, dict[str, float]]:
    total, n = lm_loss_sum(
        model, batch["input_ids"], batch["labels"], attention_mask=batch.get("attention_mask"),
        position_ids=batch["position_ids"], chunk=context.options.loss_chunk_tokens,
    )
    return total / max(n, 1), {}
