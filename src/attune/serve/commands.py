"""`attune serve`: parse the command line into `ServeSettings` and run the server (or exec vLLM)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from attune.errors import AttuneError


def _pairs(values: list[str], flag: str, example: str) -> dict[str, str]:
    """NAME=VALUE options into a dict; a malformed one names the flag and shows the form."""
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise AttuneError(f"{flag} {item!r}: expected {example}")
        if name.strip() in out:
            raise AttuneError(f"{flag}: {name.strip()!r} is given twice")
        out[name.strip()] = value.strip()
    return out


def serve(
    model: str = typer.Option(..., "--model", "-m", help="base model reference (builtin:NAME, dir, .gguf, hub id)"),
    adapter: list[str] = typer.Option([], "--adapter", "-a", help="NAME=DIR: serve a LoRA adapter as model NAME (repeatable)"),
    served_model_name: list[str] = typer.Option(
        [], "--served-model-name", "--name",
        help="the base model's name(s) in the API, first canonical (repeatable; default: the --model string as given, "
        "plus its last path part)"),
    describe: list[str] = typer.Option([], "--describe", help="NAME=TEXT or NAME=@data.jsonl: what an adapter is for (routing)"),
    route: list[str] = typer.Option([], "--route", help="NAME=A,B,...: serve route:NAME, choosing among adapters A, B, ..."),
    rag: list[str] = typer.Option([], "--rag", help="NAME=INDEX_DIR: serve rag:NAME, answering from a RAG index"),
    rag_k: int = typer.Option(4, "--rag-k", help="passages retrieved per rag: question"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; non-loopback needs an API key"),
    port: int = typer.Option(8000, "--port"),
    api_key: list[str] = typer.Option([], "--api-key", envvar="ATTUNE_API_KEY", help="accepted bearer token (repeatable)"),
    keys_file: Optional[Path] = typer.Option(None, "--keys-file", help="file of keys, one per line; admin:KEY for admin keys"),
    admin_key: list[str] = typer.Option([], "--admin-key", envvar="ATTUNE_ADMIN_KEY", help="bearer token for adapter admin"),
    adapter_dir: list[Path] = typer.Option([], "--adapter-dir", help="directory POST /v1/adapters may load from (repeatable)"),
    max_adapters: int = typer.Option(8, "--max-adapters", help="adapters resident at once (LRU beyond)"),
    max_batch: int = typer.Option(16, "--max-batch", help="sequences decoded together per forward pass"),
    max_queue: int = typer.Option(64, "--max-queue", help="requests waiting for a slot before 429"),
    max_prompt_tokens: int = typer.Option(4096, "--max-prompt-tokens"),
    max_output_tokens: int = typer.Option(1024, "--max-output-tokens"),
    log_prompts: bool = typer.Option(False, "--log-prompts", help="log prompt and completion text (off by default)"),
    backend: str = typer.Option("transformers", "--backend", help="transformers (here, CPU or GPU) or vllm (GPU)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="with --backend vllm: print the vllm command and exit"),
) -> None:
    """Serve a model and its adapters behind an OpenAI-compatible API (see docs/serving.md)."""
    from pydantic import ValidationError

    from attune.serve.auth import read_keys_file
    from attune.serve.settings import ServeSettings

    keys, admin = list(api_key), list(admin_key)
    if keys_file is not None:
        more, more_admin = read_keys_file(keys_file)
        keys, admin = keys + more, admin + more_admin
    routes = {r: [a.strip() for a in v.split(",") if a.strip()] for r, v in _pairs(route, "--route", "NAME=A,B").items()}
    try:
        settings = ServeSettings(
            model=model, served_model_name=served_model_name, adapters=_pairs(adapter, "--adapter", "NAME=DIR"),
            describe=_pairs(describe, "--describe", "NAME=TEXT or NAME=@data.jsonl"), routes=routes,
            rag=_pairs(rag, "--rag", "NAME=INDEX_DIR"), rag_k=rag_k, backend=backend, host=host, port=port,
            api_keys=keys, admin_keys=admin, adapter_dirs=[str(d) for d in adapter_dir], max_adapters=max_adapters,
            max_batch=max_batch, max_queue=max_queue, max_prompt_tokens=max_prompt_tokens,
            max_output_tokens=max_output_tokens, log_prompts=log_prompts,
        )
    except ValidationError as exc:
        raise AttuneError("; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())) from exc
    if settings.backend == "vllm":
        from attune.serve.vllm import exec_vllm

        cmd = exec_vllm(settings, dry_run=dry_run)
        print(json.dumps(cmd))
        return
    if dry_run:
        raise AttuneError("--dry-run applies to --backend vllm only")
    run_server(settings)


def run_server(settings) -> None:
    """Load everything, then serve with uvicorn until interrupted."""
    import uvicorn

    from attune.serve.app import create_app
    from attune.serve.server import Server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = Server(settings)
    typer.echo(f"attune: serving {', '.join(server.names)} with {len(server.registry.known)} adapter(s) on http://{settings.host}:{settings.port}/v1"
               + ("" if server.auth.api_keys else " (no API key: loopback only)"), err=True)
    uvicorn.run(create_app(server), host=settings.host, port=settings.port, log_level="info")
