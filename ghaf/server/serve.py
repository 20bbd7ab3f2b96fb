"""Running the ASGI app under uvicorn with ghaf's settings."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from ghaf.core.logging import configure_logging
from ghaf.core.settings import Settings
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
    """Build the app (refusing an outdated schema) and serve until stopped."""
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    GracefulServer(config).run()
