"""Continuous batching for the transformers backend: every active request shares each forward pass.

All local generation goes through this loop. The server (`attune serve`) runs it in a thread of
its own (`start` / `submit` / `stop`, under a supervisor); `HFGenerator` (evaluation, compare, RAG
answers, `attune generate` / `chat`, distillation teachers) drives it in the caller's thread with
`run` / `steps`, all prompts queued at once. Each iteration it
  1. drops rows that finished or whose client went away (their KV cache rows are removed),
  2. runs ONE decode forward for all active rows together: (B, 1) new tokens against a shared
     KV cache, each row with its own position ids and, through PEFT's `adapter_names=`, its own
     LoRA adapter (rows for different adapters share the same base-model matmuls),
  3. prefills newly admitted requests together (left-padded) and merges their KV cache into the
     running batch, so they join the next decode step instead of waiting for the batch to drain.

The shared cache is left-padded: a row's real tokens end at the right edge and its padding is
masked out; columns that have become padding in every row are trimmed. Requests beyond
`max_batch` wait in a queue of at most `max_queue`; beyond that `submit` raises `QueueFull`
(the HTTP layer answers 429 with Retry-After). Requests being prefilled count as active, so
at most `max_batch + max_queue` requests are ever accepted.

Isolation: `submit` validates everything a request brings (prompt ids, seed, lengths, stop
strings) before it can join a batch. A step that raises is rolled back and rerun without the
row that caused it (each row is tried alone to find it), so one bad row never fails its
neighbours. The loop runs under a supervisor: if the loop itself dies, its requests finish as
`unavailable` (HTTP 503), `healthy` is False, and the loop restarts after `restart_delay`.
Driven by `run` / `steps`, there is no thread and no supervisor: what the loop raises reaches the
caller, and the queue has no limit.

Greedy decoding here gives the same tokens as `model.generate` on each request alone
(tests/test_serve_engine.py checks this, with mixed adapters and requests joining mid-flight).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from attune.models.sampling import GenerationParams, TextStream, next_tokens

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("attune.models")
BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
MAX_STOP_CHARS = 256  # stop strings are searched in the text at every token
MAX_STOPS = 8  # the API takes 4; the server may add the chat template's turn marker


class InvalidRequest(ValueError):
    """A request the engine refuses before it joins a batch; `field` names the request field at fault."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


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

    reason: str  # "stop" | "length" | "cancelled" | "error" (this row failed) | "unavailable" (the engine died)
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


Event = Delta | Finished


@dataclass
class Completion:
    """What `Engine.run` returns for one request: its whole text and how it ended."""

    text: str
    finished: Finished


def _ignore(event: Event) -> None:
    pass


@dataclass
class Request:
    """What the engine needs to run one completion. `sink` receives events from the thread that steps the loop.

    `adapter` names the PEFT adapter of this row (`BASE`: none), passed to the model as
    `adapter_names=`; `None` runs the model as it is, with its active adapter (any shape), and
    cannot share a batch with rows that name one."""

    prompt_ids: list[int]
    params: GenerationParams
    sink: Callable[[Event], None] = _ignore
    adapter: str | None = BASE
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
    failed_rows: int = 0  # rows failed alone by a step that was rerun without them
    restarts: int = 0  # times the supervisor restarted the loop


def validate(request: Request, vocab_size: int, limits: bool = True) -> None:
    """Refuse (InvalidRequest) anything that could fail a batch step or the engine thread.

    `limits`: also cap the stop strings (a server's guard on per-token work; in-process callers pay their own)."""
    p = request.params
    if not request.prompt_ids:
        raise InvalidRequest("the prompt is empty (it has no tokens); send at least one token of text", "prompt")
    if any(not isinstance(t, int) or not 0 <= t < vocab_size for t in request.prompt_ids):
        raise InvalidRequest(f"the prompt holds token ids outside the model's vocabulary of {vocab_size}", "prompt")
    if not isinstance(p.max_new_tokens, int) or p.max_new_tokens < 1:
        raise InvalidRequest(f"max_tokens must be at least 1, got {p.max_new_tokens}", "max_tokens")
    if not (isinstance(p.temperature, (int, float)) and math.isfinite(p.temperature) and p.temperature >= 0):
        raise InvalidRequest(f"temperature must be a finite number >= 0, got {p.temperature}", "temperature")
    if not (isinstance(p.top_p, (int, float)) and math.isfinite(p.top_p) and 0 < p.top_p <= 1):
        raise InvalidRequest(f"top_p must be in (0, 1], got {p.top_p}", "top_p")
    if p.seed is not None and not (isinstance(p.seed, int) and SEED_RANGE[0] <= p.seed <= SEED_RANGE[1]):
        raise InvalidRequest(f"seed must be an integer from -2**63 to 2**64-1, got {p.seed}", "seed")
    if any(not isinstance(s, str) for s in p.stop):
        raise InvalidRequest("stop strings must be strings", "stop")
    if limits and (len(p.stop) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in p.stop)):
        raise InvalidRequest(f"stop takes at most {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters", "stop")


