"""Serving fixtures: two registered models (a skops classifier and an ONNX random
forest), tokens with and without ``deployment:invoke``, and a serving app on a port."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ghaf.client import Client
from ghaf.registry.schemas import VersionOut
from ghaf.server.process import free_port
from ghaf.serving.schemas import InvokeGrant
from tests.conftest import Platform, TrainedModel, forest_onnx, serve_in_thread, unique


@dataclass
class Registered:
    """A project holding ``churn`` (skops, 4 float64 features, alias ``prod``) and
    ``forest`` (ONNX RandomForest, 20 float32 features), and callers of it."""

    project: str
    churn: VersionOut
    forest: VersionOut
    churn_model: Any
    forest_model: Any
    X4: np.ndarray[Any, Any]
    X20: np.ndarray[Any, Any]
    member: Client  # holds deployment:invoke
    viewer: Client  # does not
    outsider: Client  # a member of another project only


@pytest.fixture(scope="module")
def registered(
    platform: Platform, trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Registered:
    admin = platform.client()
    project = admin.projects.create(unique("serve")).name
    churn = admin.models.register(
        project, "churn", path=trained.path, sample=np.asarray(trained.X)[:5]
    )
    admin.models.set_alias(project, "churn", "prod", churn.version)
    path, forest_model, X20 = forest_onnx(tmp_path_factory.mktemp("forest"))
    forest = admin.models.register(project, "forest", path=path, sample=X20[:5])

    def member_as(role: str, where: str) -> Client:
        user, client = platform.new_user()
        admin.members.add(where, principal=user.name, role=role)
        return client

    other = admin.projects.create(unique("other")).name
    return Registered(
        project=project,
        churn=churn,
        forest=forest,
        churn_model=trained.model,
        forest_model=forest_model,
        X4=np.asarray(trained.X),
        X20=X20,
        member=member_as("member", project),
        viewer=member_as("viewer", project),
        outsider=member_as("member", other),
    )


def bearer(client: Client) -> dict[str, str]:
    return {"authorization": client._http.headers["authorization"]}


class AllowAll:
    """An authorizer that lets everyone in (unit tests of routes that are not about
    authentication)."""

    def __init__(self) -> None:
        self.asked = 0

    async def authorize(self, authorization: str | None, *, client: str | None) -> InvokeGrant:
        self.asked += 1
        return InvokeGrant(project="p", principal="tester", kind="user")

    async def aclose(self) -> None:
        return None


@contextmanager
def running(app: Any, **config: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free port (its lifespan included; ``config``: more of
    uvicorn's settings); yields its URL."""
    server, thread, url = serve_in_thread(app, **config)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@dataclass
class ServeProcess:
    """A running ``ghaf serve`` child: its URL, a client for it, and (once it has
    stopped) everything it printed."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    http: httpx.Client
    output: str = ""


@contextmanager
def ghaf_serve(
    args: list[str], env: dict[str, str], *, tls_ca: Path | None = None
) -> Iterator[ServeProcess]:
    """``ghaf serve ARGS`` on a free port with ``env``, once it answers ready; stopped
    (and its output collected) when the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "ghaf", "serve", *args, "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}"
    verify: Any = ssl.create_default_context(cafile=tls_ca) if tls_ca else True
    served = ServeProcess(url, port, process, httpx.Client(base_url=url, verify=verify))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if served.http.get("/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"ghaf serve {' '.join(args)} did not get ready"
            time.sleep(0.2)
        yield served
    finally:
        served.http.close()
        process.terminate()
        served.output = process.communicate(timeout=60)[0].decode()


@pytest.fixture
def serve_app() -> Callable[[Any], Any]:
    return running
