"""Continued (domain-adaptive) pretraining: next-token loss on raw text.

Documents are tokenized with EOS appended and cut into `max_length` blocks (a long document
becomes several blocks rather than being truncated); blocks are packed into rows with the same
restarting position ids as SFT, so no token attends across a document boundary. Replay of general
text against forgetting is mixed in by the pipeline (`replay: {path, ratio}`).

With `streaming: true` nothing is loaded up front: documents are read, mixed with the replay
set, tokenized and packed while training (`stream`), so a corpus larger than memory trains in
the memory of one packing window (see `attune.train.batching.StreamPlan`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from pydantic import Field

from attune.errors import AttuneError
from attune.train.batching import ExampleStream, pack_rows
from attune.train.config import TrainConfig
from attune.train.logprobs import lm_loss_sum

RECORD_KINDS = ("text",)
PACKABLE = True


class Options(TrainConfig):
    min_block: int = Field(16, gt=1, description="drop document tails shorter than this many tokens")
    streaming: bool = Field(
        False, description="read and tokenize the corpus while training instead of loading it (corpora larger than memory)"
    )
    stream_val_docs: int = Field(
        16, ge=0, description="streaming without `validation:`: hold out the first N documents of the first dataset"
    )


def iter_blocks(records: Iterable, tokenizer: Any, options: Options) -> Iterator[dict]:
    """Each document + EOS cut into `max_length` blocks; tails shorter than `min_block` are dropped."""
    from attune.data import encode_text

    for record in records:
        if record.kind != "text":
            raise AttuneError(f"{record.source}: cpt trains on raw text, got a {record.kind} record")
        ids = encode_text(tokenizer, record.text, max_length=10**12).input_ids
        for start in range(0, len(ids), options.max_length):
            block = ids[start : start + options.max_length]
            if len(block) >= options.min_block:
                yield {"input_ids": block, "labels": block, "num_tokens": len(block)}


def prepare(records: list, tokenizer: Any, options: Options, context: Any) -> list[dict]:
    return list(iter_blocks(records, tokenizer, options))


def stream(recipe: Any, stage: Any, tokenizer: Any, context: Any) -> tuple[ExampleStream, list[dict]]:
    """(a stream of training blocks, validation blocks): the stage's data and replay, never loaded whole.

    Sources are interleaved by weight (`attune.data.stream.interleave`); the replay set takes a
    share `replay.ratio` of the documents and is cycled; each pass reshuffles the draw order.
    """
    from attune.data import iter_records, load_records
    from attune.data.stream import StreamSource, interleave
    from attune.recipe import DataSource

    options: Options = stage.train
    if not stage.sources:
        raise AttuneError(f"stage {stage.name!r}: no data (add `data: {{path: ...}}`)")
    if stage.mixing.strategy == "temperature":
        raise AttuneError(
            f"stage {stage.name!r}: temperature mixing needs every dataset's size, which a stream does not know; "
            "use `mixing: {strategy: weights}` with streaming"
        )
    base = recipe.base_dir
    skip = [0] * len(stage.sources)
    if stage.validation is not None:
        val_records = load_records(stage.validation, base_dir=base)
    elif options.val_fraction > 0 and options.stream_val_docs > 0:
        val_records = list(itertools.islice(iter_records(stage.sources[0], base_dir=base), options.stream_val_docs))
        skip[0] = len(val_records)
    else:
        val_records = []
    total = sum(s.weight for s in stage.sources)
    share = 1.0 - (stage.replay.ratio if stage.replay else 0.0)

    def opener(src: DataSource, n_skip: int):
        return lambda: itertools.islice(iter_records(src, base_dir=base), n_skip, None)

    sources = [
        StreamSource(src.path, opener(src, n), weight=share * src.weight / total) for src, n in zip(stage.sources, skip)
    ]
    if stage.replay is not None:
        replay = DataSource(path=stage.replay.path, format="text")
        sources.append(StreamSource("replay", opener(replay, 0), weight=stage.replay.ratio, ends_pass=False))

    def open_pass(epoch: int) -> Iterator[dict]:
        return iter_blocks(interleave(sources, seed=options.seed * 7919 + epoch), tokenizer, options)

    return ExampleStream(open_pass), list(iter_blocks(val_records, tokenizer, options))


def collate(rows: list[list[dict]], options: Options, pad_id: int) -> dict:
    return pack_rows(rows, pad_id, attention_mask=not options.packing)


def loss(model: torch.nn.Module, batch: dict, context: Any) -> tuple[torch.Tensor, dict[str, float]]:
    total, n = lm_loss_sum(
        model, batch["input_ids"], batch["labels"], attention_mask=batch.get("attention_mask"),
        position_ids=batch["position_ids"], chunk=context.options.loss_chunk_tokens,
    )
    return total / max(n, 1), {}
