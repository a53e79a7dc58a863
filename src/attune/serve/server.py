"""The server's state and its one operation: turn a validated request into a stream of engine events.

`Server` loads the base model once (through `attune.models`), adds the configured adapters,
routes and RAG indexes, and owns the batching engine. The HTTP layer (`app.py`) only parses,
authenticates and formats; everything that decides what runs lives here.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attune.errors import AttuneError
from attune.models.engine import BASE, Delta, Engine, Event, Finished, InvalidRequest, Request
from attune.models.generation import GenerationParams, HFGenerator, Prompt
from attune.serve.auth import Auth
from attune.serve.errors import ServeError
from attune.serve.metrics import Metrics
from attune.serve.registry import RESERVED_PREFIXES, AdapterRegistry
from attune.serve.router import Router, profile_texts
from attune.serve.settings import ServeSettings

log = logging.getLogger("attune.serve")


@dataclass
class Target:
    """What a request's `model` name resolved to."""

    kind: str  # "base" | "adapter" | "mix" | "route" | "rag"
    adapter: str | None = None  # served adapter name (or mix: name) to run with; None = base
    info: dict[str, Any] = field(default_factory=dict)  # reported back under the response's `attune` field


@dataclass
class Prepared:
    """A request ready for the engine: token ids, limits applied."""

    prompt_ids: list[int]
    params: GenerationParams
    target: Target


class Server:
    """Model, engine, adapters, routes and RAG indexes of one `attune serve` process."""

    def __init__(self, settings: ServeSettings) -> None:
        from attune.models.loading import as_ref, load_model

        self.settings = settings
        self.auth = Auth(settings.api_keys, settings.admin_keys, settings.loopback)
        self.metrics = Metrics()
        ref = as_ref(settings.model)
        self.names = settings.base_names
        self.name = self.names[0]
        loaded = load_model(ref)
        loaded.model.eval()
        self.tokenizer = loaded.tokenizer
        self.renderer = HFGenerator(loaded.model, loaded.tokenizer, self.name)  # the same rendering as `attune generate`
        context = getattr(loaded.model.config, "max_position_embeddings", None) or 10**9
        self.context = int(context)
        self.engine = Engine(loaded.model, loaded.tokenizer, settings.max_batch, settings.max_queue, self.metrics.observe)
        self.registry = AdapterRegistry(self.engine, settings.max_adapters, [Path(d) for d in settings.adapter_dirs],
                                        self.metrics.observe)
        for name, path in settings.adapters.items():
            if name in self.names or name.startswith(RESERVED_PREFIXES):
                raise AttuneError(f"adapter name {name!r} is taken (the base model's name or a reserved prefix)")
            self.registry.add(name, path, description=settings.describe.get(name))
        routed = [a for adapters in settings.routes.values() for a in adapters]
        unknown = sorted({a for a in routed + list(settings.describe) if a not in settings.adapters})
        if unknown:
            raise AttuneError(f"--route/--describe name adapter(s) not given with --adapter: {', '.join(unknown)}")
        self.router = Router(settings.routes, {n: profile_texts(d) for n, d in settings.describe.items()})
        self.rag = {name: _open_index(name, path) for name, path in settings.rag.items()}

    def start(self) -> None:
        if self.settings.routes:
            self.router.prepare()
        self.engine.start()

    def stop(self) -> None:
        self.engine.stop()

    # ---- naming ----
    def model_names(self) -> list[dict[str, Any]]:
        """GET /v1/models entries: the base under each of its names, then adapters (parent = the base's
        canonical name), routes and RAG models: every `id` is a `model` a client may send."""
        entries = [{"id": n, "parent": None, "attune": {"kind": "base", "source": self.settings.model}} for n in self.names]
        resident = set(self.registry.resident)
        for name, info in self.registry.known.items():
            entries.append({"id": name, "parent": self.name, "attune": {"kind": "adapter", "rank": info.rank,
                            "resident": name in resident, "runtime": info.runtime, "description": info.description}})
        entries += [{"id": f"route:{r}", "parent": self.name, "attune": {"kind": "route", "adapters": a}}
                    for r, a in self.settings.routes.items()]
        entries += [{"id": f"rag:{r}", "parent": self.name, "attune": {"kind": "rag"}} for r in self.rag]
        return entries

    def resolve(self, model: str, query: str) -> Target:
        """Map a request's `model` to what answers it; `query` is the text a route compares."""
        if model in self.names:
            return Target("base", None, {"adapter": None})
        if model.startswith("mix:"):
            return Target("mix", model, {"adapter": model})
        if model.startswith("route:"):
            choice = self.router.choose(model.removeprefix("route:"), query)
            return Target("route", choice.adapter, {"adapter": choice.adapter, "route_scores": choice.scores})
        if model.startswith("rag:"):
            name = model.removeprefix("rag:")
            if name not in self.rag:
                raise ServeError(404, f"no RAG index named {name!r}; served: {', '.join(sorted(self.rag)) or 'none'}", "model")
            return Target("rag", None, {"index": name})
        if model in self.registry.known:
            return Target("adapter", model, {"adapter": model})
        raise ServeError(404, f"model {model!r} does not exist; GET /v1/models lists the served names", "model")

    # ---- limits ----
    def prepare(self, prompt: Prompt, max_tokens: int | None, params: GenerationParams, target: Target) -> Prepared:
        """Tokenize exactly as `attune generate` does and enforce the per-request limits (400, naming the limit)."""
        s = self.settings
        ids = self.renderer.encode(prompt)
        params.stop = self.renderer.stops(prompt, params)
        if len(ids) > s.max_prompt_tokens:
            raise ServeError(400, f"prompt has {len(ids)} tokens; this server's limit is {s.max_prompt_tokens} "
                                  "(--max-prompt-tokens)", "messages", "prompt_too_long")
        if max_tokens is not None and max_tokens > s.max_output_tokens:
            raise ServeError(400, f"max_tokens {max_tokens} exceeds this server's limit of {s.max_output_tokens} "
                                  "(--max-output-tokens)", "max_tokens", "max_tokens_too_large")
        room = self.context - len(ids)
        if room < 1:
            raise ServeError(400, f"prompt ({len(ids)} tokens) fills the model's context of {self.context} tokens", "messages")
        wanted = max_tokens or min(s.max_output_tokens, room)
        if wanted > room:
            raise ServeError(400, f"prompt ({len(ids)} tokens) + max_tokens ({wanted}) exceeds the model's context of "
                                  f"{self.context} tokens", "max_tokens", "context_length_exceeded")
        params.max_new_tokens = wanted
        return Prepared(ids, params, target)

    # ---- running ----
    async def submit(self, prepared: Prepared) -> Running:
        """Pin the adapter and queue the request (raises 429 / 404 here, before any response is sent)."""
        from starlette.concurrency import run_in_threadpool

        peft_name = await run_in_threadpool(self.registry.acquire, prepared.target.adapter)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        request = Request(prepared.prompt_ids, prepared.params, lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev),
                          peft_name, on_done=lambda: self.registry.release(peft_name))
        try:
            self.engine.submit(request)
        except InvalidRequest as exc:
            self.registry.release(peft_name)
            raise ServeError(400, str(exc), exc.field) from exc
        except BaseException:
            self.registry.release(peft_name)
            raise
        return Running(request, events)

    def grounded(self, name: str, question: str, params: GenerationParams) -> tuple[Any, dict[str, int]]:
        """Answer with retrieval (blocking: run it in a worker thread); returns (GroundedAnswer, usage)."""
        from attune.rag import answer_question

        generator = EngineGenerator(self)
        result = answer_question(self.rag[name], question, generator, k=self.settings.rag_k, params=params)
        return result, generator.usage


