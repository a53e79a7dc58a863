"""The studio's FastAPI app: server-rendered pages (Jinja2) plus JSON and SSE endpoints for their scripts.

Pages: /  (runs)  /run/ID  /new  /data  /arena  /advise.  Every user error is an `AttuneError`
returned as `{"error": message}` with status 400 (404 for paths outside the roots), and the page
shows the message as the CLI would print it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from attune.errors import AttuneError
from attune.studio import advise_view, data_view, recipes
from attune.studio.arena import Arena, Candidate, read_votes, win_table
from attune.studio.jobs import Jobs, log_tail
from attune.studio.runs_view import list_runs, read_metrics, run_view
from attune.studio.security import COOKIE, NotAllowed, host_ok, inside, token_ok, user_path
from attune.studio.settings import StudioSettings

HERE = Path(__file__).parent
POLL_SECONDS = 0.5
DEFAULT_PAIRS = "arena/preferences.jsonl"


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def create_app(settings: StudioSettings) -> FastAPI:
    """The app for one studio process; `settings` fixes its roots and who may connect."""
    app = FastAPI(title="attune studio", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    jobs = Jobs(settings)
    arena = Arena()
    app.state.settings, app.state.jobs, app.state.arena = settings, jobs, arena

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if not host_ok(settings, request.headers.get("host")):
            return JSONResponse({"error": "this studio answers on its loopback address only"}, status_code=403)
        if settings.token:
            query = request.query_params.get("token")
            if query is not None and token_ok(settings, query):
                response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
                response.set_cookie(COOKIE, query, httponly=True, samesite="strict")
                return response
            header = request.headers.get("authorization", "")
            given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else request.cookies.get(COOKIE)
            if not token_ok(settings, given):
                return JSONResponse({"error": "this studio needs its token: open the URL it printed (…?token=…)"},
                                    status_code=401)
        return await call_next(request)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed):
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(AttuneError)
    async def user_error(request: Request, exc: AttuneError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"page": name.removesuffix(".html"), "settings": settings, **context})

    def run_dir(run_id: str) -> Path:
        path = inside(settings.runs, run_id)
        if not (path / "recipe.yaml").is_file():
            raise NotAllowed(f"no run {run_id!r} under {settings.runs}")
        return path

    # ---------- pages ----------
    @app.get("/", response_class=HTMLResponse)
    async def runs_page(request: Request):
        return page(request, "runs.html", runs=list_runs(settings.runs, jobs.live("train")))

    @app.get("/run/{run_id:path}", response_class=HTMLResponse)
    async def run_page(request: Request, run_id: str):
        view = run_view(settings.runs, run_dir(run_id), jobs.live("train"))
        others = [r.id for r in list_runs(settings.runs, jobs.live("train")) if r.id != view.id]
        return page(request, "run.html", run=view, others=others)

    @app.get("/new", response_class=HTMLResponse)
    async def new_page(request: Request):
        return page(request, "new.html", builtin=recipes.builtin_recipes(), saved=recipes.saved_recipes(settings),
                    local=recipes.local_recipes(settings),
                    choices=recipes.form_choices(), data_files=data_view.data_files(settings.data))

    @app.get("/data", response_class=HTMLResponse)
    async def data_page(request: Request):
        from attune.builtin import list_builtins

        builtin = [b.removesuffix(".jsonl") for b in list_builtins() if b.startswith("builtin:data/")]
        return page(request, "data.html", files=data_view.data_files(settings.data), builtin=builtin)

    @app.get("/arena", response_class=HTMLResponse)
    async def arena_page(request: Request):
        finished = [r for r in list_runs(settings.runs, jobs.live("train")) if r.status == "finished"]
        adapters = [str(r.path / "stages" / s.name / "adapter") for r in finished for s in r.stages
                    if (r.path / "stages" / s.name / "adapter").is_dir()]
        return page(request, "arena.html", adapters=adapters, config=arena.config, names=arena.names(), pairs=DEFAULT_PAIRS)

    @app.get("/advise", response_class=HTMLResponse)
    async def advise_page(request: Request):
        return page(request, "advise.html", fields=advise_view.form_fields())

    # ---------- runs ----------
    @app.get("/api/runs")
    async def api_runs():
        return [_run_json(r) for r in list_runs(settings.runs, jobs.live("train"))]

    @app.get("/api/run/{run_id:path}/metrics")
    async def api_metrics(run_id: str):
        run = run_dir(run_id)
        view = run_view(settings.runs, run, jobs.live("train"))
        return {s.name: read_metrics(run / "stages" / s.name / "metrics.jsonl")[0] for s in view.stages}

    @app.get("/api/run/{run_id:path}/stream")
    async def api_stream(run_id: str):
        run = run_dir(run_id)
        return StreamingResponse(_follow(run), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    async def _follow(run: Path) -> AsyncIterator[str]:
        """Every metrics row as it is appended (a resume that rewinds a file starts that stage over)."""
        offsets: dict[str, int] = {}
        last_status = None
        yield _sse("reset", {})
        while True:
            view = await run_in_threadpool(run_view, settings.runs, run, jobs.live("train"))
            for s in view.stages:
                path = run / "stages" / s.name / "metrics.jsonl"
                size = path.stat().st_size if path.is_file() else 0
                if size < offsets.get(s.name, 0):
                    offsets[s.name] = 0
                    yield _sse("reset-stage", {"stage": s.name})
                rows, offsets[s.name] = read_metrics(path, offsets.get(s.name, 0))
                if rows:
                    yield _sse("rows", {"stage": s.name, "rows": rows})
            status = _run_json(view)
            if status != last_status:
                yield _sse("status", status)
                last_status = status
            if view.status != "running":
                yield _sse("end", {"status": view.status})
                return
            await asyncio.sleep(POLL_SECONDS)

    @app.post("/api/run/{run_id:path}/stop")
    async def api_stop(run_id: str):
        return {"stopped": await run_in_threadpool(jobs.stop, run_dir(run_id))}

    @app.post("/api/run/{run_id:path}/resume")
    async def api_resume(run_id: str):
        await run_in_threadpool(jobs.resume, run_dir(run_id))
        return {"ok": True}

    @app.post("/api/run/{run_id:path}/compare")
    async def api_compare(run_id: str):
        await run_in_threadpool(jobs.compare, run_dir(run_id))
        return {"ok": True}

    @app.get("/api/run/{run_id:path}/log")
    async def api_log(run_id: str, kind: str = "train"):
        if kind not in ("train", "compare"):
            raise AttuneError(f"log kind is train or compare, not {kind!r}")
        return {"log": log_tail(run_dir(run_id), kind)}

    @app.get("/files/runs/{rel:path}")
    async def run_file(rel: str):
        return _file(inside(settings.runs, rel))

    @app.get("/files/data/{rel:path}")
    async def data_file(rel: str):
        return _file(inside(settings.data, rel))

    # ---------- new run ----------
    @app.get("/api/recipe")
    async def api_recipe(ref: str):
        return {"text": recipes.recipe_text(settings, ref)}

    @app.post("/api/recipe/check")
    async def api_check(request: Request):
        body = await _json(request)
        recipe = await run_in_threadpool(recipes.check_text, settings, str(body.get("text", "")))
        from attune.recipe import dump_recipe

        return {"ok": True, "name": recipe.name, "resolved": dump_recipe(recipe)}

    @app.post("/api/recipe/form")
    async def api_form(request: Request):
        body = await _json(request)
        form = dict(body)
        if form.get("data"):
            form["data"] = str(user_path(settings, str(form["data"])) if not str(form["data"]).startswith("builtin:")
                               else form["data"])
        return {"text": recipes.form_to_yaml(form)}

    @app.post("/api/runs/start")
    async def api_start(request: Request):
        body = await _json(request)
        text, ref = str(body.get("text", "")), str(body.get("ref") or "")
        picked = recipes.recipe_file(settings, ref) if ref else None
        if picked is not None and picked.read_text() == text:  # unedited: run the file itself
            file = picked
        else:
            file = await run_in_threadpool(recipes.save_text, settings, text)
        run = await run_in_threadpool(jobs.start_training, file)
        return {"run": str(run.relative_to(settings.runs))}

    # ---------- data ----------
    @app.get("/api/data/check")
    async def api_data_check(path: str, format: str = "auto"):
        return await run_in_threadpool(data_view.check, user_path(settings, path), format)

    @app.get("/api/data/inspect")
    async def api_data_inspect(path: str, model: str = "builtin:smollm2-135m-instruct", n: int = 3, max_length: int = 1024,
                               format: str = "auto"):
        return await run_in_threadpool(data_view.inspect, user_path(settings, path), model, min(max(n, 1), 20), max_length, format)

    # ---------- arena ----------
    @app.post("/api/arena/load")
    async def api_arena_load(request: Request):
        body = await _json(request)
        adapters = {k: str(user_path(settings, v)) for k, v in _pairs(body.get("adapters", "")).items()}
        rag = {k: str(user_path(settings, v)) for k, v in _pairs(body.get("rag", "")).items()}
        routes = {k: [a.strip() for a in v.split(",") if a.strip()] for k, v in _pairs(body.get("routes", "")).items()}
        describe = _pairs(body.get("describe", ""))
        model = str(body.get("model", "")).strip()
        if not model:
            raise AttuneError("the arena needs a base model reference (builtin:NAME or a local model dir)")
        names = await run_in_threadpool(arena.load, model, adapters, rag, routes, describe)
        return {"names": names}

    @app.post("/api/arena/round")
    async def api_arena_round(request: Request):
        body = await _json(request)
        cands = {}
        for side in ("a", "b"):
            c = body.get(side) or {}
            pool = str(user_path(settings, c["pool"])) if c.get("pool") else None
            cands[side] = Candidate(str(c.get("model", "")), str(c.get("strategy") or "zero-shot"), int(c.get("k") or 3), pool,
                                    c.get("system") or None)
        rnd = arena.new_round(str(body.get("prompt", "")), cands["a"], cands["b"])
        return {"round": rnd.id, "a": cands["a"].label, "b": cands["b"].label}

    @app.get("/api/arena/stream/{round_id}/{side}")
    async def api_arena_stream(round_id: str, side: str, max_tokens: int = 128, temperature: float = 0.0):
        async def events() -> AsyncIterator[str]:
            try:
                async for piece in arena.stream(round_id, side, min(max(max_tokens, 1), 1024), min(max(temperature, 0.0), 2.0)):
                    yield _sse("delta", {"text": piece})
                yield _sse("done", {})
            except Exception as exc:  # the page shows it in the answer's box
                yield _sse("failed", {"error": str(exc)})
        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.post("/api/arena/vote")
    async def api_arena_vote(request: Request):
        body = await _json(request)
        pairs = user_path(settings, str(body.get("pairs") or DEFAULT_PAIRS))
        result = await run_in_threadpool(arena.vote, str(body.get("round", "")), str(body.get("choice", "")), pairs)
        return {**result, "table": win_table(read_votes(pairs))}

    @app.get("/api/arena/table")
    async def api_arena_table(pairs: str = DEFAULT_PAIRS):
        return {"table": win_table(read_votes(user_path(settings, pairs)))}

    # ---------- advise ----------
    @app.post("/api/advise")
    async def api_advise(request: Request):
        return await run_in_threadpool(advise_view.advice_data, await _json(request))

    @app.post("/api/advise/recipe")
    async def api_advise_recipe(request: Request):
        body = await _json(request)
        return {"text": advise_view.draft_recipe(str(body.get("method", "")), body.get("form") or {})}

    return app


def _run_json(view) -> dict[str, Any]:
    return {"id": view.id, "name": view.name, "model": view.model, "status": view.status, "pid": view.pid,
            "has_report": view.has_report, "stages": [asdict(s) for s in view.stages],
            "exit_code": view.job.get("exit_code")}


def _file(path: Path) -> Response:
    if not path.is_file():
        raise NotAllowed("no such file")
    return FileResponse(path)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise AttuneError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise AttuneError("the request body must be a JSON object")
    return body


def _pairs(text: str) -> dict[str, str]:
    """`name=value` lines (blank lines ignored) as a mapping; a line without `=` is an error."""
    out = {}
    for n, line in enumerate(str(text).splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise AttuneError(f"line {n}: expected NAME=VALUE, got {line.strip()!r}")
        out[name.strip()] = value.strip()
    return out
