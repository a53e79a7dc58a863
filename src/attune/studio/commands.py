"""`attune studio`: parse, check the bind, serve the app with uvicorn on a socket bound here.

The socket is bound before uvicorn starts, so a port in use is a clear error (and `--port 0`
picks a free one, printed with the URL).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from attune.errors import AttuneError

console = Console()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or an AttuneError naming the port when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AttuneError(f"port {port} on {host} is already in use (another studio or server?); "
                              "pick another with --port, or --port 0 for any free one") from None
        raise AttuneError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def studio(
    runs: Path = typer.Option(Path("runs"), "--runs", help="the runs directory to show and to start runs in"),
    data: Path = typer.Option(Path("."), "--data", help="the directory whose data files the Data and Arena pages may open"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; anything but loopback needs --token"),
    port: int = typer.Option(7860, "--port", help="port (0 = any free one)"),
    token: Optional[str] = typer.Option(None, "--token", envvar="ATTUNE_STUDIO_TOKEN",
                                        help="required for non-loopback binds: open the printed URL once to log in"),
) -> None:
    """The local web app: runs with live curves, new runs (start / stop / resume), data, an arena that collects preferences, the advisor."""
    import uvicorn

    from attune.studio.app import create_app
    from attune.studio.security import check_bind
    from attune.studio.settings import StudioSettings

    settings = StudioSettings(runs=runs, data=data, host=host, port=port, token=token)
    check_bind(settings)
    if not settings.data.is_dir():
        raise AttuneError(f"--data {data}: not a directory")
    settings.runs.mkdir(parents=True, exist_ok=True)
    sock = bind(host, port)
    settings.port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{settings.port}/" + (f"?token={token}" if token else "")
    console.print(f"attune studio on [bold]{url}[/bold]  (runs: {settings.runs}, data: {settings.data})", soft_wrap=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", timeout_graceful_shutdown=2))
    server.run(sockets=[sock])
