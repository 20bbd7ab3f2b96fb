"""Stored login: a per-user JSON file (mode 0600), overridden by GHAF_URL / GHAF_TOKEN."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ghaf.core.errors import InvalidInput, Unauthenticated


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str


API_PATH = "/api/v1"


def normalise_url(url: str, *, what: str = "the server URL") -> str:
    """The server's root URL from what a person pasted: surrounding spaces, a trailing
    ``/`` and a trailing ``/api/v1`` (the API's prefix, which the SDK adds itself) are
    dropped; anything but an ``http(s)://host`` URL is refused, naming ``what``."""
    cleaned = url.strip().rstrip("/")
    if cleaned.endswith(API_PATH):
        cleaned = cleaned[: -len(API_PATH)].rstrip("/")
    parts = urlsplit(cleaned)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(
            f"{what} {url!r} is not an http:// or https:// URL of a ghaf server "
            "(for example http://127.0.0.1:8080)",
            field="url",
        )
    if parts.query or parts.fragment:
        raise InvalidInput(
            f"{what} {url!r} has a query or fragment; give the server's root URL "
            "(for example http://127.0.0.1:8080)",
            field="url",
        )
    return cleaned


def credentials_path() -> Path:
    """``$GHAF_CREDENTIALS`` or ``$XDG_CONFIG_HOME/ghaf/credentials.json``."""
    explicit = os.environ.get("GHAF_CREDENTIALS")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ghaf" / "credentials.json"


def save(credentials: Credentials) -> Path:
    """Write the file atomically, readable by its owner only."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": credentials.url, "token": credentials.token}, handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def forget() -> bool:
    path = credentials_path()
    if path.exists():
        path.unlink()
        return True
    return False


def load(*, url: str | None = None, token: str | None = None) -> Credentials:
    """Explicit values first, then GHAF_URL / GHAF_TOKEN, then the stored file."""
    stored: dict[str, str] = {}
    path = credentials_path()
    if path.exists() and (url is None or token is None):
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            raise InvalidInput(f"{path} is not valid JSON; run `ghaf login` again") from None
    what = (
        "the url given"
        if url
        else "GHAF_URL"
        if os.environ.get("GHAF_URL")
        else f"the url stored in {path}"
    )
    url = url or os.environ.get("GHAF_URL") or stored.get("url")
    token = token or os.environ.get("GHAF_TOKEN") or stored.get("token")
    if not url or not token:
        raise Unauthenticated(
            "not logged in: run `ghaf login --url URL --token TOKEN` or set GHAF_URL and GHAF_TOKEN"
        )
    return Credentials(url=normalise_url(url, what=what), token=token)