def supports(model: Any) -> bool:
    """Whether the engine can decode `model`: not with prefix or prompt tuning, whose virtual tokens PEFT
    adds inside its own forward and `generate` (a shared KV cache stepped here would lose or repeat them)."""
    from attune.models.architecture import is_prompt_learning

    return not is_prompt_learning(model)


class Engine:
    """The batching loop. `model` may be swapped (e.g. wrapped in a PeftModel) while holding `lock`."""

    restart_delay = 1.0  # seconds the supervisor waits before restarting a dead loop (doubles while it keeps dying)

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
        self.healthy = True
        self.failure: str | None = None  # why the loop last died
        self._observe = observer or (lambda event, data: None)
        self._waiting: deque[Request] = deque()
        self._admitting: list[Request] = []  # taken from the queue, being prefilled: they hold batch slots
        self._rows: list[_Row] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._eos = _eos_ids(model, tokenizer)
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self._eos), 0)
        self._vocab = model.get_input_embeddings().num_embeddings
        self._tokens_per_second: float | None = None  # measured decode throughput (all rows), for Retry-After
        self._tokens_per_request: float | None = None  # completion tokens of finished requests (moving average)
        self._previous_decode: tuple[float, int] | None = None  # (start, rows) of the last decode while busy
        # the shared batch: KV cache, (B, L) attention mask, (B,) next position and last sampled token
        self._cache = None
        self._mask = None
        self._pos = None
        self._last = None

    # ---- the public side (any thread) ----
    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="attune-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, request: Request) -> None:
        """Validate and queue a request; raises `InvalidRequest`, or `QueueFull` when
        `max_batch + max_queue` requests are already decoding, being prefilled or waiting."""
        validate(request, self._vocab)
        with self._cv:
            if len(self._rows) + len(self._admitting) + len(self._waiting) >= self.max_batch + self.max_queue:
                raise QueueFull(self.retry_after())
            self._waiting.append(request)
            self._cv.notify_all()

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the waiting requests (and this one) at the measured
        throughput, each as long as the recent average completion; at least 1."""
        if not self._tokens_per_second or not self._tokens_per_request:
            return 1
        seconds = (len(self._waiting) + 1) * self._tokens_per_request / self._tokens_per_second
        return max(1, min(3600, math.ceil(seconds)))

    def run(self, requests: Sequence[Request]) -> list[Completion]:
        """Decode `requests` to the end in the calling thread; their completions, in their order.

        Each request's sink still sees its events as they come. The engine runs copies of the
        requests (the copies' sinks also collect the text), so `cancel()` on one passed here has no
        effect; to stop early, iterate `steps` and close it."""
        texts: list[list[str]] = [[] for _ in requests]
        ends: list[Finished | None] = [None] * len(requests)

        def collect(i: int, sink: Callable[[Event], None]) -> Callable[[Event], None]:
            def tee(event: Event) -> None:
                if isinstance(event, Delta):
                    texts[i].append(event.text)
                else:
                    ends[i] = event
                sink(event)

            return tee

        for _ in self.steps([dataclasses.replace(r, sink=collect(i, r.sink)) for i, r in enumerate(requests)]):
            pass
        return [Completion("".join(t), e) for t, e in zip(texts, ends)]  # type: ignore[arg-type]

    def steps(self, requests: Sequence[Request]) -> Iterator[None]:
        """Queue `requests` (no limit) and step the loop in the calling thread, yielding after each step,
        until all have finished; requests beyond `max_batch` join as rows finish. Closing the iterator
        early finishes the rest as `cancelled`. Not for an engine whose thread was started."""
        if self._thread is not None:
            raise RuntimeError("this engine runs in its own thread: submit() to it")
        for request in requests:
            validate(request, self._vocab, limits=False)
        with self._cv:
            self._waiting.extend(requests)
        try:
            while self._waiting or self._rows:
                with self._cv:
                    self._admit()
                self._step()
                yield
        finally:
            self._drain("cancelled", None)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return len(self._rows) + len(self._admitting)

    # ---- the engine thread ----
    def _supervise(self) -> None:
        """Run the loop; if it dies, fail what it held (503), stay unhealthy for a moment, restart it."""
        delay = self.restart_delay
        while True:
            started = time.monotonic()
            try:
                self._loop()
                return
            except Exception as exc:
                log.exception("engine loop died; restarting in %.1f s", delay)
                self.healthy, self.failure = False, f"{type(exc).__name__}: {exc}"
                self.stats.restarts += 1
                self._observe("restart", {})
                self._fail_all("unavailable", f"the generation engine failed and is restarting ({self.failure})")
            delay = delay * 2 if time.monotonic() - started < 60 else self.restart_delay
            with self._cv:
                if self._cv.wait_for(lambda: self._stop, timeout=min(delay, 60)):
                    return
            self.healthy = True

    def _fail_all(self, reason: str, error: str | None) -> None:
        with self._cv:
            requests, self._admitting = list(self._admitting), []
        rows, self._rows = self._rows, []
        self._cache = self._mask = self._pos = self._last = None
        self._previous_decode = None  # a restart's wait is not decode time
        for row in rows:
            row._finish(reason, error)
        for request in requests:
            _finish_request(request, reason, error)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._waiting and not self._rows:
                    self._cv.wait()
                if self._stop:
                    break
                self._admit()
            self._step()
            self._observe("step", {"active": self.active, "waiting": len(self._waiting)})
        self._drain("cancelled", "the server is shutting down")

    def _admit(self) -> None:
        """Move waiting requests into free batch slots (the caller holds `_cv`)."""
        while self._waiting and len(self._rows) + len(self._admitting) < self.max_batch:
            request = self._waiting.popleft()
            if request.cancelled:
                self._cancelled_request(request)
            else:
                self._admitting.append(request)

    def _drain(self, reason: str, error: str | None) -> None:
        """Finish everything the engine holds: rows and admitted requests with `error`, waiting ones without."""
        self._fail_all(reason, error)
        with self._cv:
            waiting, self._waiting = list(self._waiting), deque()
        for request in waiting:
            _finish_request(request, reason, None)

    def _step(self) -> None:
        """One decode pass for the running rows, then the prefill of the admitted requests."""
        import torch

        with self.lock, torch.inference_mode():
            if self._rows:
                self._decode()
            if self._admitting:
                rows = []
                for request in list(self._admitting):
                    try:
                        rows.append(_Row(request, self.tokenizer))
                    except Exception as exc:
                        self._fail_row_request(request, exc)
                self._prefill(rows)
            with self._cv:
                self._admitting = []

    def _forward(self, input_ids, mask, positions, cache, adapters: list[str | None]):
        from peft import PeftModel

        kwargs = {}
        if isinstance(self.model, PeftModel) and any(a is not None for a in adapters):
            if None in adapters:
                raise ValueError("rows that name an adapter and rows that run the model as it is cannot share a batch")
            kwargs["adapter_names"] = adapters
        return self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
            logits_to_keep=1, **kwargs,
        )

    def _decode(self) -> None:
        gone = [r for r in self._rows if r.request.cancelled]
        for row in gone:
            self._cancelled(row)
        if gone:
            self._keep([i for i, r in enumerate(self._rows) if not r.done])
            if not self._rows:
                return
        started = time.monotonic()
        self._measure_throughput(started)
        result = self._decode_isolated()
        if result is None:
            return
        tokens, self._mask = result
        B = len(self._rows)
        self._pos = self._pos + 1
        self._last = tokens
        adapters = [r.request.adapter for r in self._rows]
        s = self.stats
        s.decode_passes += 1
        s.decode_rows += B
        s.max_rows = max(s.max_rows, B)
        s.mixed_passes += len(set(adapters)) > 1
        self._previous_decode = (started, B)
        self._observe("decode", {"rows": B, "adapters": len(set(adapters))})
        for row, token in zip(self._rows, tokens.tolist()):
            if row.request.cancelled:
                self._cancelled(row)
            else:
                self._push(row, token)
        self._keep([i for i, r in enumerate(self._rows) if not r.done])

    def _measure_throughput(self, now: float) -> None:
        """Tokens per second over the whole last step (decode, prefills of joining requests, sampling,
        stop-string search, delivery): the forward pass alone overstates it, and Retry-After with it."""
        if self._previous_decode is None:
            return
        then, rows = self._previous_decode
        rate = rows / max(now - then, 1e-6)
        self._tokens_per_second = rate if self._tokens_per_second is None else 0.9 * self._tokens_per_second + 0.1 * rate

    def _decode_pass(self, rows: list[_Row], select: list[int] | None = None):
        """Forward one token for `rows` (all running rows, or only those at `select`) and sample.

        With `select` it runs on a copy of those rows' cache and changes nothing (a probe)."""
        import torch

        cache, mask, pos, last = self._cache, self._mask, self._pos, self._last
        if select is not None:
            idx = torch.tensor(select, device=mask.device)
            cache = copy.copy(cache)
            cache.layers = [copy.copy(layer) for layer in cache.layers]
            for layer in cache.layers:  # decoding concatenates new tensors; the running cache is untouched
                layer.keys, layer.values = layer.keys[idx], layer.values[idx]
            mask, pos, last = mask[idx], pos[idx], last[idx]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)  # (B, L+1)
        out = self._forward(last[:, None], mask, pos[:, None], cache, [r.request.adapter for r in rows])
        return next_tokens(out.logits[:, -1, :], [r.sampling for r in rows]), mask

    def _rollback_decode(self) -> None:
        """Undo a failed decode pass: drop the column it may have appended to some cache layers."""
        width = self._mask.shape[1]
        for layer in self._cache.layers:
            if layer.keys is not None and layer.keys.shape[2] > width:
                layer.keys, layer.values = layer.keys[:, :, :width], layer.values[:, :, :width]

    def _decode_isolated(self):
        """The decode pass; if it raises, probe each row alone, fail only the rows that fail alone, and
        rerun without them (the samplers' states are restored, so the rerun draws what it would have).
        Returns (tokens, mask), or None when no row is left."""
        rows = self._rows
        states = [r.generator.get_state() if r.generator is not None else None for r in rows]
        try:
            return self._decode_pass(rows)
        except Exception as exc:
            self._rollback_decode()
            first = exc
        culprits = []
        for i, row in enumerate(rows):
            try:
                self._decode_pass([row], select=[i])
            except Exception as exc:
                culprits.append((row, exc))
        for row, state in zip(rows, states):
            if state is not None:
                row.generator.set_state(state)
        for row, exc in culprits or [(row, first) for row in rows]:  # nothing fails alone: the batch is broken
            self._fail_row(row, exc)
        self._keep([i for i, r in enumerate(rows) if not r.done])
        if not self._rows:
            return None
        try:
            return self._decode_pass(self._rows)
        except Exception as exc:
            self._rollback_decode()
            for row in self._rows:
                self._fail_row(row, exc)
            self._keep([])
            return None

    def _prefill(self, rows: list[_Row]) -> None:
        """Run the new prompts together, sample their first token, and merge them into the batch.

        If the pass raises, each row is prefilled alone, so only the rows that fail alone fail."""
        try:
            states = [r.generator.get_state() if r.generator is not None else None for r in rows]
            cache, mask, positions, first = self._prefill_pass(rows)
        except Exception as exc:
            if len(rows) == 1:
                self._fail_row(rows[0], exc)
                return
            for row, state in zip(rows, states):
                if state is not None:
                    row.generator.set_state(state)
            for row in rows:
                self._prefill([row])
            return
        import torch

        self.stats.prefill_passes += 1
        self._observe("prefill", {"rows": len(rows), "tokens": int(mask.sum())})
        for row, token in zip(rows, first.tolist()):
            self._push(row, token)
        keep = [i for i, r in enumerate(rows) if not r.done]
        if not keep:
            return
        idx = torch.tensor(keep, device=mask.device)
        cache.batch_select_indices(idx)
        self._merge(cache, mask[idx], positions[idx, -1] + 1, first[idx], [rows[i] for i in keep])

    def _prefill_pass(self, rows: list[_Row]):
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
        return cache, mask, positions, first

    def _push(self, row: _Row, token: int) -> None:
        """Hand a token to its row; a row whose delivery fails (e.g. its client's loop closed) fails alone."""
        try:
            row.push(token, self._eos)
        except Exception as exc:
            self._fail_row(row, exc)
            return
        if row.done and row.generated:
            n = float(row.generated)
            self._tokens_per_request = n if self._tokens_per_request is None else 0.9 * self._tokens_per_request + 0.1 * n

    def _fail_row(self, row: _Row, exc: Exception) -> None:
        log.error("request failed alone in a batch step (%s: %s); the other rows continue", type(exc).__name__, exc)
        self.stats.failed_rows += 1
        self._observe("failed_row", {})
        try:
            row._finish("error", f"{type(exc).__name__}: {exc}")
        except Exception:  # its sink is broken too: it only needs to stop being decoded
            row.done = True

    def _fail_row_request(self, request: Request, exc: Exception) -> None:
        log.error("request could not be set up (%s: %s)", type(exc).__name__, exc)
        self.stats.failed_rows += 1
        self._observe("failed_row", {})
        _finish_request(request, "error", f"{type(exc).__name__}: {exc}")

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
            self._previous_decode = None  # idle from here: the next gap is not decode time
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

    def _cancelled_request(self, request: Request) -> None:
        self.stats.cancelled += 1
        self._observe("cancelled", {})
        _finish_request(request, "cancelled", None)


def _finish_request(request: Request, reason: str, error: str | None) -> None:
    """Finish a request that never became a row (it was waiting, or being admitted)."""
    request.sink(Finished(reason, len(request.prompt_ids), 0, error))
    if request.on_done is not None:
        request.on_done()


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
