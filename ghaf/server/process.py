"""Running ``ghaf server`` as a child process (used by the demo, tests and benchmarks)."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from ghaf.core.errors import Unavailable
from ghaf.platform.children import die_with_parent
from ghaf.platform.ports import free_port

__all__ = ["ServerProcess", "free_port"]


class ServerProcess:
    """A ``ghaf server`` child on 127.0.0.1; ``stop()`` sends SIGTERM and waits."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        scheme = "https" if self.env.get("GHAF_TLS_CERT") else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        # A CA file for servers with self-signed certificates (tests, the demo).
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        )
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None

    def start(self, *, timeout: float = 30.0) -> ServerProcess:
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        started = time.perf_counter()
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "ghaf",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=log,
            stderr=log,
            # A demo or test killed mid-run must not leave its server (and the server's
            # replicas) running on.
            preexec_fn=die_with_parent,
        )
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise Unavailable(
                    f"ghaf server exited with code {self.process.returncode}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                if (
                    httpx.get(f"{self.url}/readyz", timeout=1, verify=self.verify).status_code
                    == 200
                ):
                    self.started_in = time.perf_counter() - started
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise Unavailable(f"ghaf server did not become ready within {timeout:.0f}s")

    def stop(self, *, timeout: float = 15.0) -> int | None:
        """Stop gracefully (SIGTERM); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
