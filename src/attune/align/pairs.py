"""Preference pairs as training examples and micro-batches (shared by the `reward` and `dpo` objectives).

A pair becomes two documents, prompt + chosen and prompt + rejected. With packing (the default)
documents of several pairs share a row, position ids restart per document and attention stays
inside each one (`attune.train.attention`), so no compute goes to padding; without packing each
document is its own padded row with an attention mask. Either way the batch carries, per
document, its pair index and side, so per-document sums come back as (pairs,) tensors.
"""

from __future__ import annotations

from typing import Any

import torch

from attune.errors import AttuneError

IGNORE = -100


def prepare_pairs(records: list, tokenizer: Any, max_length: int) -> tuple[list[dict], int]:
    """(examples, pairs dropped): tokenize preference records; pairs that do not fit `max_length` are dropped.

    A pair whose prompt must be cut to fit would train on a reply to a prompt the model never
    saw, so it is dropped rather than truncated (`attune data check` lists the same records).
    """
    from attune.data import encode_preference

    examples, dropped = [], 0
    for record in records:
        enc = encode_preference(tokenizer, record, max_length=max_length)
        if enc.truncated or not enc.chosen_ids or not enc.rejected_ids:
            dropped += 1
            continue
        p, c, r = enc.prompt_ids, enc.chosen_ids, enc.rejected_ids
        examples.append({
            "prompt_ids": p,
            "chosen_ids": c,
            "rejected_ids": r,
            "num_tokens": 2 * len(p) + len(c) + len(r),
            "key": hash((tuple(p), tuple(c), tuple(r))),
        })
    if dropped:
        from rich.console import Console

        Console(stderr=True).print(f"[yellow]{dropped} preference pair(s) longer than max_length {max_length} dropped[/yellow]")
    if records and not examples:
        raise AttuneError(f"every preference pair is longer than max_length {max_length}; raise train.max_length")
    return examples, dropped


def _documents(pairs: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) of each pair's chosen then rejected document; labels only on the reply."""
    docs = []
    for ex in pairs:
        p = ex["prompt_ids"]
        for side in ("chosen_ids", "rejected_ids"):
            docs.append((p + ex[side], [IGNORE] * len(p) + ex[side]))
    return docs


def collate_pairs(rows: list[list[dict]], pad_id: int, packing: bool) -> dict:
    """One micro-batch of pairs: (R, T) ids/labels/positions, each document's index, and its last position.

    `doc` (R, T) holds 2 * pair + side (0 chosen, 1 rejected) on real tokens and -1 on padding;
    `last` (2P,) is the flat index of each document's final token (the reward model scores it).
    """
    pairs = [ex for row in rows for ex in row]
    if packing:
        layout, i = [], 0
        for row in rows:
            layout.append([d for k in range(i, i + len(row)) for d in (2 * k, 2 * k + 1)])
            i += len(row)
    else:
        layout = [[d] for d in range(2 * len(pairs))]
    docs = _documents(pairs)
    width = max(sum(len(docs[d][0]) for d in row) for row in layout)
    ids = torch.full((len(layout), width), pad_id, dtype=torch.long)
    labels = torch.full((len(layout), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(layout), width), dtype=torch.long)
    doc_index = torch.full((len(layout), width), -1, dtype=torch.long)
    last = torch.zeros(len(docs), dtype=torch.long)
    for r, row in enumerate(layout):
        at = 0
        for d in row:
            d_ids, d_labels = docs[d]
            n = len(d_ids)
            ids[r, at : at + n] = torch.tensor(d_ids)
            labels[r, at : at + n] = torch.tensor(d_labels)
            positions[r, at : at + n] = torch.arange(n)
            doc_index[r, at : at + n] = d
            last[d] = r * width + at + n - 1
            at += n
        positions[r, at:] = torch.arange(width - at)
    batch = {
        "input_ids": ids,
        "labels": labels,
        "position_ids": positions,
        "doc": doc_index,
        "last": last,
        "keys": [ex["key"] for ex in pairs],
        "num_pairs": len(pairs),
        "num_tokens": int((doc_index >= 0).sum()),
        # the loop weights micro-batches by this; preference losses are means over pairs
        "num_loss_tokens": len(pairs),
    }
    if not packing:
        batch["attention_mask"] = (doc_index >= 0).long()
    return batch


def per_document_sums(values: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum a (R, T) per-token tensor over each document's labelled tokens.

    Returns (chosen sums (P,), rejected sums (P,), chosen token counts (P,), rejected token counts (P,)).
    """
    n_docs = 2 * batch["num_pairs"]
    doc = batch["doc"].reshape(-1)
    labelled = (batch["labels"].reshape(-1) != IGNORE) & (doc >= 0)
    index = doc[labelled]
    sums = values.reshape(-1)[labelled].new_zeros(n_docs).index_add(0, index, values.reshape(-1)[labelled])
    counts = torch.zeros(n_docs, dtype=torch.long, device=index.device).index_add(0, index, torch.ones_like(index))
    return sums[0::2], sums[1::2], counts[0::2], counts[1::2]
