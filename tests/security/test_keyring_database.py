"""The keyring in the metadata database: several servers with different homes share one
database, a wrong master key is refused everywhere, the master key rotates, an earlier
file keyring is imported, and an AWS KMS key can seal the keyring."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import delete, func, select
from typer.testing import CliRunner

from ghaf.client import Client
from ghaf.core.database import Database
from ghaf.core.errors import Unavailable
from ghaf.core.settings import Settings
from ghaf.runtime import Runtime
from ghaf.security.audit.models import AuditEvent
from ghaf.security.audit.service import AUDIT_KEY, verify_database
from ghaf.security.keyring import DatabaseKeyring, LocalKeyring, MasterKeyMismatch
from ghaf.security.models import KeyringKey, KeyringState
from ghaf.server.install import initialise, migrate, rotate_master_key
from ghaf.server.process import ServerProcess
from tests.conftest import Databases, S3Server, unique

runner = CliRunner()


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _env(settings: Settings) -> dict[str, str]:
    env = {
        "GHAF_HOME": str(settings.home),
        "GHAF_DATABASE_URL": settings.database_url,
        "GHAF_AUDIT_CHECKPOINT_EVERY": str(settings.audit_checkpoint_every),
    }
    if settings.master_key is not None:
        env["GHAF_MASTER_KEY"] = settings.master_key.get_secret_value()
    if settings.master_key_file is not None:
        env["GHAF_MASTER_KEY_FILE"] = str(settings.master_key_file)
    if settings.storage_url:
        env["GHAF_STORAGE_URL"] = settings.storage_url
    for name in ("kms_url", "kms_endpoint_url", "kms_region", "kms_access_key_id"):
        value = getattr(settings, name)
        if value:
            env[f"GHAF_{name.upper()}"] = value
    if settings.kms_secret_access_key is not None:
        env["GHAF_KMS_SECRET_ACCESS_KEY"] = settings.kms_secret_access_key.get_secret_value()
    return env


def _verify(settings: Settings) -> None:
    runtime = Runtime.open(settings)
    try:
        with runtime.database.transaction(write=False) as session:
            report = verify_database(session, runtime.audit)
        assert report.ok, report.problem
    finally:
        runtime.close()


def _rows(url: str) -> int:
    database = Database(url)
    try:
        with database.transaction(write=False) as session:
            return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
    finally:
        database.dispose()


@pytest.fixture
def shared(databases: Databases, tmp_path: Path) -> Iterator[tuple[Settings, Settings]]:
    """Two homes, one database, one artifact store, one master key."""
    url, key = databases.new_url(), _key()
    storage = f"file://{tmp_path / 'shared-artifacts'}"

    def settings(name: str) -> Settings:
        return Settings(
            home=tmp_path / name,
            database_url=url,
            master_key=key,  # type: ignore[arg-type]
            storage_url=storage,
            audit_checkpoint_every=5,
        )

    yield settings("home-a"), settings("home-b")


def test_two_servers_with_different_homes_share_one_database(
    shared: tuple[Settings, Settings], tmp_path: Path
) -> None:
    a_settings, b_settings = shared
    first = initialise(a_settings)
    assert first.token is not None
    token = first.token.token
    second = initialise(b_settings)  # joins: same master key
    assert second.token is None
    for settings in shared:
        assert not settings.keyring_path.exists()
        assert not (settings.home / "master.key").exists()

    with (
        ServerProcess(env=_env(a_settings), log_path=tmp_path / "a.log") as a,
        ServerProcess(env=_env(b_settings), log_path=tmp_path / "b.log") as b,
        Client(url=a.url, token=token) as ca,
        Client(url=b.url, token=token) as cb,
    ):
        if True:
            project = ca.projects.create(unique("p")).name
            assert project in {p.name for p in cb.projects.list()}
            ca.artifacts.upload(project, "from-a.bin", b"written through a")
            cb.artifacts.download(project, "from-a.bin", tmp_path / "got-a.bin")
            assert (tmp_path / "got-a.bin").read_bytes() == b"written through a"

            def hammer(args: tuple[str, int]) -> int:
                server_url, n = args
                with Client(url=server_url, token=token) as client:
                    for i in range(5):
                        name = client.projects.create(unique("c")).name
                        client.artifacts.upload(name, "x.bin", f"{n}-{i}".encode())
                        client.artifacts.upload(project, f"{n}/{i}.bin", f"{n}:{i}".encode())
                return 5

            with ThreadPoolExecutor(4) as pool:
                assert sum(pool.map(hammer, [(a.url, 0), (b.url, 1), (a.url, 2), (b.url, 3)]))
            for n in range(4):
                reader = ca if n % 2 else cb  # read through the other server
                reader.artifacts.download(project, f"{n}/4.bin", tmp_path / f"{n}.bin")
                assert (tmp_path / f"{n}.bin").read_bytes() == f"{n}:4".encode()
            report = cb.audit.verify()
            assert report.ok, report.problem
    # Both servers signed a checkpoint on shutdown, with the shared audit key.
    _verify(a_settings)
    _verify(b_settings)


def test_a_different_master_key_is_refused_and_the_chain_stays_intact(
    shared: tuple[Settings, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_settings, b_settings = shared
    assert initialise(a_settings).token is not None
    rows = _rows(a_settings.database_url)
    wrong = b_settings.model_copy(update={"master_key": SecretStr(_key())})

    with pytest.raises(MasterKeyMismatch, match="does not open it"):
        initialise(wrong)
    with pytest.raises(MasterKeyMismatch, match="refusing to start"):
        Runtime.open(wrong)

    # No key given at all: init refuses and creates no master key file of its own.
    no_key = b_settings.model_copy(update={"master_key": None})
    for name, value in _env(no_key).items():
        monkeypatch.setenv(name, value)
    from ghaf.cli.main import app

    result = runner.invoke(app, ["admin", "init"])
    assert result.exit_code != 0
    assert "no master key is set" in " ".join(result.output.split())
    assert not no_key.master_key_path.exists()
    monkeypatch.setenv("GHAF_MASTER_KEY", _key())
    result = runner.invoke(app, ["admin", "init"])
    assert result.exit_code != 0
    output = " ".join(result.output.split())
    assert "master key" in output and "does not open it" in output

    with pytest.raises(Unavailable):
        ServerProcess(env=_env(wrong), log_path=tmp_path / "wrong.log").start()
    log = (tmp_path / "wrong.log").read_text()
    assert "does not open it" in log and "refusing to start" in log

    assert _rows(a_settings.database_url) == rows  # nothing written, nothing signed
    _verify(a_settings)


def test_rotate_master_key(
    databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, url = tmp_path / "home", databases.new_url()
    settings = Settings(home=home, database_url=url, master_key=None)
    token = initialise(settings).token
    assert token is not None
    with (
        ServerProcess(env=_env(settings), log_path=tmp_path / "s1.log") as server,
        Client(url=server.url, token=token.token) as client,
    ):
        project = client.projects.create(unique("p")).name
        client.artifacts.upload(project, "a.bin", b"before rotation")

    new_file = tmp_path / "secrets" / "new-master.key"
    for name, value in _env(settings).items():
        monkeypatch.setenv(name, value)
    from ghaf.cli.main import app

    result = runner.invoke(
        app, ["admin", "rotate-master-key", "--new-key-file", str(new_file), "--generate"]
    )
    assert result.exit_code == 0, result.output
    assert (new_file.stat().st_mode & 0o777) == 0o600

    with pytest.raises(MasterKeyMismatch, match="does not open it"):
        Runtime.open(settings)  # the old key file in the home
    rotated = settings.model_copy(update={"master_key_file": new_file})
    _verify(rotated)
    with (
        ServerProcess(env=_env(rotated), log_path=tmp_path / "s2.log") as server,
        Client(url=server.url, token=token.token) as client,
    ):
        client.artifacts.download(project, "a.bin", tmp_path / "a.bin")
        assert (tmp_path / "a.bin").read_bytes() == b"before rotation"
        events = [e for e in client.audit.list() if e.action == "keyring:rotate-master-key"]
        assert len(events) == 1 and events[0].detail["generation"] == 2
        assert client.audit.verify().ok

    # Once more, from the environment.
    monkeypatch.setenv("GHAF_MASTER_KEY_FILE", str(new_file))
    monkeypatch.setenv("GHAF_NEW_MASTER_KEY", _key())
    result = runner.invoke(app, ["admin", "rotate-master-key"])
    assert result.exit_code == 0, result.output
    with pytest.raises(MasterKeyMismatch):
        Runtime.open(rotated)


def test_a_file_keyring_is_imported_into_the_database(databases: Databases, tmp_path: Path) -> None:
    home, url = tmp_path / "home", databases.new_url()
    settings = Settings(home=home, database_url=url, master_key=None)
    token = initialise(settings).token
    assert token is not None
    with (
        ServerProcess(env=_env(settings), log_path=tmp_path / "s1.log") as server,
        Client(url=server.url, token=token.token) as client,
    ):
        project = client.projects.create(unique("p")).name
        client.artifacts.upload(project, "a.bin", b"from the file era")

    # Turn the installation into one from before the keyring moved: keys in the file.
    database = Database(url)
    keyring = DatabaseKeyring.open(database, settings)
    legacy = LocalKeyring.from_settings(settings)
    data = {
        name: [
            {
                "version": v,
                "key": base64.b64encode(keyring.get(name, v).material).decode(),
                "created_at": "2026-01-01T00:00:00Z",
            }
            for v in versions
        ]
        for name, versions in keyring.versions().items()
    }
    legacy._write(data)
    with database.transaction() as session:
        session.execute(delete(KeyringKey))
        session.execute(delete(KeyringState))
    database.dispose()

    migrate(settings)
    assert not settings.keyring_path.exists()
    assert settings.keyring_path.with_name("keyring.json.migrated").exists()
    _verify(settings)
    with (
        ServerProcess(env=_env(settings), log_path=tmp_path / "s2.log") as server,
        Client(url=server.url, token=token.token) as client,
    ):
        client.artifacts.download(project, "a.bin", tmp_path / "a.bin")
        assert (tmp_path / "a.bin").read_bytes() == b"from the file era"
        assert client.audit.verify().ok


def test_concurrent_first_use_and_rotation_agree(databases: Databases, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h", database_url=databases.new_url(), master_key=_key())  # type: ignore[arg-type]
    initialise(settings)
    databases_ = [Database(settings.database_url) for _ in range(4)]
    rings = [DatabaseKeyring.open(d, settings) for d in databases_]
    barrier = threading.Barrier(4)

    def first_use(ring: DatabaseKeyring) -> bytes:
        barrier.wait()
        return ring.ensure("project:shared").material

    with ThreadPoolExecutor(4) as pool:
        assert len(set(pool.map(first_use, rings))) == 1

    def rotate(ring: DatabaseKeyring) -> int:
        return ring.rotate("project:shared").version

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(rotate, rings)) == [2, 3, 4, 5]
    assert rings[0].get(AUDIT_KEY).material == rings[3].get(AUDIT_KEY).material
    for database in databases_:
        database.dispose()


def _kms_settings(s3_server: S3Server, key_id: str) -> dict[str, object]:
    return {
        "kms_url": f"aws-kms://{key_id}",
        "kms_endpoint_url": s3_server.endpoint,
        "kms_region": "us-east-1",
        "kms_access_key_id": "test",
        "kms_secret_access_key": "test",
    }


def test_aws_kms_seals_the_keyring(
    s3_server: S3Server, databases: Databases, tmp_path: Path
) -> None:
    import boto3

    kms = boto3.client(
        "kms",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    arn = kms.create_key(Description="ghaf test")["KeyMetadata"]["Arn"]
    other = kms.create_key(Description="another")["KeyMetadata"]["KeyId"]
    url = databases.new_url()
    storage = f"file://{tmp_path / 'artifacts'}"
    a = Settings(
        home=tmp_path / "a", database_url=url, storage_url=storage, **_kms_settings(s3_server, arn)
    )  # type: ignore[arg-type]
    token = initialise(a).token
    assert token is not None
    assert not (a.home / "master.key").exists()
    database = Database(url)
    with database.transaction(write=False) as session:
        state = session.get(KeyringState, 1)
        assert state is not None and state.provider == "aws-kms" and state.kms_key_id == arn
    database.dispose()

    b = a.model_copy(update={"home": tmp_path / "b"})
    assert initialise(b).token is None
    with (
        ServerProcess(env=_env(a), log_path=tmp_path / "a.log") as sa,
        ServerProcess(env=_env(b), log_path=tmp_path / "b.log") as sb,
        Client(url=sa.url, token=token.token) as ca,
        Client(url=sb.url, token=token.token) as cb,
    ):
        project = ca.projects.create(unique("p")).name
        ca.artifacts.upload(project, "k.bin", b"sealed by kms")
        cb.artifacts.download(project, "k.bin", tmp_path / "k.bin")
        assert (tmp_path / "k.bin").read_bytes() == b"sealed by kms"

    wrong_kms = a.model_copy(update={"kms_url": f"aws-kms://{other}"})
    with pytest.raises(MasterKeyMismatch, match="failed"):
        Runtime.open(wrong_kms)
    local = a.model_copy(update={"kms_url": "", "master_key": SecretStr(_key())})
    with pytest.raises(MasterKeyMismatch, match="sealed by aws-kms"):
        initialise(local)

    # From the KMS to a local key, and back: each time the previous one stops working.
    from ghaf.security.keyring import LocalMasterKey
    from ghaf.security.kms import master_key_from_url

    assert local.master_key is not None
    raw = base64.b64decode(local.master_key.get_secret_value())
    rotate_master_key(a, LocalMasterKey(raw))
    with pytest.raises(MasterKeyMismatch):
        Runtime.open(a)
    _verify(local)
    rotate_master_key(local, master_key_from_url(f"aws-kms://{other}", wrong_kms))
    _verify(wrong_kms)
    with pytest.raises(MasterKeyMismatch):
        Runtime.open(local)


def test_a_key_made_inside_a_write_transaction_neither_waits_nor_outlives_a_rollback(
    databases: Databases, tmp_path: Path
) -> None:
    """SQLite has one writer: a KEK made on first use inside a request's transaction goes
    through that transaction, and a rollback takes it along (never cached)."""
    settings = Settings(home=tmp_path / "h", database_url=databases.new_url(), master_key=_key())  # type: ignore[arg-type]
    initialise(settings)
    database = Database(settings.database_url)
    ring = DatabaseKeyring.open(database, settings)
    session = database.session(write=True)
    try:
        session.execute(select(func.count()).select_from(AuditEvent))  # takes the lock
        made = ring.ensure("project:inside")
        assert ring.get("project:inside", 1).material == made.material
        session.rollback()
    finally:
        session.close()
    again = ring.ensure("project:inside")
    assert again.version == 1
    if database.is_sqlite:
        assert again.material != made.material  # the rolled-back one was not kept
    assert ring.get("project:inside", 1).material == again.material
    database.dispose()
