"""Continued (domain-adaptive) pretraining: next-token loss on raw text.

Documents are tokenized with EOS appended and cut into `max_length` blocks (a long document
becomes several blocks rather than being truncated); blocks are packed into rows with the same
restarting position ids as SFT, so no token attends across a document boundary. Replay of general
text against forgetting is mixed in by the pipeline (`replay: {path, ratio}`).

With `streaming: true` nothing is loaded up front: documents are read, mixed with the replay
set, tokenized and packed while training (`attune.train.stage_data.stream_stage`), so a corpus
larger than memory trains in the memory of one packing window (`attune.train.batching.StreamPlan`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from pydantic import Field

from attune.errors import AttuneError
from attune.train.batching import pack_rows
from attune.train.config import TrainConfig
from attune.train.objective import Batch, Example, Objective
from attune.train.objectives.sft import lm_mean_loss


class Options(TrainConfig):
    min_block: int = Field(16, gt=1, description="drop document tails shorter than this many tokens")
    streaming: bool = Field(
        False, description="read and tokenize the corpus while training instead of loading it (corpora larger than memory)"
    )
    stream_val_docs: int = Field(
        16, ge=0, description="streaming without `validation:`: hold out the first N documents of the first dataset"
    )


class CPT(Objective):
    Options = Options
    record_kinds = ("text",)
    packable = True
    streams = True

    def iter_examples(self, records: Iterable) -> Iterator[Example]:
        """Each document + EOS cut into `max_length` blocks; tails shorter than `min_block` are dropped."""
        from attune.data import encode_text

        opts = self.options
        for record in records:
            if record.kind != "text":
                raise AttuneError(f"{record.source}: cpt trains on raw text, got a {record.kind} record")
            ids = encode_text(self.context.tokenizer, record.text, max_length=10**12).input_ids
            for start in range(0, len(ids), opts.max_length):
                block = ids[start : start + opts.max_length]
                if len(block) >= opts.min_block:
                    yield {"input_ids": block, "labels": block, "num_tokens": len(block)}

    def prepare(self, records: list) -> list[Example]:
        return list(self.iter_examples(records))

    def collate(self, rows: list[list[Example]]) -> Batch:
        return pack_rows(rows, self.context.tokenizer.pad_token_id, attention_mask=not self.options.packing)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return lm_mean_loss(model, batch, self.options.loss_chunk_tokens), {}
