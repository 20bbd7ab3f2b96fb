"""Running the ASGI app under uvicorn with ghaf's settings."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from ghaf.core.database import Database
from ghaf.core.logging import configure_logging
from ghaf.core.migrate import check_schema
from ghaf.core.settings import Settings
from ghaf.security.keyring import DatabaseKeyring
from ghaf.server.app import create_app


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
    app = create_app(settings)
    GracefulServer(_config(settings, app)).run()


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
    Multiprocess(config, sockets=[config.bind_socket()]).run()
