"""Continuous batching for the transformers backend: every active request shares each forward pass.

One engine thread owns the model. Each iteration it
  1. drops rows that finished or whose client went away (their KV cache rows are removed),
  2. runs ONE decode forward for all active rows together: (B, 1) new tokens against a shared
     KV cache, each row with its own position ids and, through PEFT's `adapter_names=`, its own
     LoRA adapter (rows for different adapters share the same base-model matmuls),
  3. prefills newly admitted requests together (left-padded) and merges their KV cache into the
     running batch, so they join the next decode step instead of waiting for the batch to drain.

The shared cache is left-padded: a row's real tokens end at the right edge and its padding is
masked out; columns that have become padding in every row are trimmed. Requests beyond
`max_batch` wait in a queue of at most `max_queue`; beyond that `submit` raises `QueueFull`
(the HTTP layer answers 429 with Retry-After).

Greedy decoding here gives the same tokens as `model.generate` on each request alone
(tests/test_serve_engine.py checks this, with mixed adapters and requests joining mid-flight).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from attune.models.generation import GenerationParams
from attune.serve.sampling import TextStream, next_tokens

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("attune.serve")
BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class QueueFull(Exception):
    """The waiting queue is at its limit; the client should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"server busy: request queue is full, retry after {retry_after}s")
        self.retry_after = retry_after


@dataclass
class Delta:
    """New completion text for one request."""

    text: str


@dataclass
class Finished:
    """The request is done: why, and how many tokens it read and wrote."""

    reason: str  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


Event = Delta | Finished


@dataclass
class Request:
    """What the engine needs to run one completion. `sink` receives events from the engine thread."""

    prompt_ids: list[int]
    params: GenerationParams
    sink: Callable[[Event], None]
    adapter: str = BASE
    on_done: Callable[[], None] | None = None  # e.g. unpin the adapter
    cancelled: bool = False

    def cancel(self) -> None:
        """Stop generating for this request at the next step (the client went away)."""
        self.cancelled = True


