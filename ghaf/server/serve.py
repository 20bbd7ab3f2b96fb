"""Running the ASGI app under uvicorn with ghaf's settings."""

from __future__ import annotations

import errno
import logging
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ghaf.core.database import Database
from ghaf.core.errors import Unavailable
from ghaf.core.logging import configure_logging
from ghaf.core.migrate import check_schema
from ghaf.core.settings import Settings
from ghaf.platform.slow_clients import HeaderDeadline
from ghaf.security.keyring import DatabaseKeyring
from ghaf.server.app import DOCS_URL, create_app

log = logging.getLogger("ghaf.server")


class AddressInUse(Unavailable):
    """The server's address (host and port) is taken by another process: ``ghaf
    server`` exits with code 3 (docs/operations.md) before it opens anything."""


def bind_socket(settings: Settings) -> socket.socket:
    """The listening socket, bound before the app is built: a taken port fails here,
    with one clear error, before the runtime opens (and so before a shutdown could
    write an audit checkpoint for a server that never ran)."""
    host = settings.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        sock.bind((host, settings.port))
    except OSError as exc:
        sock.close()
        where = (
            f"[{host}]:{settings.port}" if family == socket.AF_INET6 else f"{host}:{settings.port}"
        )
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(
                f"cannot listen on {where}: the address is already in use (another ghaf "
                "server?); stop that process or choose another --port / GHAF_PORT",
                field="port",
            ) from None
        raise Unavailable(
            f"cannot listen on {where}: {exc.strerror or exc}", field="host"
        ) from None
    sock.set_inheritable(True)
    return sock


def _log_docs_url(settings: Settings, sock: socket.socket) -> None:
    """Where to point a browser: the start-up log names the API docs."""
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - shown only
    if ":" in shown:
        shown = f"[{shown}]"
    scheme = "https" if settings.tls_cert else "http"
    log.info(
        "ghaf listening on %s://%s:%s, API docs at %s://%s:%s%s",
        scheme,
        shown,
        port,
        scheme,
        shown,
        port,
        DOCS_URL,
    )


class GracefulServer(uvicorn.Server):
    """Treat SIGTERM/SIGINT as a normal stop: shut down gracefully, then exit 0.

    uvicorn re-raises the signal after shutdown, which makes a clean stop look like a
    crash (exit -15) to supervisors and scripts.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_server(settings: Settings) -> None:
    """Build the app (refusing an outdated schema) and serve until stopped; with
    ``workers`` > 1, that many processes share the listening socket."""
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    if settings.workers > 1:
        _run_workers(settings)
        return
    sock = bind_socket(settings)
    try:
        app = create_app(settings)
        _log_docs_url(settings, sock)
        GracefulServer(_config(settings, app)).run(sockets=[sock])
    finally:
        sock.close()


class GuardedHttpToolsProtocol(HeaderDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on request headers,
    and chunked trailers kept out of them (ghaf/platform/slow_clients.py)."""


def http_protocol(settings: Settings) -> Any:
    """The protocol every listener serves (``uvicorn.Config(http=...)``): slow or huge
    request headers are cut off (``header_timeout_s``, ``max_header_bytes``). Only
    httptools' parser reports each header as it is parsed, which those checks need, so
    h11 is not offered."""
    return partial(
        GuardedHttpToolsProtocol,
        header_timeout_s=settings.header_timeout_s,
        max_header_bytes=settings.max_header_bytes,
    )


def _config(settings: Settings, app: Any, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        # Slow clients: idle keep-alive, headers (the protocol) and bodies (BodyLimit).
        http=http_protocol(settings),
        timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=settings.max_header_bytes,
        **extra,
    )


def _run_workers(settings: Settings) -> None:
    """uvicorn's supervisor: each worker builds the app from the environment (the same
    settings), the parent owns the socket and stops the workers on SIGINT/SIGTERM."""
    from uvicorn.supervisors import Multiprocess

    database = Database(settings.resolved_database_url)
    check_schema(database)  # fail here, not in N workers
    DatabaseKeyring.open(database, settings)  # the master key opens the keyring
    database.dispose()
    config = _config(
        settings, "ghaf.server.app:app_from_environment", factory=True, workers=settings.workers
    )
    sock = bind_socket(settings)
    _log_docs_url(settings, sock)
    Multiprocess(config, sockets=[sock]).run()
