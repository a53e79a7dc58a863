"""Token-budget micro-batches with no compute spent on padding.

Packing (default): shuffled windows of examples are packed into rows of at most `max_length`
tokens (first-fit decreasing), and consecutive rows form micro-batches whose computed size
(rows x widest row) stays within `batch_tokens`. Position ids restart at every example; with no 2-D attention mask, transformers
turns restarting position ids into a block-diagonal causal mask, so no example ever attends to
another (tests prove it: a packed batch's loss equals its examples' losses run one by one).

Without packing, examples are grouped by length (shuffled mega-batches sorted by length, as
HF's LengthGroupedSampler does) so each row pads only to a neighbour's length.

Streams (`ExampleStream`, corpora larger than memory) are planned window by window with the
same functions, so memory holds one packing window of examples, never the corpus.

Rows are kept near `max_length` rather than one very long row because SDPA computes a dense
(T x T) mask: one 4096-token row would spend most attention FLOPs on masked-out blocks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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


def window_seed(seed: int, epoch: int, window: int) -> int:
    """The plan seed of one window of a stream: distinct per pass and window, a function of `seed` only."""
    return (seed * 1_000_003 + epoch) * 1_000_003 + window


class ExampleStream:
    """Training examples produced on the fly, pass by pass, for corpora larger than memory.

    `open(epoch)` yields the examples of one pass (tokenized while reading; it must yield the
    same examples each time it is opened for the same epoch). The loop asks for `plan(...)`
    instead of planning a list: see `StreamPlan`.
    """

    def __init__(self, open: Callable[[int], Iterator[dict]]) -> None:
        self.open = open

    def plan(self, options: Any, per_step: int) -> StreamPlan:
        return StreamPlan(self.open, options, per_step)


class StreamPlan:
    """Micro-batches of a stream, planned one window at a time: memory holds one window, never the corpus.

    Examples are gathered into windows of the size `_packed_rows` packs at once (16 x
    max(batch_tokens, max_length) tokens) and each window is planned by `plan_epoch`, so a
    stream is shuffled, packed and batched exactly like a list that fits in one window. Shuffling
    is therefore local to a window (a shuffle buffer), not global: documents far apart in the
    file never share a micro-batch.

    Length: with `max_steps` the stream is read for as long as the run lasts (passes follow each
    other) and the loop's "epoch" is the share of `max_steps` done; without it, one counting pass
    (read and tokenize, keep nothing) finds how many micro-batches a pass makes, so `epochs:`
    works as for in-memory data. `rows(g)` is asked for in increasing `g`; an earlier `g` (resume)
    re-reads from the start of its pass.
    """

    def __init__(self, open: Callable[[int], Iterator[dict]], options: Any, per_step: int) -> None:
        from attune.errors import AttuneError

        self.open = open
        self.options = options
        self.window_tokens = 16 * max(options.batch_tokens, options.max_length)
        self.counted = not options.max_steps
        if self.counted:
            n = sum(1 for _ in self._pass(0))
            self.per_epoch = (n // per_step) * per_step
            if self.per_epoch == 0:
                raise AttuneError(
                    f"not enough training data for one optimizer step: the stream makes {n} micro-batches "
                    f"but a step needs {per_step} (grad_accum x processes)"
                )
        else:
            self.per_epoch = options.max_steps * per_step
        self._iter: Iterator[list[list[dict]]] | None = None
        self._at = (0, 0)  # (pass, index of the micro-batch `_iter` yields next)

    def _pass(self, epoch: int) -> Iterator[list[list[dict]]]:
        window: list[dict] = []
        used = 0
        w = 0
        for ex in self.open(epoch):
            if window and used + ex["num_tokens"] > self.window_tokens:
                yield from self._plan_window(window, epoch, w)
                window, used, w = [], 0, w + 1
            window.append(ex)
            used += ex["num_tokens"]
        if window:
            yield from self._plan_window(window, epoch, w)

    def _plan_window(self, window: list[dict], epoch: int, w: int) -> Iterator[list[list[dict]]]:
        opts = self.options
        lengths = [ex["num_tokens"] for ex in window]
        seed = window_seed(opts.seed, epoch, w)
        for micro in plan_epoch(lengths, batch_tokens=opts.batch_tokens, max_length=opts.max_length, packing=opts.packing, seed=seed):
            yield [[window[j] for j in row] for row in micro]

    def _endless(self) -> Iterator[list[list[dict]]]:
        from attune.errors import AttuneError

        epoch = 0
        while True:
            n = 0
            for micro in self._pass(epoch):
                n += 1
                yield micro
            if n == 0:
                raise AttuneError("the training stream yielded no examples")
            epoch += 1

    def rows(self, g: int) -> list[list[dict]]:
        """The rows of global micro-batch `g` (each row a list of examples)."""
        epoch, i = divmod(g, self.per_epoch) if self.counted else (0, g)
        if self._iter is None or self._at[0] != epoch or self._at[1] > i:
            self._iter = self._pass(epoch) if self.counted else self._endless()
            self._at = (epoch, 0)
        for _ in range(i - self._at[1]):
            next(self._iter)
        self._at = (epoch, i + 1)
        return next(self._iter)
