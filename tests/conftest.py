"""Shared fixtures: databases (SQLite or PostgreSQL), live servers, clients, users.

``pytest --db=postgresql`` (or GHAF_TEST_DB=postgresql) runs every test against
PostgreSQL on 127.0.0.1:5432; each run creates and drops its own databases. With
CI=true a missing PostgreSQL fails the run instead of skipping it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from ghaf.client import Client
from ghaf.core.errors import GhafError
from ghaf.core.settings import Settings
from ghaf.domains import open_runtime
from ghaf.runtime import Runtime
from ghaf.security.context import Context
from ghaf.security.schemas import PrincipalOut
from ghaf.server.app import create_app
from ghaf.server.install import initialise
from ghaf.server.process import free_port
from ghaf.serving.runtime import LoadedModel, RuntimeOptions, VersionInfo, file_sha256, load_model

PG_ADMIN_URL = os.environ.get("GHAF_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Fails the session when a token or password created in it appears in anything logged.
pytest_plugins = ("tests.secrets_in_logs",)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("sqlite", "postgresql"),
        default=os.environ.get("GHAF_TEST_DB", "sqlite"),
        help="metadata database the suite runs against",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "embedded: runs on the embedded defaults only")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--db") == "sqlite":
        return
    embedded = [i for i in items if i.get_closest_marker("embedded")]
    if embedded:
        config.hook.pytest_deselected(items=embedded)
        items[:] = [i for i in items if not i.get_closest_marker("embedded")]


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo what a command run in-process (``ghaf serve``, ``ghaf server``) did to the
    process's logging: its handler writes to the current stderr, so it would otherwise
    put the in-process servers' log lines into later CLI tests' captured output."""
    root = logging.getLogger()
    handlers, levels = list(root.handlers), {n: logging.getLogger(n).level for n in ("", "ghaf")}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    for handler in [h for h in handlers if h not in root.handlers]:
        root.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the SDK's dataset cache out of the real home folder."""
    previous = os.environ.get("GHAF_CACHE")
    os.environ["GHAF_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("GHAF_CACHE", None)
    else:
        os.environ["GHAF_CACHE"] = previous


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Databases:
    """Hands out fresh database URLs for the selected backend and drops them after."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.created: list[str] = []

    def new_url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.tmp / (unique('db') + '.db')}"
        import psycopg

        name = unique("ghaf_test_")
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        return f"{base}/{name}"

    def drop_all(self) -> None:
        if not self.created:
            return
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Databases]:
    kind = request.config.getoption("--db")
    if kind == "postgresql":
        problem = _postgres_available()
        if problem is not None:
            message = f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {problem}"
            if os.environ.get("CI") == "true":
                pytest.fail(message + " (required in CI)")
            pytest.skip(message)
    dbs = Databases(kind, tmp_path_factory.mktemp("databases"))
    yield dbs
    dbs.drop_all()


class _ThreadServer(uvicorn.Server):
    """uvicorn in a background thread (signal handlers belong to the main thread)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Platform:
    """A live, initialised installation with an admin token."""

    settings: Settings
    runtime: Runtime
    url: str
    admin_token: str
    _server: _ThreadServer
    _thread: threading.Thread
    clients: list[Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> Client:
        client = Client(url=self.url, token=token or self.admin_token)
        self.clients.append(client)
        return client

    @property
    def admin(self) -> Client:
        return self.client()

    @property
    def gateway(self) -> Any:
        """The deployments' gateway of this server: its fleet, traffic and mirror."""
        from ghaf.deployments.gateway import NAME, Gateway

        found = self.runtime.backends[NAME]
        assert isinstance(found, Gateway)
        return found

    @property
    def app(self) -> Any:
        """The ASGI app the server runs (for tests that enumerate its routes)."""
        return self._server.config.app

    @contextmanager
    def context_as(self, client: Client) -> Iterator[Context]:
        """A write context for ``client``'s caller, its token resolved as a request's
        would be: for calling services and flows in-process."""
        authorization = client._http.headers["authorization"]
        resolved = self.runtime.resolve_caller(
            authorization, write=True, request_id=None, client=None
        )
        ctx = self.runtime.context(write=True, caller=resolved.caller, request_id=unique("ctx"))
        try:
            yield ctx
        finally:
            ctx.close()

    def new_user(self, *, password: str | None = None) -> tuple[PrincipalOut, Client]:
        """A new user and a client authenticated as them."""
        admin = self.client()
        user = admin.users.create(unique("u"), password=password)
        token = admin.users.create_token(user.name, token_name="test").token
        return user, self.client(token)

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self.runtime.close()


def start_platform(home: Path, database_url: str, **overrides: object) -> Platform:
    settings = Settings(home=home, database_url=database_url, master_key=None, **overrides)  # type: ignore[arg-type]
    result = initialise(settings)
    assert result.token is not None
    runtime = open_runtime(settings)
    server, thread, url = serve_in_thread(create_app(settings, runtime=runtime))
    return Platform(settings, runtime, url, result.token.token, server, thread)


def serve_in_thread(app: Any, **config: Any) -> tuple[_ThreadServer, threading.Thread, str]:
    """``app`` under uvicorn on a free port in a daemon thread, once it has started (its
    lifespan included): (server, thread, URL). Stop it with ``server.should_exit``.
    ``config``: more of uvicorn's settings (e.g. ``http``)."""
    port = free_port()
    server = _ThreadServer(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, **config
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def platform(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One installation shared by the session; tests use unique names within it."""
    # Deployments' traffic tallies are written every quarter second (not every 5) and
    # shadow logs stored after a second (not a minute): tests wait for them. Rollouts
    # are judged when a test says so (the scheduler's task waits an hour), so that no
    # judgement happens between a test's steps.
    live = start_platform(
        tmp_path_factory.mktemp("home"),
        databases.new_url(),
        deployment_traffic_flush_s=0.25,
        deployment_shadow_log_rotate_s=1.0,
        deployment_rollout_interval_s=3600,
    )
    yield live
    live.stop()


@pytest.fixture
def fresh_platform(databases: Databases, tmp_path: Path) -> Iterator[Callable[..., Platform]]:
    """Factory for an isolated installation (for tests that tamper with its data)."""
    started: list[Platform] = []

    def make(**overrides: object) -> Platform:
        live = start_platform(tmp_path / unique("home"), databases.new_url(), **overrides)
        started.append(live)
        return live

    yield make
    for live in started:
        live.stop()


@pytest.fixture
def admin(platform: Platform) -> Client:
    return platform.client()


@pytest.fixture
def project(admin: Client) -> Iterator[str]:
    """A fresh project owned by the admin. Its deployments are removed afterwards, so
    the replicas they started stop (the session's server would otherwise keep one
    process per variant of every test's deployment)."""
    name = admin.projects.create(unique("p")).name
    yield name
    with contextlib.suppress(GhafError):
        for deployment in admin.deployments.list(name):
            admin.deployments.delete(name, deployment.name)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The CLI with its own credentials file and no GHAF_URL/GHAF_TOKEN."""
    path = tmp_path / "config" / "credentials.json"
    monkeypatch.setenv("GHAF_CREDENTIALS", str(path))
    monkeypatch.delenv("GHAF_URL", raising=False)
    monkeypatch.delenv("GHAF_TOKEN", raising=False)
    return path


@pytest.fixture
def admin_cli(platform: Platform, cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI pointed at the test server as the platform admin (via GHAF_URL/TOKEN)."""
    monkeypatch.setenv("GHAF_URL", platform.url)
    monkeypatch.setenv("GHAF_TOKEN", platform.admin_token)
    return cli_env


@pytest.fixture
def member_in(platform: Platform, admin: Client) -> Callable[[str, str], tuple[str, Client]]:
    """``member_in(project, role)`` -> (user name, client as that user)."""

    def make(project_name: str, role: str) -> tuple[str, Client]:
        user, client = platform.new_user()
        admin.members.add(project_name, principal=user.name, role=role)
        return user.name, client

    return make


@dataclass
class S3Server:
    """moto's standalone S3-compatible HTTP server on 127.0.0.1."""

    endpoint: str

    def settings(self, bucket: str) -> dict[str, object]:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        ).create_bucket(Bucket=bucket)
        return {
            "storage_url": f"s3://{bucket}/ghaf",
            "s3_endpoint_url": self.endpoint,
            "s3_region": "us-east-1",
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3Server(f"http://127.0.0.1:{port}")
    server.stop()


@dataclass
class TrainedModel:
    """A small fitted scikit-learn classifier, saved with skops, and its data."""

    path: Path
    model: object
    X: object
    y: object


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    import skops.io as sio
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(
        n_samples=300, n_features=4, n_informative=3, n_redundant=1, random_state=0
    )
    model = LogisticRegression(max_iter=500).fit(X, y)
    path = tmp_path_factory.mktemp("models") / "model.skops"
    sio.dump(model, path)
    return TrainedModel(path, model, X, y)


@pytest.fixture
def reviewer(
    project: str, member_in: Callable[[str, str], tuple[str, Client]]
) -> tuple[str, Client]:
    """A maintainer of ``project``: holds model:approve, did not register anything."""
    return member_in(project, "maintainer")


def audited(client: Client, project: str, action: str) -> list[Any]:
    """The project's audit events of one action, oldest first."""
    return [e for e in client.audit.list(project=project) if e.action == action]


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (0600) in ``folder``."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# --- a served model (tests/serving, tests/security) --------------------------------------


def forest_onnx(folder: Path) -> tuple[Path, Any, np.ndarray[Any, Any]]:
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(n_samples=400, n_features=20, random_state=1)
    X = X.astype(np.float32)
    model = RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(X, y)
    onx = to_onnx(model, X[:1], options={"zipmap": False}, target_opset=17)
    path = folder / "forest.onnx"
    path.write_bytes(onx.SerializeToString())
    return path, model, X


@pytest.fixture(scope="module")
def loaded_forest(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[LoadedModel, np.ndarray[Any, Any]]:
    """A small ONNX forest loaded to serve (version 2 of ``forest``, one thread), and
    its features."""
    from ghaf.registry.formats import Trust, get

    path, _, X = forest_onnx(tmp_path_factory.mktemp("fast"))
    found = get("onnx").inspect(path, trust=Trust())
    info = VersionInfo(
        model="forest",
        version=2,
        format="onnx",
        sha256=file_sha256(Path(path)),
        inputs=found.inputs or [],
        outputs=found.outputs or [],
    )
    return load_model(Path(path), info, options=RuntimeOptions(threads=1)), X


@pytest.fixture
def two_versions(admin: Client, project: str, trained: TrainedModel) -> str:
    """``project`` with model churn at versions 1 and 2 (the same trained model)."""
    for _ in range(2):
        admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    return project


def replica_spec(**fields: Any) -> Any:
    """A deployment replica's spec for unit tests: variant a of churn v1 unless told."""
    from ghaf.deployments.hosts.base import ReplicaSpec
    from ghaf.deployments.schemas import Resources, RuntimeOptions, Scaling

    values: dict[str, Any] = {
        "project": "p",
        "deployment": "d",
        "variant": "a",
        "model": "m",
        "version": 1,
        "sha256": "0" * 64,
        "runtime": RuntimeOptions(),
        "resources": Resources(),
        "scaling": Scaling(),
    }
    return ReplicaSpec(**{**values, **fields})
