"""Packs: many small contents in one request and one encrypted object, both ways."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ghaf.client import Client
from ghaf.client.files import LocalFile
from ghaf.core.errors import IntegrityFailure, InvalidInput, NotFound, PermissionDenied
from ghaf.storage import packs
from ghaf.storage.models import Blob
from tests.conftest import Platform

MakePlatform = Callable[..., Platform]


def _files(tmp_path: Path, contents: list[bytes]) -> list[LocalFile]:
    files = []
    for index, content in enumerate(contents):
        location = tmp_path / f"member-{index}"
        location.write_bytes(content)
        sha256 = hashlib.sha256(content).hexdigest()
        files.append(LocalFile(location.name, location, len(content), sha256))
    return files


def _post_pack(platform: Platform, project: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{platform.url}/api/v1/projects/{project}/blobs:pack",
        content=body,
        headers={
            "Authorization": f"Bearer {platform.admin_token}",
            "Content-Type": packs.MEDIA_TYPE,
        },
    )


def _objects(platform: Platform, project_id: str) -> list[Path]:
    folder = platform.settings.artifacts_dir / "objects" / project_id
    return [p for p in folder.glob("*") if p.is_file()] if folder.exists() else []


def _project_id(platform: Platform, project: str) -> str:
    from ghaf.security.tenancy import Project

    with platform.runtime.database.session(write=False) as session:
        return session.query(Project).filter_by(name=project).one().id


def test_pack_round_trip_stores_each_content_once(
    platform: Platform, admin: Client, project: str, tmp_path: Path
) -> None:
    contents = [os.urandom(size) for size in (1, 700, 70_000, 200_000)] + [b"", b"same", b"same"]
    files = _files(tmp_path, contents)
    out = admin.artifacts.put_pack(project, files)
    assert (out.members, out.stored, out.deduplicated) == (7, 6, 1)
    assert out.bytes == sum(len(c) for c in contents)
    # One object holds them all; each reads back alone, by hash, and in one fetch.
    assert len(_objects(platform, _project_id(platform, project))) == 1
    hashes = [f.sha256 for f in files]
    assert admin.artifacts.present(project, hashes) == set(hashes)
    fetched = dict(admin.artifacts.fetch_pack(project, hashes))
    assert fetched == {hashlib.sha256(c).hexdigest(): c for c in contents}
    one = admin.request("GET", f"/api/v1/projects/{project}/blobs/{files[2].sha256}")
    assert one.content == contents[2]
    again = admin.artifacts.put_pack(project, files)
    assert (again.stored, again.deduplicated) == (0, 7)
    assert len(_objects(platform, _project_id(platform, project))) == 1  # nothing new kept
    event = admin.audit.list(project=project)[-1]
    assert (event.action, event.detail["members"], event.detail["stored"]) == ("blob:put", 7, 0)
    assert admin.artifacts.verify(project).ok


def test_a_member_that_does_not_match_its_hash_stores_nothing(
    platform: Platform, admin: Client, project: str, tmp_path: Path
) -> None:
    good, bad = _files(tmp_path, [b"good", b"bad"])
    lying = LocalFile(bad.path, bad.location, bad.size, hashlib.sha256(b"other").hexdigest())
    with pytest.raises(InvalidInput, match="pack member 1 does not match") as info:
        admin.artifacts.put_pack(project, [good, lying])
    assert info.value.field == "body"
    assert admin.artifacts.present(project, [good.sha256]) == set()
    assert _objects(platform, _project_id(platform, project)) == []
    assert admin.artifacts.verify(project).ok


def test_a_file_that_changed_since_hashing_is_refused_locally(
    admin: Client, project: str, tmp_path: Path
) -> None:
    (file,) = _files(tmp_path, [b"twelve bytes"])
    Path(file.location or "").write_bytes(b"now it is longer")
    with pytest.raises(InvalidInput, match="changed since it was hashed"):
        admin.artifacts.put_pack(project, [file])


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (packs.frame_header("a" * 64, 10) + b"short", "truncated"),
        (b"\x00" * 7, "truncated"),
        (packs.frame_header("a" * 64, packs.MEMBER_MAX + 1), "at most"),
    ],
    ids=["cut-member", "cut-header", "oversized"],
)
def test_malformed_packs_are_refused(
    platform: Platform, admin: Client, project: str, body: bytes, match: str
) -> None:
    response = _post_pack(platform, project, body)
    assert response.status_code == 422
    assert match in response.json()["detail"]
    assert _objects(platform, _project_id(platform, project)) == []


def test_pack_limits_members_per_request() -> None:
    reader = packs.FrameReader(members_max=2)
    body = b"".join(
        packs.frame_header(hashlib.sha256(c).hexdigest(), 1) + c for c in (b"a", b"b", b"c")
    )
    with pytest.raises(InvalidInput, match="at most 2 members"):
        list(reader.feed(body))


def test_pack_permissions(  # type: ignore[no-untyped-def]
    admin: Client, project: str, member_in, tmp_path: Path
) -> None:
    files = _files(tmp_path, [b"x"])
    admin.artifacts.put_pack(project, files)
    _, viewer = member_in(project, "viewer")
    with pytest.raises(PermissionDenied, match="artifact:write"):
        viewer.artifacts.put_pack(project, _files(tmp_path, [b"y"]))
    assert dict(viewer.artifacts.fetch_pack(project, [files[0].sha256])) == {files[0].sha256: b"x"}
    stranger = admin.projects.create("elsewhere").name
    with pytest.raises(NotFound):
        viewer.artifacts.put_pack(stranger, files)
    with pytest.raises(NotFound):
        list(viewer.artifacts.fetch_pack(stranger, [files[0].sha256]))


def test_fetching_unknown_content_names_it(admin: Client, project: str) -> None:
    with pytest.raises(NotFound, match="c" * 64 + r" \(and 1 more\)"):
        list(admin.artifacts.fetch_pack(project, ["c" * 64, "d" * 64]))


def test_pack_is_refused_outside_allowed_regions(
    fresh_platform: MakePlatform, tmp_path: Path
) -> None:
    live = fresh_platform(region="ae-abudhabi", storage_region="eu-west")
    project = live.admin.projects.create("uae", allowed_regions=["ae-abudhabi"]).name
    with pytest.raises(PermissionDenied, match="eu-west"):
        live.admin.artifacts.put_pack(project, _files(tmp_path, [b"data"]))


def test_members_survive_rotation_and_are_verified(
    fresh_platform: MakePlatform, tmp_path: Path
) -> None:
    live = fresh_platform()
    admin = live.admin
    project = admin.projects.create("p").name
    contents = [os.urandom(90_000) for _ in range(5)]
    files = _files(tmp_path, contents)
    admin.artifacts.put_pack(project, files)
    keys = admin.keys.list(project)
    assert keys.items[0].objects == 1  # one pack, one data key
    rotated = admin.keys.rotate(project)
    assert rotated.complete and rotated.rewrapped == 5
    assert dict(admin.artifacts.fetch_pack(project, [f.sha256 for f in files])) == {
        f.sha256: c for f, c in zip(files, contents, strict=True)
    }
    report = admin.artifacts.verify(project)
    assert report.ok and report.checked == 5
    (pack,) = _objects(live, _project_id(live, project))
    damaged = bytearray(pack.read_bytes())
    damaged[200_000] ^= 0xFF  # inside the third member
    pack.write_bytes(bytes(damaged))
    report = admin.artifacts.verify(project)
    assert not report.ok and len(report.corrupt) == 1
    with pytest.raises(IntegrityFailure):
        list(admin.artifacts.fetch_pack(project, [files[2].sha256]))
    assert dict(admin.artifacts.fetch_pack(project, [files[0].sha256])) == {
        files[0].sha256: contents[0]
    }


def test_a_pack_object_goes_with_its_last_member(
    fresh_platform: MakePlatform, tmp_path: Path
) -> None:
    live = fresh_platform()
    admin = live.admin
    project = admin.projects.create("p").name
    first, second = _files(tmp_path, [b"first", b"second"])
    admin.artifacts.put_pack(project, [first, second])
    admin.artifacts.upload(project, "a.txt", b"first")  # linked: no second copy
    admin.artifacts.upload(project, "b.txt", b"second")
    project_id = _project_id(live, project)
    admin.artifacts.delete(project, "a.txt")
    assert len(_objects(live, project_id)) == 1
    assert admin.artifacts.read(project, "b.txt") == b"second"
    admin.artifacts.delete(project, "b.txt")
    assert _objects(live, project_id) == []
    with live.runtime.database.session(write=False) as session:
        assert session.query(Blob).filter_by(project_id=project_id).count() == 0


def test_large_content_is_not_fetched_in_a_pack(
    admin: Client, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = admin.artifacts.upload(project, "big.bin", os.urandom(3000))
    monkeypatch.setattr(packs, "MEMBER_MAX", 1000)  # the server runs in this process
    with pytest.raises(InvalidInput, match="fetch it on its own"):
        list(admin.artifacts.fetch_pack(project, [stored.sha256]))


def test_openapi_documents_the_binary_bodies(platform: Platform) -> None:
    spec = httpx.get(f"{platform.url}/api/v1/openapi.json").json()
    pack = spec["paths"]["/api/v1/projects/{project}/blobs:pack"]["post"]
    assert packs.MEDIA_TYPE in pack["requestBody"]["content"]
    blob = spec["paths"]["/api/v1/projects/{project}/blobs/{sha256}"]["put"]
    assert "application/octet-stream" in blob["requestBody"]["content"]
    assert "/api/v1/projects/{project}/blobs:fetch" in spec["paths"]
