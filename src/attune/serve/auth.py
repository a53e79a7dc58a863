"""Bearer-token checks. Keys are compared in constant time; which key was used is never logged."""

from __future__ import annotations

import hmac
from pathlib import Path

from attune.errors import AttuneError
from attune.serve.errors import ServeError


def read_keys_file(path: str | Path) -> tuple[list[str], list[str]]:
    """(api keys, admin keys) from a file: one key per line, `admin:KEY` for admin keys, `#` comments."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise AttuneError(f"{path}: cannot read the keys file ({exc.strerror})") from exc
    keys, admin = [], []
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        if line.startswith("admin:"):
            admin.append(line.removeprefix("admin:").strip())
        else:
            keys.append(line)
    if not keys and not admin:
        raise AttuneError(f"{path}: no keys in the keys file")
    return keys, admin


class Auth:
    """Who may call what: API keys for the API, admin keys for adapter management."""

    def __init__(self, api_keys: list[str], admin_keys: list[str], loopback: bool) -> None:
        if not api_keys and not admin_keys and not loopback:
            raise AttuneError("refusing to serve on a non-loopback address without an API key: pass --api-key or --keys-file")
        short = [k for k in api_keys + admin_keys if len(k) < 8]
        if short:
            raise AttuneError("API keys must be at least 8 characters long")
        self.admin_keys = [k.encode() for k in admin_keys]
        self.api_keys = [k.encode() for k in api_keys] + self.admin_keys
        self.open = not self.api_keys  # loopback, no keys configured

    def check(self, authorization: str | None, admin: bool = False) -> None:
        """Raise 401 for a missing or unknown key, 403 for a non-admin key on an admin endpoint."""
        if admin and not self.admin_keys:
            raise ServeError(403, "admin endpoints are disabled: start the server with --admin-key")
        if self.open and not admin:
            return
        token = _bearer(authorization)
        if token is None or not _known(token, self.api_keys):
            raise ServeError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')", code="invalid_api_key")
        if admin and not _known(token, self.admin_keys):
            raise ServeError(403, "this endpoint needs an admin key")


def _bearer(header: str | None) -> bytes | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" and token.strip() else None


def _known(token: bytes, keys: list[bytes]) -> bool:
    found = False
    for key in keys:  # no early exit: the time taken does not depend on which key matched
        found |= hmac.compare_digest(token, key)
    return found