class _Row:
    """A request being decoded: its sampler, text stream and token count."""

    def __init__(self, request: Request, tokenizer: PreTrainedTokenizerBase) -> None:
        import torch

        self.request = request
        self.stream = TextStream(tokenizer, request.params.stop)
        self.generated = 0
        seed = request.params.seed
        self.generator = None
        if request.params.temperature > 0:
            self.generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        self.sampling = (request.params.temperature, request.params.top_p, self.generator)
        self.done = False

    def push(self, token: int, eos: set[int]) -> None:
        """Account for one sampled token and emit its text; marks the row done when it should stop."""
        req = self.request
        self.generated += 1
        if token in eos:
            self._finish("stop")
            return
        piece, stopped = self.stream.add(token)
        if piece:
            req.sink(Delta(piece))
        if stopped:
            self._finish("stop")
        elif self.generated >= req.params.max_new_tokens:
            self._finish("length")

    def _finish(self, reason: str, error: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        rest = self.stream.flush() if reason == "length" else ""
        if rest:
            self.request.sink(Delta(rest))
        self.request.sink(Finished(reason, len(self.request.prompt_ids), self.generated, error))
        if self.request.on_done is not None:
            self.request.on_done()


@dataclass
class EngineStats:
    """Counters the tests and the benchmark read (Prometheus gets the same numbers via `metrics`)."""

    prefill_passes: int = 0
    decode_passes: int = 0
    decode_rows: int = 0  # sum over decode passes of the rows in it
    max_rows: int = 0
    mixed_passes: int = 0  # decode passes with more than one distinct adapter
    cancelled: int = 0


class Engine:
    """The batching loop. `model` may be swapped (e.g. wrapped in a PeftModel) while holding `lock`."""

    def __init__(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        max_batch: int = 16,
        max_queue: int = 64,
        observer: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.lock = threading.RLock()  # held for each step; adapter loads/evictions take it too
        self.stats = EngineStats()
        self._observe = observer or (lambda event, data: None)
        self._waiting: deque[Request] = deque()
        self._rows: list[_Row] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._eos = _eos_ids(model, tokenizer)
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self._eos), 0)
        self._recent_seconds = 1.0  # moving average of request time, for Retry-After
        # the shared batch: KV cache, (B, L) attention mask, (B,) next position and last sampled token
        self._cache = None
        self._mask = None
        self._pos = None
        self._last = None

    # ---- the public side (any thread) ----
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="attune-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, request: Request) -> None:
        """Queue a request, or raise `QueueFull` when `max_queue` requests are already waiting."""
        with self._cv:
            free = self.max_batch - len(self._rows)
            if len(self._waiting) - free >= self.max_queue:
                raise QueueFull(self.retry_after())
            self._waiting.append(request)
            self._cv.notify_all()

    def retry_after(self) -> int:
        """Seconds a rejected client should wait: about one request's time, at least 1."""
        return max(1, round(self._recent_seconds))

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return len(self._rows)

    # ---- the engine thread ----
    def _loop(self) -> None:
        import torch

        while True:
            with self._cv:
                while not self._stop and not self._waiting and not self._rows:
                    self._cv.wait()
                if self._stop:
                    break
                admitted: list[_Row] = []
                while self._waiting and len(self._rows) + len(admitted) < self.max_batch:
                    row = _Row(self._waiting.popleft(), self.tokenizer)
                    if row.request.cancelled:
                        self._cancelled(row)
                    else:
                        admitted.append(row)
            try:
                with self.lock, torch.inference_mode():
                    if self._rows:
                        self._decode()
                    if admitted:
                        self._prefill(admitted)
            except Exception as exc:  # a failed step fails its requests, never the server
                log.exception("engine step failed")
                for row in self._rows + admitted:
                    row._finish("error", f"{type(exc).__name__}: {exc}")
                self._rows, self._cache = [], None
            self._observe("step", {"active": len(self._rows), "waiting": len(self._waiting)})
        for row in self._rows:
            row._finish("cancelled")
        for req in self._waiting:
            _Row(req, self.tokenizer)._finish("cancelled")

    def _forward(self, input_ids, mask, positions, cache, adapters: list[str]):
        from peft import PeftModel

        kwargs = {"adapter_names": adapters} if isinstance(self.model, PeftModel) else {}
        return self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
            logits_to_keep=1, **kwargs,
        )

    def _decode(self) -> None:
        import torch

        gone = [r for r in self._rows if r.request.cancelled]
        for row in gone:
            self._cancelled(row)
        if gone:
            self._keep([i for i, r in enumerate(self._rows) if not r.done])
            if not self._rows:
                return
        B = len(self._rows)
        mask = torch.cat([self._mask, self._mask.new_ones(B, 1)], dim=1)  # (B, L+1)
        adapters = [r.request.adapter for r in self._rows]
        out = self._forward(self._last[:, None], mask, self._pos[:, None], self._cache, adapters)
        self._mask = mask
        self._pos = self._pos + 1
        self._last = next_tokens(out.logits[:, -1, :], [r.sampling for r in self._rows])
        s = self.stats
        s.decode_passes += 1
        s.decode_rows += B
        s.max_rows = max(s.max_rows, B)
        s.mixed_passes += len(set(adapters)) > 1
        self._observe("decode", {"rows": B, "adapters": len(set(adapters))})
        for row, token in zip(self._rows, self._last.tolist()):
            if row.request.cancelled:
                self._cancelled(row)
            else:
                row.push(token, self._eos)
        self._keep([i for i, r in enumerate(self._rows) if not r.done])

    def _prefill(self, rows: list[_Row]) -> None:
        """Run the new prompts together, sample their first token, and merge them into the batch."""
        import torch
        from transformers import DynamicCache

        requests = [r.request for r in rows]
        device = _device(self.model)
        longest = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), longest), self._pad, dtype=torch.long)
        mask = torch.zeros((len(requests), longest), dtype=torch.long)
        for i, r in enumerate(requests):  # left padding: every prompt ends at the right edge
            ids[i, longest - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[i, longest - len(r.prompt_ids) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self._forward(ids, mask, positions, cache, [r.adapter for r in requests])
        first = next_tokens(out.logits[:, -1, :], [r.sampling for r in rows])
        self.stats.prefill_passes += 1
        self._observe("prefill", {"rows": len(rows), "tokens": int(mask.sum())})
        for row, token in zip(rows, first.tolist()):
            row.push(token, self._eos)
        keep = [i for i, r in enumerate(rows) if not r.done]
        if not keep:
            return
        idx = torch.tensor(keep, device=device)
        cache.batch_select_indices(idx)
        self._merge(cache, mask[idx], positions[idx, -1] + 1, first[idx], [rows[i] for i in keep])

    def _merge(self, cache, mask, pos, last, rows: list[_Row]) -> None:
        """Append new rows to the running batch, left-padding whichever side is shorter."""
        import torch

        if not self._rows:
            self._cache, self._mask, self._pos, self._last, self._rows = cache, mask, pos, last, rows
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([pad(old.keys, 2), pad(new.keys, 2)], dim=0)  # (B, H, L, D)
            old.values = torch.cat([pad(old.values, 2), pad(new.values, 2)], dim=0)
        self._mask = torch.cat([pad(self._mask, 1), pad(mask, 1)], dim=0)
        self._pos = torch.cat([self._pos, pos])
        self._last = torch.cat([self._last, last])
        self._rows = self._rows + rows

    def _keep(self, keep: list[int]) -> None:
        """Keep only rows `keep` of the batch, then trim columns that are padding in every row."""
        import torch

        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._pos = self._last = None
            return
        idx = torch.tensor(keep, device=self._mask.device)
        self._cache.batch_select_indices(idx)
        self._mask, self._pos, self._last = self._mask[idx], self._pos[idx], self._last[idx]
        lead = int((self._mask.cumsum(1) == 0).sum(1).min())  # leading pad columns shared by all rows
        if lead:
            self._mask = self._mask[:, lead:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, lead:], layer.values[:, :, lead:]

    def _cancelled(self, row: _Row) -> None:
        self.stats.cancelled += 1
        self._observe("cancelled", {})
        row._finish("cancelled")

    def note_latency(self, seconds: float) -> None:
        """Feed the Retry-After estimate (exponential moving average of request time)."""
        self._recent_seconds = 0.8 * self._recent_seconds + 0.2 * seconds


def _device(model: Any):
    return next(model.parameters()).device


def _eos_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The token ids that end a completion: the model's generation config, else the tokenizer's EOS."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None) if config is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return {int(i) for i in ids if i is not None}
