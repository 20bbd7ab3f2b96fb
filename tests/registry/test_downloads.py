"""Downloading a model file is audited, and the audit row is written in a proper write
transaction: many downloads at once, among audited writes, leave the audit chain intact
(SQLite and PostgreSQL alike; ``--db=postgresql``).

Written through a read session (no transaction on SQLite), the append's three
statements would interleave with a writer's, and two rows would name one predecessor."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

from ghaf.client import Client
from tests.conftest import Platform, TrainedModel, audited, unique

THREADS = 8  # half download, half write
EACH = 10


def test_concurrent_downloads_keep_the_audit_chain_intact(
    fresh_platform: Callable[..., Platform], trained: TrainedModel, tmp_path: Path
) -> None:
    platform = fresh_platform()  # its own chain: what is verified is this test's alone
    admin = platform.admin
    project = admin.projects.create(unique("p")).name
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:2])
    expected = hashlib.sha256(trained.path.read_bytes()).hexdigest()
    before = len(audited(admin, project, "model:download"))
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def download(worker: int, client: Client) -> None:
        for n in range(EACH):
            folder = tmp_path / f"{worker}-{n}"
            folder.mkdir()
            target = client.models.download(project, "churn", 1, destination=folder)
            assert hashlib.sha256(target.read_bytes()).hexdigest() == expected

    def write(worker: int, client: Client) -> None:
        for n in range(EACH):
            client.models.update(project, "churn", 1, tags={"writer": f"{worker}-{n}"})

    def work(worker: int) -> None:
        try:
            with platform.client() as client:
                start.wait()
                (download if worker % 2 == 0 else write)(worker, client)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors, errors
    downloads = (THREADS + 1) // 2 * EACH
    assert len(audited(admin, project, "model:download")) == before + downloads
    verified = admin.audit.verify()
    assert verified.ok, verified.problem
