"""The artifact store through the API and SDK, on the local backend."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ghaf.client import Client
from ghaf.core.errors import Conflict, IntegrityFailure, InvalidInput, NotFound, PermissionDenied
from ghaf.security.tenancy import Project
from ghaf.storage.models import Blob
from tests.conftest import Platform, unique

MakePlatform = Callable[..., Platform]


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / unique("f")
    path.write_bytes(os.urandom(size))
    return path


def _object_files(platform: Platform, project: str | None = None) -> list[Path]:
    """Stored object files: all of them, or only ``project``'s.

    Counting one project's folder keeps a test's before/after comparison free of what
    another project's background work writes meanwhile (the platform is shared).
    """
    root = platform.settings.artifacts_dir
    if project is not None:
        with platform.runtime.database.session(write=False) as session:
            project_id = session.query(Project.id).filter(Project.name == project).scalar()
        root = root / "objects" / str(project_id)
        if not root.exists():
            return []
    # (audit-witness/ holds the audit trail's append-only checkpoints, not artifacts)
    return [p for p in root.rglob("*") if p.is_file() and "audit-witness" not in p.parts]


def test_put_get_round_trip(admin: Client, project: str, tmp_path: Path) -> None:
    source = _file(tmp_path, 3 * (1 << 20) + 123)
    stored = admin.artifacts.upload(project, "models/churn.onnx", source)
    assert stored.size == source.stat().st_size
    assert stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "back.onnx"
    admin.artifacts.download(project, "models/churn.onnx", target)
    assert target.read_bytes() == source.read_bytes()
    assert admin.artifacts.get_by_id(project, stored.id).path == "models/churn.onnx"


def test_bytes_are_encrypted_at_rest(platform: Platform, admin: Client, project: str) -> None:
    marker = b"PLAINTEXT-MARKER-" * 1000
    admin.artifacts.upload(project, "secret.txt", marker)
    for path in _object_files(platform):
        assert b"PLAINTEXT-MARKER" not in path.read_bytes()


def test_range_requests(platform: Platform, admin: Client, project: str) -> None:
    data = os.urandom(2 * (1 << 20) + 500)
    admin.artifacts.upload(project, "big.bin", data)
    assert (
        admin.artifacts.read(project, "big.bin", start=(1 << 20) - 3, end=(1 << 20) + 3)
        == (data[(1 << 20) - 3 : (1 << 20) + 4])
    )
    assert admin.artifacts.read(project, "big.bin", start=len(data) - 10) == data[-10:]
    url = f"{platform.url}/api/v1/projects/{project}/artifacts/big.bin"
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    partial = httpx.get(url, headers={**headers, "Range": "bytes=-5"})
    assert partial.status_code == 206 and partial.content == data[-5:]
    assert partial.headers["content-range"] == f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}"
    assert httpx.get(url, headers={**headers, "Range": f"bytes={len(data)}-"}).status_code == 416
    assert httpx.get(url, headers={**headers, "Range": "bytes=1-2,5-6"}).status_code == 416


def test_zero_byte_artifact(admin: Client, project: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    stored = admin.artifacts.upload(project, "empty", empty)
    assert stored.size == 0 and stored.sha256 == hashlib.sha256(b"").hexdigest()
    assert admin.artifacts.read(project, "empty") == b""
    assert admin.artifacts.verify(project).ok


def test_dedup_stores_content_once(
    platform: Platform, admin: Client, project: str, tmp_path: Path
) -> None:
    source = _file(tmp_path, 1 << 20)
    before = len(_object_files(platform, project))
    admin.artifacts.upload(project, "a.bin", source)
    admin.artifacts.upload(project, "copy/of/a.bin", source)
    assert len(_object_files(platform, project)) == before + 1
    with platform.runtime.database.session(write=False) as session:
        project_id = admin.projects.get(project).id
        assert session.query(Blob).filter(Blob.project_id == project_id).count() == 1
    # deleting one name keeps the bytes for the other
    admin.artifacts.delete(project, "a.bin")
    assert admin.artifacts.read(project, "copy/of/a.bin") == source.read_bytes()
    admin.artifacts.delete(project, "copy/of/a.bin")
    assert len(_object_files(platform, project)) == before


def test_wrong_declared_hash_stores_nothing(
    platform: Platform, admin: Client, project: str
) -> None:
    before = len(_object_files(platform, project))
    with pytest.raises(InvalidInput, match="does not match the declared sha256") as info:
        admin.request(
            "PUT",
            f"/api/v1/projects/{project}/artifacts/x.bin",
            content=b"abc",
            headers={"X-Ghaf-SHA256": "0" * 64},
        )
    assert info.value.field == "X-Ghaf-SHA256"
    with pytest.raises(NotFound):
        admin.artifacts.get(project, "x.bin")
    assert len(_object_files(platform, project)) == before
    with pytest.raises(InvalidInput, match="64 lowercase hex"):
        admin.request(
            "PUT",
            f"/api/v1/projects/{project}/artifacts/y.bin",
            content=b"abc",
            headers={"X-Ghaf-SHA256": "not-hex"},
        )
    with pytest.raises(InvalidInput, match="is required"):
        admin.request("PUT", f"/api/v1/projects/{project}/artifacts/y.bin", content=b"abc")


def test_interrupted_upload_leaves_nothing(platform: Platform, admin: Client, project: str) -> None:
    before = len(_object_files(platform, project))

    def dies_half_way() -> Iterator[bytes]:
        yield os.urandom(3 << 20)
        raise ConnectionError("client died")

    with pytest.raises(Exception):
        admin.request(
            "PUT",
            f"/api/v1/projects/{project}/artifacts/half.bin",
            content=dies_half_way(),
            headers={"X-Ghaf-SHA256": "a" * 64},
        )
    with pytest.raises(NotFound):
        admin.artifacts.get(project, "half.bin")
    # The server learns of the client's death only when its next read fails, so
    # the half-written part may appear after the client gave up: wait for the
    # server to both notice and clean up, not just for a count that may not yet
    # include the part.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if len(_object_files(platform, project)) == before and admin.artifacts.verify(project).ok:
            break
        time.sleep(0.1)
    assert len(_object_files(platform, project)) == before
    assert admin.artifacts.verify(project).ok


def test_overwrite_is_explicit(admin: Client, project: str) -> None:
    admin.artifacts.upload(project, "m.bin", b"one")
    with pytest.raises(Conflict, match="overwrite"):
        admin.artifacts.upload(project, "m.bin", b"two")
    admin.artifacts.upload(project, "m.bin", b"two", overwrite=True)
    assert admin.artifacts.read(project, "m.bin") == b"two"


def test_listing_with_prefix_and_pages(admin: Client, project: str) -> None:
    for name in ("runs/1/a", "runs/1/b", "runs/2/a", "runs%/x", "models/m"):
        admin.artifacts.upload(project, name, name.encode())
    assert [a.path for a in admin.artifacts.list(project, prefix="runs/1/")] == [
        "runs/1/a",
        "runs/1/b",
    ]
    assert [a.path for a in admin.artifacts.list(project, prefix="runs%")] == ["runs%/x"]
    assert len(admin.artifacts.list(project, page_size=2)) == 5


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "a/../../b", "/abs", "a\\b", "a\x00b", "x" * 1100]
)
def test_hostile_paths_are_refused(
    platform: Platform, admin: Client, project: str, path: str
) -> None:
    before = len(_object_files(platform, project))
    with pytest.raises((InvalidInput, NotFound)):
        admin.artifacts.upload(project, path, b"data")
    assert len(_object_files(platform, project)) == before
    assert not (platform.settings.home.parent / "etc").exists()


def test_another_projects_artifact_is_not_found(
    platform: Platform, admin: Client, project: str
) -> None:
    stored = admin.artifacts.upload(project, "private.bin", b"mine")
    other = admin.projects.create(unique("p")).name
    with pytest.raises(NotFound):
        admin.artifacts.get_by_id(other, stored.id)
    _, outsider = platform.new_user()
    with pytest.raises(NotFound):
        outsider.artifacts.get_by_id(project, stored.id)
    with pytest.raises(NotFound):
        outsider.artifacts.read(project, "private.bin")


def test_roles(project: str, member_in, admin: Client) -> None:  # type: ignore[no-untyped-def]
    admin.artifacts.upload(project, "r.bin", b"r")
    _, viewer = member_in(project, "viewer")
    assert viewer.artifacts.read(project, "r.bin") == b"r"
    with pytest.raises(PermissionDenied, match="artifact:write"):
        viewer.artifacts.upload(project, "v.bin", b"v")
    _, member = member_in(project, "member")
    member.artifacts.upload(project, "m.bin", b"m")
    with pytest.raises(PermissionDenied, match="artifact:delete"):
        member.artifacts.delete(project, "m.bin")
    with pytest.raises(PermissionDenied, match="key:rotate"):
        member.keys.rotate(project)


def test_verify_reports_corrupt_missing_and_orphaned(fresh_platform: MakePlatform) -> None:
    live = fresh_platform()
    admin = live.admin
    project = admin.projects.create("v").name
    admin.artifacts.upload(project, "corrupt.bin", os.urandom(5000))
    admin.artifacts.upload(project, "missing.bin", os.urandom(5000))
    admin.artifacts.upload(project, "fine.bin", os.urandom(5000))
    with live.runtime.database.session(write=False) as session:
        keys = {b.sha256: b.object_key for b in session.query(Blob)}
    root = live.settings.artifacts_dir
    corrupt_key = keys[admin.artifacts.get(project, "corrupt.bin").sha256]
    missing_key = keys[admin.artifacts.get(project, "missing.bin").sha256]
    blob = bytearray((root / corrupt_key).read_bytes())
    blob[100] ^= 0xFF
    (root / corrupt_key).write_bytes(bytes(blob))
    (root / missing_key).unlink()
    orphan = root / Path(corrupt_key).parent / "01900000-0000-7000-8000-000000000000"
    orphan.write_bytes(b"left behind")
    report = admin.artifacts.verify(project)
    assert not report.ok and report.checked == 3
    assert [p.paths for p in report.corrupt] == [["corrupt.bin"]]
    assert [p.paths for p in report.missing] == [["missing.bin"]]
    assert [p.key for p in report.orphaned] == [str(orphan.relative_to(root))]
    assert orphan.exists() and not (root / missing_key).exists()  # reported, never repaired
    with pytest.raises(IntegrityFailure):
        admin.artifacts.read(project, "corrupt.bin")


def test_rotation_interrupted_then_resumed(
    fresh_platform: MakePlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ghaf.storage import service

    live = fresh_platform()
    admin = live.admin
    project = admin.projects.create("k").name
    contents = {f"f{i}": os.urandom(100 + i) for i in range(5)}
    for name, data in contents.items():
        admin.artifacts.upload(project, name, data)
    assert admin.keys.list(project).items[0].objects == 5
    monkeypatch.setattr(service, "REWRAP_BATCH", 2)
    ctx = live.runtime.context(write=True, system_actor="test")
    try:
        partial = service.rotate_key(ctx, project, max_batches=1)
    finally:
        ctx.close()
    assert (partial.version, partial.rewrapped, partial.complete) == (2, 2, False)
    keys = admin.keys.list(project)
    assert keys.pending_rewrap == 3
    assert {v.version: v.objects for v in keys.items} == {1: 3, 2: 2}
    for name, data in contents.items():  # reads work mid-rotation
        assert admin.artifacts.read(project, name) == data
    admin.artifacts.upload(project, "during", b"written mid-rotation")
    resumed = admin.keys.rotate(project)
    assert resumed.resumed and resumed.complete and resumed.version == 2
    assert {v.version: v.objects for v in admin.keys.list(project).items} == {1: 0, 2: 6}
    again = admin.keys.rotate(project)
    assert again.version == 3 and not again.resumed and again.rewrapped == 6
    for name, data in contents.items():
        assert admin.artifacts.read(project, name) == data
    assert admin.artifacts.verify(project).ok


def test_residency_is_enforced(fresh_platform: MakePlatform) -> None:
    live = fresh_platform(region="ae-abudhabi", storage_region="eu-west")
    admin = live.admin
    project = admin.projects.create("uae", allowed_regions=["ae-abudhabi", "ae-dubai"]).name
    with pytest.raises(PermissionDenied, match="eu-west") as info:
        admin.artifacts.upload(project, "data.csv", b"a,b\n1,2\n")
    assert "allowed_regions" in str(info.value)
    last = admin.audit.list(project=project)[-1]
    assert (last.action, last.outcome) == ("artifact:write", "denied")
    assert "eu-west" in last.detail["reason"]
    open_project = admin.projects.create("eu", allowed_regions=["eu-west"]).name
    admin.artifacts.upload(open_project, "data.csv", b"a,b\n")
    with pytest.raises(Conflict, match="eu-west: 1 object") as narrowing:
        admin.projects.update(open_project, allowed_regions=["ae-dubai"])
    assert narrowing.value.field == "allowed_regions"
    assert admin.projects.get(open_project).allowed_regions == ["eu-west"]
    widened = admin.projects.update(open_project, allowed_regions=["eu-west", "ae-dubai"])
    assert widened.allowed_regions == ["ae-dubai", "eu-west"]


def test_region_policy_needs_owner(project: str, member_in) -> None:  # type: ignore[no-untyped-def]
    _, maintainer = member_in(project, "maintainer")
    maintainer.projects.update(project, description="maintainers may edit this")
    with pytest.raises(PermissionDenied, match="policy:write"):
        maintainer.projects.update(project, allowed_regions=["anywhere"])


def test_purge_removes_stored_bytes(fresh_platform: MakePlatform) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from ghaf.core.clock import utcnow
    from ghaf.projects.manifest import purge_due_projects
    from ghaf.security.tenancy import Project

    live = fresh_platform()
    project = live.admin.projects.create("gone").name
    live.admin.artifacts.upload(project, "x.bin", os.urandom(1000))
    assert _object_files(live)
    live.admin.projects.delete(project)
    with live.runtime.database.transaction() as session:
        session.execute(update(Project).values(purge_after=utcnow() - timedelta(seconds=1)))
    assert purge_due_projects(live.runtime) == [project]
    assert _object_files(live) == []


@pytest.mark.parametrize("wrong_version", [1, 7])
def test_wrong_kek_version_is_an_integrity_error(
    fresh_platform: MakePlatform, wrong_version: int
) -> None:
    from sqlalchemy import update

    live = fresh_platform()
    admin = live.admin
    project = admin.projects.create("kv").name
    admin.artifacts.upload(project, "w.bin", b"weights")
    admin.keys.rotate(project)  # now wrapped under version 2
    with live.runtime.database.transaction() as session:
        session.execute(update(Blob).values(kek_version=wrong_version))
    with pytest.raises(IntegrityFailure, match="version"):
        admin.artifacts.read(project, "w.bin")
    report = admin.artifacts.verify(project)
    assert not report.ok and report.corrupt[0].paths == ["w.bin"]


@pytest.mark.parametrize("raw", ["%2E%2E/%2E%2E/etc/passwd", "a/%2E%2E/b", "a%5Cb", "a%00b"])
def test_server_refuses_encoded_traversal(platform: Platform, project: str, raw: str) -> None:
    before = len(_object_files(platform, project))
    response = httpx.put(
        f"{platform.url}/api/v1/projects/{project}/artifacts/{raw}",
        content=b"x",
        headers={"Authorization": f"Bearer {platform.admin_token}"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "path"
    assert len(_object_files(platform, project)) == before


def test_verifying_every_object_needs_a_maintainer(
    admin: Client, project: str, member_in: Callable[[str, str], tuple[str, Client]]
) -> None:
    """``artifacts:verify`` re-reads the whole project's storage: viewers and members may
    read objects one at a time, not start a full re-read at will."""
    admin.artifacts.upload(project, "v/one.bin", b"x" * 100)
    for role in ("viewer", "member"):
        _, client = member_in(project, role)
        with pytest.raises(PermissionDenied):
            client.artifacts.verify(project)
    _, maintainer = member_in(project, "maintainer")
    assert maintainer.artifacts.verify(project).ok
