"""Dataset versions from files and folders: incremental uploads, tags, downloads, bad input."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ghaf.client import Client
from ghaf.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tests.conftest import Platform, unique


def _folder(root: Path, files: int, size: int = 200) -> Path:
    for i in range(files):
        path = root / f"part-{i // 10}" / f"file-{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return root


def _counting(client: Client) -> list[str]:
    """Record the SHA-256 of every content the client uploads, packed or on its own."""
    uploads: list[str] = []
    upload_one, upload_pack = client.datasets._upload, client.artifacts.put_pack

    def one(project, file, progress):  # type: ignore[no-untyped-def]
        uploads.append(file.sha256)
        upload_one(project, file, progress)

    def pack(project, files, **options):  # type: ignore[no-untyped-def]
        uploads.extend(f.sha256 for f in files)
        return upload_pack(project, files, **options)

    client.datasets._upload = one  # type: ignore[method-assign]
    client.artifacts.put_pack = pack  # type: ignore[method-assign]
    return uploads


def test_folder_versions_upload_only_what_changed(
    admin: Client, project: str, tmp_path: Path
) -> None:
    data = _folder(tmp_path / "data", 100)
    admin.datasets.create(project, "images", description="training images")
    uploads = _counting(admin)
    first = admin.datasets.add_version(project, "images", data, description="initial")
    assert (first.version, first.file_count, first.parent) == (1, 100, None)
    assert len(uploads) == 100
    for i in range(10):
        (data / f"part-{i}" / f"file-{i * 10}.bin").write_bytes(os.urandom(300))
    uploads.clear()
    second = admin.datasets.add_version(project, "images", data)
    assert (second.version, second.parent) == (2, 1)
    assert len(uploads) == 10
    assert second.total_bytes == first.total_bytes + 10 * 100
    assert [v.version for v in admin.datasets.versions(project, "images")] == [1, 2]
    assert "latest" in admin.datasets.version(project, "images").aliases
    assert admin.datasets.get(project, "images").latest == 2


def test_single_file_and_download(admin: Client, project: str, tmp_path: Path) -> None:
    source = tmp_path / "credit.csv"
    source.write_bytes(b"id,income\n1,100\n2,200\n")
    admin.datasets.create(project, "credit")
    admin.datasets.add_version(project, "credit", source)
    assert [f.path for f in admin.datasets.files(project, "credit", 1)] == ["credit.csv"]
    out = tmp_path / "out"
    admin.datasets.download(project, "credit", "latest", destination=out)
    assert (out / "credit.csv").read_bytes() == source.read_bytes()


def test_download_folder_round_trip(admin: Client, project: str, tmp_path: Path) -> None:
    data = _folder(tmp_path / "d", 25, size=5000)
    admin.datasets.create(project, "d")
    admin.datasets.add_version(project, "d", data)
    out = tmp_path / "out"
    admin.datasets.download(project, "d", 1, destination=out)
    for original in data.rglob("*.bin"):
        assert (out / original.relative_to(data)).read_bytes() == original.read_bytes()


def test_aliases_move_and_are_audited(admin: Client, project: str, tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one")
    b.write_text("two")
    admin.datasets.create(project, "t")
    admin.datasets.add_version(project, "t", a)
    admin.datasets.add_version(project, "t", b)
    first = admin.datasets.set_alias(project, "t", "prod-training", 1)
    assert (first.alias, first.version, first.previous) == ("prod-training", 1, None)
    assert admin.datasets.version(project, "t", "prod-training").version == 1
    assert admin.datasets.version(project, "t", 1).aliases == ["prod-training"]
    moved = admin.datasets.set_alias(project, "t", "prod-training", 2)
    assert (moved.version, moved.previous, moved.updated_by) == (2, 1, "admin")
    assert admin.datasets.version(project, "t", "prod-training").version == 2
    assert admin.datasets.version(project, "t", 2).aliases == ["prod-training", "latest"]
    moves = [e.detail for e in admin.audit.list(project=project) if e.action == "dataset:alias"]
    assert moves[-1] == {"from": 1, "to": 2}
    with pytest.raises(InvalidInput, match="reserved") as reserved:
        admin.datasets.set_alias(project, "t", "latest", 1)
    assert reserved.value.field == "alias"
    with pytest.raises(NotFound, match="no version or alias '9'"):
        admin.datasets.set_alias(project, "t", "x", 9)
    admin.datasets.delete_alias(project, "t", "prod-training")
    removed = [e for e in admin.audit.list(project=project) if e.action == "dataset:alias-delete"]
    assert removed[-1].detail == {"was": 2}
    with pytest.raises(NotFound, match="no version or alias 'prod-training'"):
        admin.datasets.version(project, "t", "prod-training")
    with pytest.raises(NotFound, match="no alias 'prod-training'") as gone:
        admin.datasets.delete_alias(project, "t", "prod-training")
    assert gone.value.field == "alias"


def test_alias_routes_use_the_conventions_words(
    admin: Client, project: str, tmp_path: Path
) -> None:
    """PUT/DELETE .../aliases/{alias}; the old tags route is gone; bad input is a 4xx."""
    (tmp_path / "a.txt").write_text("one")
    admin.datasets.create(project, "w")
    admin.datasets.add_version(project, "w", tmp_path / "a.txt")
    base = f"/api/v1/projects/{project}/datasets/w"
    answer = admin.request("PUT", f"{base}/aliases/prod", json={"version": 1}).json()
    assert (answer["dataset"], answer["alias"], answer["version"]) == ("w", "prod", 1)
    with pytest.raises(NotFound):
        admin.request("PUT", f"{base}/tags/prod", json={"version": 1})
    with pytest.raises(InvalidInput) as bad:
        admin.request("PUT", f"{base}/aliases/prod", json={"version": 0})
    assert bad.value.field == "version"
    with pytest.raises(InvalidInput) as bad_name:
        admin.request("DELETE", f"{base}/aliases/{'x' * 200}")
    assert bad_name.value.field == "alias"


def test_versions_page_with_page_size_and_cursor(
    admin: Client, project: str, tmp_path: Path
) -> None:
    admin.datasets.create(project, "paged")
    for i in range(3):
        (tmp_path / "f.txt").write_text(str(i))
        admin.datasets.add_version(project, "paged", tmp_path / "f.txt")
    url = f"/api/v1/projects/{project}/datasets/paged/versions"
    first = admin.request("GET", url, params={"page_size": 2}).json()
    assert [v["version"] for v in first["items"]] == [1, 2] and first["next_cursor"]
    rest = admin.request("GET", url, params={"page_size": 2, "cursor": first["next_cursor"]}).json()
    assert [v["version"] for v in rest["items"]] == [3] and rest["next_cursor"] is None
    assert rest["items"][0]["aliases"] == ["latest"]
    assert [v.version for v in admin.datasets.versions(project, "paged", page_size=1)] == [1, 2, 3]
    with pytest.raises(InvalidInput) as bad:
        admin.request("GET", url, params={"page_size": 0})
    assert bad.value.field == "page_size"
    with pytest.raises(InvalidInput) as wrong:
        admin.request("GET", url, params={"cursor": "bm90LW91cnM"})
    assert wrong.value.field == "cursor"


@pytest.mark.parametrize("case", ["missing", "empty", "symlink-out", "symlink-in"])
def test_bad_sources(admin: Client, project: str, tmp_path: Path, case: str) -> None:
    admin.datasets.create(project, "bad")
    source = tmp_path / "src"
    source.mkdir()
    if case == "missing":
        source = tmp_path / "nope"
        match = "does not exist"
    elif case == "empty":
        match = "empty folder"
    elif case == "symlink-out":
        (source / "f.txt").write_text("x")
        (source / "link").symlink_to("/etc/hostname")
        match = "outside the folder"
    else:
        (source / "f.txt").write_text("x")
        (source / "link").symlink_to(source / "f.txt")
        match = "inside the folder"
    with pytest.raises(InvalidInput, match=match):
        admin.datasets.add_version(project, "bad", source)
    assert admin.datasets.versions(project, "bad") == []


def test_unreadable_file(
    admin: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root in CI, where chmod 000 still reads: simulate the refusal instead.
    source = tmp_path / "secret.bin"
    source.write_bytes(b"x")
    real_open = Path.open

    def refusing_open(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self == source:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    admin.datasets.create(project, "u")
    with pytest.raises(InvalidInput, match="cannot be read"):
        admin.datasets.add_version(project, "u", source)


def test_file_changing_while_hashed(
    admin: Client, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ghaf.client import datasets as sdk

    source = tmp_path / "growing.log"
    source.write_bytes(b"a" * 1000)
    real_open = Path.open

    def appending_open(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        handle = real_open(self, *args, **kwargs)
        if self == source and "b" in (args[0] if args else kwargs.get("mode", "")):
            with real_open(self, "ab") as writer:
                writer.write(b"more")
        return handle

    monkeypatch.setattr(Path, "open", appending_open)
    admin.datasets.create(project, "g")
    with pytest.raises(InvalidInput, match="changed while it was being hashed"):
        admin.datasets.add_version(project, "g", source)
    monkeypatch.undo()
    assert admin.datasets.versions(project, "g") == []
    assert sdk.CHUNK > 0


def test_manifest_with_unuploaded_or_bad_entries(admin: Client, project: str) -> None:
    admin.datasets.create(project, "m")
    base = f"/api/v1/projects/{project}/datasets/m/versions"
    ghost = {"path": "a.bin", "size": 1, "sha256": "b" * 64}
    with pytest.raises(Conflict, match="not uploaded") as info:
        admin.request("POST", base, json={"files": [ghost]})
    assert info.value.field == "files"
    stored = admin.artifacts.upload(project, "x.bin", b"abc")
    good = {"path": "x.bin", "size": 3, "sha256": stored.sha256}
    with pytest.raises(InvalidInput, match="appears twice"):
        admin.request("POST", base, json={"files": [good, good]})
    with pytest.raises(InvalidInput, match="3 bytes"):
        admin.request("POST", base, json={"files": [{**good, "size": 4}]})
    with pytest.raises(InvalidInput, match=r"'\.\.'"):
        admin.request("POST", base, json={"files": [{**good, "path": "../x"}]})
    with pytest.raises(InvalidInput):
        admin.request("POST", base, json={"files": []})
    assert admin.datasets.versions(project, "m") == []


def test_concurrent_adds_get_distinct_versions(
    platform: Platform, project: str, tmp_path: Path
) -> None:
    admin = platform.admin
    admin.datasets.create(project, "c")
    sources = []
    for i in range(4):
        path = tmp_path / f"s{i}.txt"
        path.write_text(f"content {i}")
        sources.append(path)
    results: list[int] = []
    errors: list[Exception] = []

    def add(path: Path) -> None:
        try:
            results.append(platform.client().datasets.add_version(project, "c", path).version)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(p,)) for p in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [1, 2, 3, 4]


def test_content_named_by_a_version_is_never_deleted(
    admin: Client, project: str, tmp_path: Path
) -> None:
    source = tmp_path / "shared.bin"
    source.write_bytes(os.urandom(2000))
    admin.artifacts.upload(project, "shared.bin", source)
    admin.datasets.create(project, "keep")
    admin.datasets.add_version(project, "keep", source)
    admin.artifacts.delete(project, "shared.bin")  # the dataset still names the content
    out = tmp_path / "out"
    admin.datasets.download(project, "keep", destination=out)
    assert (out / "shared.bin").read_bytes() == source.read_bytes()
    assert admin.artifacts.verify(project).ok


def test_roles_and_isolation(
    platform: Platform,
    project: str,
    member_in,  # type: ignore[no-untyped-def]
    admin: Client,
    tmp_path: Path,
) -> None:
    source = tmp_path / "f.txt"
    source.write_text("data")
    admin.datasets.create(project, "r")
    _, viewer = member_in(project, "viewer")
    with pytest.raises(PermissionDenied, match="artifact:write"):
        viewer.datasets.add_version(project, "r", source)
    admin.datasets.add_version(project, "r", source)
    assert viewer.datasets.version(project, "r").file_count == 1
    _, outsider = platform.new_user()
    with pytest.raises(NotFound):
        outsider.datasets.get(project, "r")
    with pytest.raises(Conflict):
        admin.datasets.create(project, "r")
    other = admin.projects.create(unique("p")).name
    with pytest.raises(NotFound):
        admin.datasets.get(other, "r")


def test_purging_a_project_removes_its_datasets(fresh_platform, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from sqlalchemy import update

    from ghaf.core.clock import utcnow
    from ghaf.projects.manifest import purge_due_projects
    from ghaf.security.tenancy import Project

    live = fresh_platform()
    project = live.admin.projects.create("gone").name
    data = _folder(tmp_path / "d", 5)
    live.admin.datasets.create(project, "d")
    live.admin.datasets.add_version(project, "d", data)
    live.admin.projects.delete(project)
    with live.runtime.database.transaction() as session:
        session.execute(update(Project).values(purge_after=utcnow() - timedelta(seconds=1)))
    assert purge_due_projects(live.runtime) == [project]
    root = live.settings.artifacts_dir
    objects = [p for p in root.rglob("*") if p.is_file() and "audit-witness" not in p.parts]
    assert objects == []


def test_provenance_records_git_commit_and_dirty_flag(
    admin: Client, project: str, tmp_path: Path
) -> None:
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "data.csv").write_text("a\n1\n")
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "data"], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    admin.datasets.create(project, "prov")
    clean = admin.datasets.add_version(project, "prov", repo / "data.csv")
    assert clean.provenance["git_commit"] == head and clean.provenance["git_dirty"] is False
    assert clean.provenance["command"] and clean.provenance["host"]
    (repo / "data.csv").write_text("a\n2\n")
    dirty = admin.datasets.add_version(project, "prov", repo / "data.csv")
    assert dirty.provenance["git_dirty"] is True


def test_external_reference_to_a_shared_path(admin: Client, project: str, tmp_path: Path) -> None:
    from ghaf.core.errors import IntegrityFailure

    shared = _folder(tmp_path / "shared", 5)
    admin.datasets.create(project, "ext")
    uploads = _counting(admin)
    version = admin.datasets.add_version(project, "ext", shared, reference=True)
    assert version.external and version.file_count == 5 and uploads == []
    assert all(f.uri and f.uri.startswith("file:///") for f in admin.datasets.files(project, "ext"))
    out = tmp_path / "out"
    admin.datasets.download(project, "ext", destination=out)
    assert (out / "part-0" / "file-3.bin").read_bytes() == (
        shared / "part-0" / "file-3.bin"
    ).read_bytes()
    (shared / "part-0" / "file-3.bin").write_bytes(b"changed behind our back")
    with pytest.raises(IntegrityFailure, match="changed since the version was recorded"):
        admin.datasets.download(project, "ext", destination=tmp_path / "again")
    (shared / "part-0" / "file-3.bin").unlink()
    with pytest.raises(IntegrityFailure, match="gone"):
        admin.datasets.download(project, "ext", destination=tmp_path / "third")


def test_external_reference_to_s3(
    admin: Client, project: str, tmp_path: Path, s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import boto3

    from ghaf.core.errors import IntegrityFailure

    bucket = unique("lake")
    s3_server.settings(bucket)  # creates the bucket
    monkeypatch.setenv("GHAF_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("GHAF_S3_REGION", "us-east-1")
    monkeypatch.setenv("GHAF_S3_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("GHAF_S3_SECRET_ACCESS_KEY", "test")
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"raw/2026/part-{i}.csv", Body=f"a,b\n{i},{i}\n")
    admin.datasets.create(project, "lake")
    version = admin.datasets.add_version(project, "lake", f"s3://{bucket}/raw/", reference=True)
    assert version.external and version.file_count == 3
    assert [f.path for f in admin.datasets.files(project, "lake")] == [
        "2026/part-0.csv",
        "2026/part-1.csv",
        "2026/part-2.csv",
    ]
    out = tmp_path / "out"
    admin.datasets.download(project, "lake", destination=out)
    assert (out / "2026" / "part-1.csv").read_text() == "a,b\n1,1\n"
    s3.put_object(Bucket=bucket, Key="raw/2026/part-1.csv", Body="tampered")
    with pytest.raises(IntegrityFailure, match="changed since"):
        admin.datasets.download(project, "lake", destination=tmp_path / "again")
    with pytest.raises(InvalidInput, match="no objects"):
        admin.datasets.add_version(project, "lake", f"s3://{bucket}/empty/", reference=True)


def test_bad_external_uris_are_refused(admin: Client, project: str) -> None:
    admin.datasets.create(project, "u2")
    entry = {"path": "a", "size": 1, "sha256": "c" * 64, "uri": "http://evil.example/x"}
    with pytest.raises(InvalidInput, match="s3:// or file:///"):
        admin.request(
            "POST", f"/api/v1/projects/{project}/datasets/u2/versions", json={"files": [entry]}
        )
