"""Supervised fine-tuning: next-token loss on the assistant turns (or completions) only.

Covers task-specific SFT and instruction tuning: chat records are rendered with the model's
chat template and only the supervised turns carry loss (`supervise`), completion records
supervise the completion, text records everything.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from attune.train.batching import pack_rows
from attune.train.config import TrainConfig
from attune.train.logprobs import lm_loss_sum

RECORD_KINDS = ("chat", "completion", "text")
PACKABLE = True


class Options(TrainConfig):
    supervise: Literal["assistant", "all", "last"] = Field(
        "assistant", description="which chat turns carry loss: every assistant turn, all turns, or the last one"
    )


def prepare(records: list, tokenizer: Any, options: Options, context: Any) -> list[dict]:
    """Tokenize records; examples with nothing to learn (all labels masked) are dropped and counted."""
    from attune.data import encode_record

    examples, empty, truncated = [], 0, 0
    for record in records:
        enc = encode_record(tokenizer, record, max_length=options.max_length, supervise=options.supervise)
        truncated += int(enc.truncated)
        if all(label == -100 for label in enc.labels[1:]):
            empty += 1
            continue
        examples.append({"input_ids": enc.input_ids, "labels": enc.labels, "num_tokens": len(enc.input_ids)})
    context.state["dropped_no_labels"] = empty
    context.state["truncated"] = truncated
    return examples


def collate(rows: list[list[dict]], options: Options, pad_id: int) -> dict:
    return pack_rows(rows, pad_id, attention_mask=not options.packing)


def loss(model: torch.nn.Module, batch: dict, context: Any) -> tuple[torch.Tensor, dict[str, float]]:
    total, n = lm_loss_sum(
        model,
        batch["input_ids"],
        batch["labels"],
        attention_mask=batch.get("attention_mask"),
        position_ids=batch["position_ids"],
        chunk=context.options.loss_chunk_tokens,
    )
    return total / max(n, 1), {}
