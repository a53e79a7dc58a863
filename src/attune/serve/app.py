"""The HTTP layer: OpenAI-compatible endpoints over a `Server`, with SSE streaming.

    POST /v1/chat/completions   POST /v1/completions      GET /v1/models
    GET  /v1/adapters           POST /v1/adapters (admin) DELETE /v1/adapters/{name} (admin)
    GET  /health                GET  /metrics (Prometheus)

Responses carry OpenAI's fields plus an `attune` object (which adapter answered, route scores)
and, for `rag:` models, `citations`; clients that do not know these fields ignore them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from attune.errors import AttuneError
from attune.models.engine import Delta, Finished, QueueFull
from attune.serve.errors import ServeError, error_body
from attune.serve.schemas import AdapterLoad, ChatCompletionRequest, CompletionRequest
from attune.serve.server import Running, Server

log = logging.getLogger("attune.serve")
FAILED = {"error": 500, "unavailable": 503}  # a Finished reason that is a failure -> its HTTP status


def create_app(server: Server) -> FastAPI:
    """A FastAPI app serving `server`; the engine starts and stops with the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = FastAPI(title="attune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.openapi = lambda: _openapi(app)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        """The API's schema, behind the API key like every endpoint but /health."""
        server.auth.check(request.headers.get("authorization"))
        return JSONResponse(app.openapi())

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        headers = {"Retry-After": str(server.engine.retry_after())} if exc.status == 429 else None
        return JSONResponse(error_body(exc.status, str(exc), exc.param, exc.code), exc.status, headers=headers)

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(error_body(429, str(exc), code="queue_full"), 429, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(AttuneError)
    async def _attune_error(request: Request, exc: AttuneError) -> JSONResponse:
        return JSONResponse(error_body(400, str(exc)), 400)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while the engine runs; 503 while it is down (it restarts by itself), with the reason."""
        engine = server.engine
        body = {"status": "ok" if engine.healthy else "unhealthy", "model": server.name, "active": engine.active,
                "waiting": engine.waiting, "restarts": engine.stats.restarts}
        if not engine.healthy:
            body["error"] = engine.failure
        return JSONResponse(body, 200 if engine.healthy else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        server.auth.check(request.headers.get("authorization"))
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        server.auth.check(request.headers.get("authorization"))
        now = int(time.time())
        data = [{"object": "model", "created": now, "owned_by": "attune", **e} for e in server.model_names()]
        return {"object": "list", "data": data}

    @app.get("/v1/adapters")
    async def list_adapters(request: Request) -> dict[str, Any]:
        server.auth.check(request.headers.get("authorization"))
        return {"resident": server.registry.resident, "max_resident": server.registry.max_resident,
                "adapters": [e for e in server.model_names() if e["attune"]["kind"] == "adapter"]}

    @app.post("/v1/adapters", openapi_extra=_body(AdapterLoad))
    async def add_adapter(request: Request) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        server.auth.check(request.headers.get("authorization"), admin=True)
        body = _parse(AdapterLoad, await _read(request, server))
        if body.name in server.names or body.name.startswith(("mix:", "route:", "rag:")):
            raise ServeError(400, f"adapter name {body.name!r} is taken", "name")
        info = await run_in_threadpool(server.registry.add, body.name, body.path, runtime=True, description=body.description)
        log.info("adapter added name=%s rank=%d", info.name, info.rank)
        return {"id": info.name, "object": "model", "parent": server.name, "rank": info.rank}

    @app.delete("/v1/adapters/{name}")
    async def delete_adapter(name: str, request: Request) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        server.auth.check(request.headers.get("authorization"), admin=True)
        await run_in_threadpool(server.registry.remove, name)
        log.info("adapter removed name=%s", name)
        return {"id": name, "object": "model", "deleted": True}

    @app.post("/v1/chat/completions", openapi_extra=_body(ChatCompletionRequest))
    async def chat_completions(request: Request) -> Response:
        server.auth.check(request.headers.get("authorization"))
        body = _parse(ChatCompletionRequest, await _read(request, server))
        try:
            messages = body.chat()
        except ValueError as exc:
            raise ServeError(400, str(exc), "messages") from exc
        query = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return await _complete(server, request, body, messages, query, chat=True)

    @app.post("/v1/completions", openapi_extra=_body(CompletionRequest))
    async def completions(request: Request) -> Response:
        server.auth.check(request.headers.get("authorization"))
        body = _parse(CompletionRequest, await _read(request, server))
        return await _complete(server, request, body, body.prompt, body.prompt, chat=False)

    return app


BODIES = (ChatCompletionRequest, CompletionRequest, AdapterLoad)


def _body(model: type) -> dict[str, Any]:
    """OpenAPI for a JSON body the handler reads itself (to enforce --max-body-bytes while reading)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request body models (the handlers parse bodies with pydantic themselves)."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in BODIES:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
    return app.openapi_schema


async def _read(request: Request, server: Server) -> bytes:
    """The request body, refusing (413) more than --max-body-bytes without reading it all."""
    limit = server.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServeError(413, f"request body is {declared} bytes; this server's limit is {limit} (--max-body-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServeError(413, f"request body exceeds this server's limit of {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(model: type, raw: bytes):
    """Validate a JSON body; errors name each bad field (422, as FastAPI would)."""
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        first = ".".join(map(str, exc.errors()[0]["loc"])) if exc.errors() else None
        raise ServeError(422, f"invalid request: {problems}", first) from exc


async def _complete(server: Server, request: Request, body, prompt, query: str, chat: bool) -> Response:
    """Shared by both completion endpoints: resolve the model, apply limits, run, format."""
    from starlette.concurrency import run_in_threadpool

    started = time.monotonic()
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    endpoint = "chat" if chat else "completions"
    status, finish, usage = 200, "error", {"prompt_tokens": 0, "completion_tokens": 0}
    params = body.params(0)
    live_stream = False  # a token stream records its time when it ends
    try:
        target = await run_in_threadpool(server.resolve, body.model, query)
        if target.kind == "rag":
            server.prepare(prompt, body.requested_tokens(), params, target)  # the question itself must fit the limits
            result, usage = await run_in_threadpool(server.grounded, target.info["index"], query, params)
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            finish = "stop"
            extra = {"citations": [{"index": n, **p.to_dict()} for n, p in zip(result.citations, result.sources)],
                     "attune": {**target.info, "abstained": result.abstained, "dropped_citations": result.dropped_citations,
                                "retrieved": len(result.passages)}}
            _log(server, rid, body.model, 200, usage, started, finish, prompt, result.answer)
            if body.stream:
                return _sse(_single_chunks(rid, body.model, chat, result.answer, usage, extra, body))
            return JSONResponse(_response(rid, body.model, chat, result.answer, finish, usage, extra))
        prepared = await run_in_threadpool(server.prepare, prompt, body.requested_tokens(), params, target)
        extra = {"attune": target.info}
        running = await server.submit(prepared)
        if body.stream:
            live_stream = True
            return _sse(_stream(server, running, rid, body, chat, extra, started, prompt))
        text, done = await _collect(server, request, running)
        text = server.renderer.reply(text, prompt)
        finish, usage = done.reason, _usage(done)
        if finish == "cancelled":
            status = 499
            return Response(status_code=499)
        if finish in FAILED:
            raise ServeError(FAILED[finish], f"generation failed: {done.error}")
        _log(server, rid, body.model, 200, usage, started, finish, prompt, text)
        return JSONResponse(_response(rid, body.model, chat, text, finish, usage, extra),
                            headers={"x-attune-adapter": str(target.info.get("adapter") or server.name)})
    except (AttuneError, QueueFull) as exc:  # ServeError is an AttuneError
        status = getattr(exc, "status", 429 if isinstance(exc, QueueFull) else 400)
        _log(server, rid, body.model, status, usage, started, finish, prompt, None)
        raise
    except BaseException:
        status = 500
        raise
    finally:
        if not live_stream:  # a token stream logs and counts its own outcome when it ends
            server.metrics.requests.labels(endpoint, str(status)).inc()
            if status == 200:
                _finished(server, endpoint, started)


def _finished(server: Server, endpoint: str, started: float) -> None:
    server.metrics.latency.labels(endpoint).observe(time.monotonic() - started)


async def _collect(server: Server, request: Request, running: Running) -> tuple[str, Finished]:
    """Run to completion. A watcher waits for the client's disconnect message and cancels the request at
    once; the engine drops the row before its next decode step (or skips it if it is still queued)."""
    import asyncio

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        running.request.cancel()

    watcher = asyncio.create_task(watch())
    text = ""
    try:
        async for event in running.events():  # ends with the Finished event
            if isinstance(event, Delta):
                text += event.text
        server.metrics.prompt_tokens.inc(event.prompt_tokens)
        server.metrics.completion_tokens.inc(event.completion_tokens)
        return text, event
    finally:
        watcher.cancel()


async def _stream(server: Server, running: Running, rid: str, body, chat: bool, extra: dict, started: float,
                  prompt) -> AsyncIterator[str]:
    """SSE chunks as tokens arrive; ends with `data: [DONE]`. Closing the connection cancels generation."""
    created = int(time.time())
    text = ""
    usage: dict[str, int] = {}
    status, finish = 499, "cancelled"  # until the engine says otherwise: the client left
    events = running.events()
    try:
        if chat:
            yield _chunk(rid, body.model, created, chat, {"role": "assistant", "content": ""}, None, extra)
        async for event in events:
            if isinstance(event, Delta):
                piece = event.text if text else server.renderer.reply(event.text, prompt)
                text += piece
                yield _chunk(rid, body.model, created, chat, {"content": piece} if chat else piece, None, None)
            elif isinstance(event, Finished):
                usage = _usage(event)
                status, finish = FAILED.get(event.reason, 200), event.reason
                server.metrics.prompt_tokens.inc(event.prompt_tokens)
                server.metrics.completion_tokens.inc(event.completion_tokens)
                if event.reason in FAILED:
                    yield f"data: {json.dumps(error_body(FAILED[event.reason], f'generation failed: {event.error}'))}\n\n"
                    break
                yield _chunk(rid, body.model, created, chat, {} if chat else "", event.reason, extra if not chat else None)
                if body.stream_options and body.stream_options.include_usage:
                    yield _usage_chunk(rid, body.model, created, chat, usage)
    finally:  # also runs when the client disconnects mid-stream: stop generating for it
        running.request.cancel()
        await events.aclose()
        endpoint = "chat" if chat else "completions"
        _log(server, rid, body.model, status, usage, started, finish, prompt, text)
        server.metrics.requests.labels(endpoint, str(status)).inc()
        if status == 200:
            _finished(server, endpoint, started)
    yield "data: [DONE]\n\n"


async def _single_chunks(rid: str, model: str, chat: bool, text: str, usage: dict, extra: dict, body) -> AsyncIterator[str]:
    """A finished answer (RAG) as a stream: role, the whole text, the finish chunk, [DONE]."""
    created = int(time.time())
    if chat:
        yield _chunk(rid, model, created, chat, {"role": "assistant", "content": ""}, None, None)
    yield _chunk(rid, model, created, chat, {"content": text} if chat else text, None, None)
    yield _chunk(rid, model, created, chat, {} if chat else "", "stop", extra)
    if body.stream_options and body.stream_options.include_usage:
        yield _usage_chunk(rid, model, created, chat, usage)
    yield "data: [DONE]\n\n"


def _sse(chunks: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _chunk(rid: str, model: str, created: int, chat: bool, delta, finish: str | None, extra: dict | None) -> str:
    if chat:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        obj = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice]}
    else:
        choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
        obj = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": [choice]}
    return f"data: {json.dumps({**obj, **(extra or {})})}\n\n"


def _usage_chunk(rid: str, model: str, created: int, chat: bool, usage: dict) -> str:
    kind = "chat.completion.chunk" if chat else "text_completion"
    return f"data: {json.dumps({'id': rid, 'object': kind, 'created': created, 'model': model, 'choices': [], 'usage': usage})}\n\n"


def _response(rid: str, model: str, chat: bool, text: str, finish: str, usage: dict, extra: dict) -> dict:
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        kind = "text_completion"
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": [choice], "usage": usage, **extra}


def _usage(event: Finished) -> dict[str, int]:
    return {"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens,
            "total_tokens": event.prompt_tokens + event.completion_tokens}


def _log(server: Server, rid: str, model: str, status: int, usage: dict, started: float, finish: str, prompt, output) -> None:
    """One line per request; prompt and output text only with --log-prompts."""
    log.info("%s model=%s status=%d prompt_tokens=%d completion_tokens=%d seconds=%.3f finish=%s", rid, model, status,
             usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), time.monotonic() - started, finish)
    if server.settings.log_prompts:
        log.info("%s prompt=%s output=%s", rid, json.dumps(prompt), json.dumps(output))
