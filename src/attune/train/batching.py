"""Token-budget micro-batches with no compute spent on padding.

Packing (default): shuffled windows of examples are packed into rows of at most `max_length`
tokens (first-fit decreasing), and consecutive rows form micro-batches whose computed size
(rows x widest row) stays within `batch_tokens`. Position ids restart at every example; with no 2-D attention mask, transformers
turns restarting position ids into a block-diagonal causal mask, so no example ever attends to
another (tests prove it: a packed batch's loss equals its examples' losses run one by one).

Without packing, examples are grouped by length (shuffled mega-batches sorted by length, as
HF's LengthGroupedSampler does) so each row pads only to a neighbour's length.

Rows are kept near `max_length` rather than one very long row because SDPA computes a dense
(T x T) mask: one 4096-token row would spend most attention FLOPs on masked-out blocks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

IGNORE = -100
Row = list[int]  # indices of the examples packed into one row
MicroBatch = list[Row]


def _first_fit_decreasing(indices: list[int], lengths: Sequence[int], capacity: int) -> list[Row]:
    rows: list[Row] = []
    space: list[int] = []
    for i in sorted(indices, key=lambda j: -lengths[j]):
        for r, free in enumerate(space):
            if lengths[i] <= free:
                rows[r].append(i)
                space[r] -= lengths[i]
                break
        else:
            rows.append([i])
            space.append(capacity - lengths[i])
    return rows


def plan_epoch(
    lengths: Sequence[int], *, batch_tokens: int, max_length: int, packing: bool, seed: int
) -> list[MicroBatch]:
    """Deterministic micro-batches for one epoch (a function of `seed` only, so resume replays it)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if packing:
        rows = _packed_rows(order, lengths, max_length, batch_tokens, rng)
    else:
        rows = [[i] for i in _length_grouped(order, lengths, batch_tokens)]
    batches: list[MicroBatch] = []
    current: MicroBatch = []
    width = 0
    for row in rows:
        row_len = sum(lengths[i] for i in row)
        # cost of a micro-batch = rows x its widest row (what the forward pass really computes)
        if current and (len(current) + 1) * max(width, row_len) > batch_tokens:
            batches.append(current)
            current, width = [], 0
        current.append(row)
        width = max(width, row_len)
    if current:
        batches.append(current)
    if not packing:
        rng.shuffle(batches)  # length-sorted batches must not arrive in length order
    return batches


def _packed_rows(order: list[int], lengths: Sequence[int], max_length: int, batch_tokens: int, rng: random.Random) -> list[Row]:
    """Pack shuffled windows of examples into nearly full rows, then shuffle the rows of each window."""
    window_tokens = 16 * max(batch_tokens, max_length)
    rows: list[Row] = []
    window: list[int] = []
    used = 0
    for i in order + [-1]:
        if i == -1 or (window and used + lengths[i] > window_tokens):
            packed = _first_fit_decreasing(window, lengths, max_length)
            rng.shuffle(packed)
            rows += packed
            window, used = [], 0
        if i != -1:
            window.append(i)
            used += lengths[i]
    return rows


def _length_grouped(order: list[int], lengths: Sequence[int], batch_tokens: int) -> list[int]:
    """Sort shuffled mega-batches by length so neighbours pad little (HF's LengthGroupedSampler idea)."""
    mega = max(1, 50 * max(1, batch_tokens // max(1, max(lengths, default=1))))
    grouped: list[int] = []
    for s in range(0, len(order), mega):
        grouped += sorted(order[s : s + mega], key=lambda j: lengths[j])
    return grouped


def pack_rows(
    rows: Sequence[Sequence[dict]],
    pad_id: int,
    keys: Sequence[str] = ("input_ids", "labels"),
    attention_mask: bool = False,
) -> dict:
    """Concatenate each row's examples; position ids restart per example; pad rows to the longest.

    The padding tail gets its own restarting position ids (so it is a separate "sequence" that no
    real token attends to) and labels of -100. Returns tensors plus `num_tokens` (real tokens)
    and `num_loss_tokens` (labelled tokens that predict something).
    """
    width = max(sum(len(ex["input_ids"]) for ex in row) for row in rows)
    out = {k: torch.full((len(rows), width), IGNORE if k == "labels" else pad_id, dtype=torch.long) for k in keys}
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    real = 0
    for r, row in enumerate(rows):
        at = 0
        for ex in row:
            n = len(ex["input_ids"])
            for k in keys:
                out[k][r, at : at + n] = torch.tensor(ex[k], dtype=torch.long)
            positions[r, at : at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(width - at)
        real += at
    out["position_ids"] = positions
    if attention_mask:
        # Only for one-example rows (prompt-learning adapters need a mask): a 2-D mask turns off
        # transformers' packed-sequence detection, so it must never be used with packed rows.
        assert all(len(row) == 1 for row in rows), "attention_mask is only valid for unpacked rows"
        lengths = torch.tensor([len(row[0]["input_ids"]) for row in rows])
        out["attention_mask"] = (torch.arange(width)[None, :] < lengths[:, None]).long()
    out["num_tokens"] = real
    if "labels" in out:
        # a label at an example's first position is never predicted (nothing precedes it)
        first = positions == 0
        out["num_loss_tokens"] = int(((out["labels"] != IGNORE) & ~first).sum())
    return out
