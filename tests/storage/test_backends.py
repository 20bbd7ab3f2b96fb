"""Every backend behaves the same: local disk and S3 (moto's server on 127.0.0.1)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ghaf.core.settings import Settings
from ghaf.storage.backends import open_backend
from ghaf.storage.backends.base import INCOMPLETE, Backend, ObjectMissing
from ghaf.storage.backends.s3 import PART_BYTES
from tests.conftest import Platform, S3Server, unique


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        settings = Settings(home=tmp_path, master_key=None)
    else:
        s3: S3Server = request.getfixturevalue("s3_server")
        settings = Settings(home=tmp_path, master_key=None, **s3.settings(unique("b")))
    return open_backend(settings)


def test_write_read_ranges(backend: Backend) -> None:
    data = os.urandom(PART_BYTES + 12345)  # more than one multipart part on S3
    writer = backend.writer("objects/p/one")
    for start in range(0, len(data), 1 << 20):
        writer.write(data[start : start + (1 << 20)])
    assert writer.commit() == len(data)
    reader = backend.reader("objects/p/one")
    try:
        assert reader.size == len(data)
        assert reader.read(0, 10) == data[:10]
        assert reader.read(len(data) - 5, 100) == data[-5:]
        assert reader.read(len(data), 10) == b""
    finally:
        reader.close()
    assert "objects/p/one" in set(backend.keys("objects/p/"))


def test_nothing_visible_before_commit_and_abort_cleans(backend: Backend) -> None:
    writer = backend.writer("objects/p/two")
    writer.write(os.urandom(PART_BYTES + 1))
    with pytest.raises(ObjectMissing):
        backend.reader("objects/p/two")
    assert any(k.endswith(INCOMPLETE) for k in backend.keys("objects/p/"))
    writer.abort()
    assert not any(k.startswith("objects/p/two") for k in backend.keys("objects/p/"))


def test_small_and_empty_objects_and_delete(backend: Backend) -> None:
    for key, data in (("objects/p/empty", b""), ("objects/p/small", b"x")):
        writer = backend.writer(key)
        writer.write(data)
        writer.commit()
        reader = backend.reader(key)
        assert reader.size == len(data)
        reader.close()
        backend.delete(key)
        with pytest.raises(ObjectMissing):
            backend.reader(key)


@pytest.mark.parametrize("key", ["../escape", "/abs", "objects//x", "UPPER", "a\x00b"])
def test_keys_are_checked(backend: Backend, key: str) -> None:
    with pytest.raises(Exception):
        backend.writer(key)


def test_platform_on_s3(
    fresh_platform: Callable[..., Platform], s3_server: S3Server, tmp_path: Path
) -> None:
    live = fresh_platform(**s3_server.settings(unique("ghaf")))
    admin = live.admin
    project = admin.projects.create("s3").name
    data = os.urandom(2 * PART_BYTES + 999)
    source = tmp_path / "model.bin"
    source.write_bytes(data)
    stored = admin.artifacts.upload(project, "models/model.bin", source)
    assert stored.size == len(data)
    assert (
        admin.artifacts.read(project, "models/model.bin", start=PART_BYTES - 2, end=PART_BYTES + 2)
        == data[PART_BYTES - 2 : PART_BYTES + 3]
    )
    target = tmp_path / "back.bin"
    admin.artifacts.download(project, "models/model.bin", target)
    assert target.read_bytes() == data
    assert admin.keys.rotate(project).complete
    assert admin.artifacts.verify(project).ok
    admin.artifacts.delete(project, "models/model.bin")
    assert admin.artifacts.verify(project).ok
