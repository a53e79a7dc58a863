"""The studio's two guards: who may connect, and which files an endpoint may touch.

A loopback bind needs no token (but honours one if set); any other bind refuses to start without
one. The token arrives once as `?token=` (then lives in an HttpOnly cookie) or as a Bearer header,
and is compared in constant time. On loopback the Host header must be a loopback name, so a web
page on another origin cannot reach the studio through DNS rebinding.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from attune.errors import AttuneError
from attune.studio.settings import LOOPBACK, StudioSettings

COOKIE = "attune_studio_token"


class NotAllowed(AttuneError):
    """A path outside the studio's roots, or a request without the token."""


def check_bind(settings: StudioSettings) -> None:
    """Refuse a non-loopback bind without a token, and tokens too short to resist guessing."""
    if not settings.loopback and not settings.token:
        raise AttuneError(f"refusing to bind {settings.host}: a non-loopback address needs --token "
                          "(or ATTUNE_STUDIO_TOKEN); on 127.0.0.1 none is needed")
    if settings.token is not None and len(settings.token) < 12:
        raise AttuneError("--token must be at least 12 characters long")


def token_ok(settings: StudioSettings, given: str | None) -> bool:
    if not settings.token:
        return True
    return given is not None and hmac.compare_digest(given.encode(), settings.token.encode())


def host_ok(settings: StudioSettings, host_header: str | None) -> bool:
    """On a loopback bind only loopback Host names are served (DNS-rebinding guard)."""
    if not settings.loopback:
        return True
    host = host_header or ""
    if host.startswith("["):  # [::1]:7860
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host in LOOPBACK


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, symlinks resolved, only if it stays inside `root` (else `NotAllowed`)."""
    if not relative or "\x00" in relative:
        raise NotAllowed("no such file")
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise NotAllowed(f"{relative!r} is outside the studio's directories")
    return candidate


def user_path(settings: StudioSettings, path: str) -> Path:
    """A path a user picked: `builtin:NAME` (packaged data), or a file under the data or runs root."""
    if path.startswith("builtin:"):
        from attune.builtin import resolve_path

        return resolve_path(path)
    p = Path(path)
    if p.is_absolute():
        resolved = p.resolve()
        if any(resolved.is_relative_to(r) for r in (settings.data, settings.runs)):
            return resolved
        raise NotAllowed(f"{path!r} is outside the studio's directories ({settings.data}, {settings.runs})")
    return inside(settings.data, path)