@dataclass
class Running:
    """A submitted request: iterate for its events; leaving early (client gone) cancels generation."""

    request: Request
    queue: asyncio.Queue

    async def events(self) -> AsyncIterator[Event]:
        try:
            while True:
                event = await self.queue.get()
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            self.request.cancel()  # no-op once finished; stops the row when the consumer went away


class EngineGenerator:
    """A `Generator` whose completions go through the server's batching engine (for `rag:` models)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.name = server.name
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}

    def render(self, prompt: Prompt) -> str:
        return self.server.renderer.render(prompt)

    def generate(self, prompts: Sequence[Prompt], params: GenerationParams) -> list[str]:
        sinks: list[queue.Queue[Event]] = []
        for prompt in prompts:  # submit all first, so they share the engine's forward passes
            prepared = self.server.prepare(prompt, params.max_new_tokens, GenerationParams(**vars(params)), Target("base"))
            sink: queue.Queue[Event] = queue.Queue()
            try:
                self.server.engine.submit(Request(prepared.prompt_ids, prepared.params, sink.put, BASE))
            except InvalidRequest as exc:
                raise ServeError(400, str(exc), exc.field) from exc
            sinks.append(sink)
        outputs = []
        for sink in sinks:
            text = ""
            while not isinstance(event := sink.get(), Finished):
                text += event.text if isinstance(event, Delta) else ""
            if event.reason in ("error", "unavailable"):
                raise ServeError(503 if event.reason == "unavailable" else 500, f"generation failed: {event.error}")
            self.usage["prompt_tokens"] += event.prompt_tokens
            self.usage["completion_tokens"] += event.completion_tokens
            outputs.append(text)
        return outputs


def _open_index(name: str, path: str):
    try:
        from attune.rag import open_index
    except ModuleNotFoundError as exc:
        raise AttuneError(f"--rag {name}={path}: RAG is not available in this installation ({exc.name} is missing)") from exc
    return open_index(path)
