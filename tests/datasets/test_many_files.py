"""Folders of many files: packs, the local hash cache, and 100,000 tiny files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ghaf.client import Client, local_cache
from ghaf.client import datasets as sdk
from ghaf.core.errors import Conflict, InvalidInput, NotFound
from ghaf.core.settings import Settings
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess
from tests.conftest import Databases

SETTLED = time.time() - 3600  # an hour ago


def _settle(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the files look long unchanged. Their change time (which nothing can set)
    stays recent, so the cache is also told to trust fresh timestamps."""
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (SETTLED, SETTLED))
    monkeypatch.setattr(local_cache, "SETTLED_NS", 0)


def _folder(root: Path, files: int) -> Path:
    """``files`` small text files spread over three subfolders d0, d1 and d2."""
    for i in range(files):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"f{i}.txt").write_text(f"file {i}")
    return root


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every file the SDK reads to hash it."""
    reads: list[str] = []
    real = sdk._hash

    def counting(found, progress):  # type: ignore[no-untyped-def]
        reads.append(found.location)
        return real(found, progress)

    monkeypatch.setattr(sdk, "_hash", counting)
    return reads


def test_unchanged_files_are_not_read_again(
    admin: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _folder(tmp_path / "data", 20)
    _settle(data, monkeypatch)
    reads = _count_reads(monkeypatch)
    admin.datasets.create(project, "cached")
    admin.datasets.add_version(project, "cached", data)
    assert len(reads) == 20
    reads.clear()
    # Same size, timestamps put back: the change time still gives it away.
    target = data / "d1" / "f1.txt"
    target.write_text("FILE 1")
    os.utime(target, (SETTLED, SETTLED))
    second = admin.datasets.add_version(project, "cached", data)
    assert reads == [str(target.resolve())]
    assert second.file_count == 20
    out = tmp_path / "out"
    admin.datasets.download(project, "cached", destination=out)
    assert (out / "d1" / "f1.txt").read_text() == "FILE 1"


def test_an_unchanged_single_file_is_not_read_again(
    admin: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "model-input.csv"
    source.write_text("a,b\n1,2\n")
    _settle(tmp_path, monkeypatch)
    reads = _count_reads(monkeypatch)
    admin.datasets.create(project, "single")
    admin.datasets.add_version(project, "single", source)
    admin.datasets.add_version(project, "single", source)
    assert len(reads) == 1


def test_recently_written_files_are_always_hashed(
    admin: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "fresh"
    data.mkdir()
    (data / "a.txt").write_text("a")
    reads = _count_reads(monkeypatch)
    admin.datasets.create(project, "fresh")
    admin.datasets.add_version(project, "fresh", data)
    admin.datasets.add_version(project, "fresh", data)
    assert len(reads) == 2  # too fresh to trust its timestamps on coarse clocks


def test_a_broken_hash_cache_only_costs_time(
    admin: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "hashes.sqlite").write_bytes(b"this is not a database")
    monkeypatch.setenv("GHAF_CACHE", str(cache))
    data = tmp_path / "d"
    data.mkdir()
    (data / "x.txt").write_text("x")
    _settle(data, monkeypatch)
    admin.datasets.create(project, "broken-cache")
    version = admin.datasets.add_version(project, "broken-cache", data)
    assert version.file_count == 1


@pytest.mark.timeout(400)
def test_one_hundred_thousand_tiny_files(databases: Databases, tmp_path: Path) -> None:
    # A server process of its own, as deployed: in the test process, client and
    # server would take turns on one GIL.
    home, url = tmp_path / "home", databases.new_url()
    token = initialise(Settings(home=home, database_url=url, master_key=None)).token
    assert token is not None
    data = tmp_path / "tiny"
    for folder in range(100):
        (data / f"{folder:03d}").mkdir(parents=True)
        for i in range(1000):
            (data / f"{folder:03d}" / f"{i:04d}.txt").write_bytes(b"%d-%d" % (folder, i))
    env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": url}
    with (
        ServerProcess(env=env, log_path=tmp_path / "server.log") as server,
        Client(url=server.url, token=token.token, timeout=300) as admin,
    ):
        project = admin.projects.create("many").name
        admin.datasets.create(project, "tiny")
        first = admin.datasets.add_version(project, "tiny", data)
        expected = sum(len(b"%d-%d" % (f, i)) for f in range(100) for i in range(1000))
        assert (first.file_count, first.total_bytes) == (100_000, expected)
        assert len(admin.datasets.files(project, "tiny", 1, page_size=1000)) == 100_000
        (data / "042" / "0042.txt").write_bytes(b"changed")
        second = admin.datasets.add_version(project, "tiny", data)
        assert admin.datasets.diff(project, "tiny", 1, 2).changed == ["042/0042.txt"]
        assert second.total_bytes == first.total_bytes + len(b"changed") - len(b"42-42")
        out = tmp_path / "out"
        admin.datasets.download(project, "tiny", 2, destination=out)
    assert (out / "042" / "0042.txt").read_bytes() == b"changed"
    assert (out / "099" / "0999.txt").read_bytes() == b"99-999"
    assert sum(1 for _ in out.rglob("*.txt")) == 100_000


def test_a_stale_stored_hint_falls_back_to_asking_the_server(
    admin: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "hinted"
    data.mkdir()
    (data / "new.txt").write_text("never uploaded anywhere")
    files = sdk.scan(data)
    # This machine wrongly believes the server holds the content (say the project was
    # purged and made again under the same name).
    monkeypatch.setattr(local_cache.HashCache, "stored", lambda self, place: {files[0].sha256})
    admin.datasets.create(project, "hinted")
    version = admin.datasets.add_version(project, "hinted", data)
    assert version.file_count == 1
    out = tmp_path / "out"
    admin.datasets.download(project, "hinted", destination=out)
    assert (out / "new.txt").read_text() == "never uploaded anywhere"


def test_a_new_version_sends_only_what_changed(
    admin: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _folder(tmp_path / "delta", 30)
    admin.datasets.create(project, "delta")
    first = admin.datasets.add_version(project, "delta", data)
    sent: list[dict] = []  # type: ignore[type-arg]
    real_create = admin.datasets._create

    def spy(project, name, files, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.append(
            {"files": [f.path for f in files], "base": kwargs["base"], "removed": kwargs["removed"]}
        )
        assert kwargs["base_manifest_sha256"] == first.manifest_sha256
        return real_create(project, name, files, *args, **kwargs)

    monkeypatch.setattr(admin.datasets, "_create", spy)
    (data / "d0" / "f0.txt").write_text("changed")
    (data / "d1" / "f1.txt").unlink()
    (data / "d2" / "new.txt").write_text("new")
    second = admin.datasets.add_version(project, "delta", data)
    assert sent == [
        {"files": ["d0/f0.txt", "d2/new.txt"], "base": first.version, "removed": ["d1/f1.txt"]}
    ]
    assert (second.file_count, second.parent) == (30, first.version)
    diff = admin.datasets.diff(project, "delta", first.version, second.version)
    assert (diff.added, diff.removed, diff.changed) == (
        ["d2/new.txt"],
        ["d1/f1.txt"],
        ["d0/f0.txt"],
    )
    # The same manifest, sent whole, has the same identity.
    whole = admin.request(
        "POST",
        f"/api/v1/projects/{project}/datasets/delta/versions",
        json={"files": [f.model_dump() for f in admin.datasets.files(project, "delta", 2)]},
    ).json()
    assert whole["manifest_sha256"] == second.manifest_sha256


def test_bad_change_lists_are_refused(admin: Client, project: str, tmp_path: Path) -> None:
    admin.datasets.create(project, "changes")
    source = tmp_path / "one.txt"
    source.write_text("one")
    first = admin.datasets.add_version(project, "changes", source)
    entry = admin.datasets.files(project, "changes", 1)[0].model_dump()
    url = f"/api/v1/projects/{project}/datasets/changes/versions"
    known = {"base_manifest_sha256": first.manifest_sha256}
    cases = [
        ({"files": [entry], "removed": ["one.txt"]}, InvalidInput, "removed needs base"),
        ({"base": 1, "files": [entry]}, InvalidInput, "base_manifest_sha256 is required"),
        ({"base": 1, "base_manifest_sha256": "0" * 64, "files": [entry]}, Conflict, "not the one"),
        ({"base": 1, "files": [entry], "removed": ["one.txt"], **known}, InvalidInput, "both"),
        ({"base": 1, "removed": ["ghost.txt"], **known}, InvalidInput, "not in version 1"),
        ({"base": 1, "removed": ["one.txt"], **known}, InvalidInput, "at least one file"),
        ({"base": 9, "files": [entry], **known}, NotFound, "no version or alias '9'"),
        ({"files": []}, InvalidInput, "at least one file"),
    ]
    for body, error, match in cases:
        with pytest.raises(error, match=match):
            admin.request("POST", url, json=body)
    assert [v.version for v in admin.datasets.versions(project, "changes")] == [first.version]


def test_changes_never_land_on_a_different_version_of_the_same_number(
    admin: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _folder(tmp_path / "d", 6)
    admin.datasets.create(project, "remembered")
    first = admin.datasets.add_version(project, "remembered", data)
    # This machine remembers a version 1 whose manifest differs from the server's (the
    # project was purged and made again under the same name, say).
    stale = local_cache.Manifest(first.version, "a" * 64, {"d0/f0.txt": [1, "b" * 64, None]})
    monkeypatch.setattr(local_cache.HashCache, "manifest", lambda self, place, name: stale)
    (data / "d1" / "f1.txt").write_text("changed")
    second = admin.datasets.add_version(project, "remembered", data)
    assert second.file_count == 6
    diff = admin.datasets.diff(project, "remembered", first.version, second.version)
    assert (diff.added, diff.removed, diff.changed) == ([], [], ["d1/f1.txt"])
