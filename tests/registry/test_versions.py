"""Registering versions: sources, formats, samples and signatures, aliases, downloads."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

import ghaf
from ghaf.client import Client
from ghaf.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tests.conftest import TrainedModel, audited, unique


def test_register_from_file_checks_and_describes(
    admin: Client, project: str, trained: TrainedModel
) -> None:
    version = admin.models.register(
        project, "churn", path=trained.path, sample=trained.X[:5], description="first"
    )
    assert (version.model, version.version, version.status) == ("churn", 1, "pending")
    assert version.format == "skops"
    assert version.inputs == [{"name": "X", "dtype": "float64", "shape": [-1, 4]}]
    names = {o["name"] for o in version.outputs}
    assert names == {"predictions", "probabilities"}
    assert version.checks["sample_rows"] == 5 and version.checks["predict_ms"] >= 0
    assert version.sha256 == hashlib.sha256(trained.path.read_bytes()).hexdigest()
    second = admin.models.register(project, "churn", path=trained.path, sample=trained.X[:3])
    assert second.version == 2
    listed = admin.models.versions(project, "churn")
    assert [v.version for v in listed] == [2, 1]
    assert admin.models.get(project, "churn").latest_version == 2


def test_register_from_autologged_run_uses_its_sample(
    platform: object, admin: Client, project: str, trained: TrainedModel, monkeypatch
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    monkeypatch.setenv("GHAF_URL", admin.url)
    monkeypatch.setenv("GHAF_TOKEN", admin._http.headers["Authorization"].split()[1])
    ghaf.autolog()
    try:
        with ghaf.start_run("trees", project=project) as run:
            DecisionTreeClassifier(max_depth=3).fit(trained.X, trained.y)
    finally:
        ghaf.autolog(disable=True)
    version = admin.models.register(project, "tree", run=run.id)
    assert version.run == run.id and version.format == "skops"
    assert version.checks["sample_rows"] == 5
    assert version.source == f"run {run.id}: model/model.skops"


def test_signature_that_does_not_match_the_sample_is_refused(
    admin: Client, project: str, trained: TrainedModel
) -> None:
    with pytest.raises(InvalidInput, match=r"declared shape \[-1, 7\], sample has \[5, 4\]"):
        admin.models.register(
            project,
            "churn",
            path=trained.path,
            sample=trained.X[:5],
            inputs=[{"name": "X", "dtype": "float64", "shape": [-1, 7]}],
        )
    with pytest.raises(InvalidInput, match="'extra' is not in the declared signature"):
        admin.models.register(
            project,
            "churn",
            path=trained.path,
            sample={"X": trained.X[:5], "extra": np.ones(5)},
            inputs=[{"name": "X", "dtype": "float64", "shape": [-1, 4]}],
        )
    # A sample of the wrong width reaches the model, which refuses to predict it.
    with pytest.raises(InvalidInput, match=r"load and predict: .*features"):
        admin.models.register(project, "churn", path=trained.path, sample=np.ones((2, 9)))
    with pytest.raises(InvalidInput, match="sample input is required"):
        admin.models.register(project, "churn", path=trained.path)
    with pytest.raises(NotFound):
        admin.models.get(project, "churn")  # nothing was created by refused attempts


def test_a_signature_can_allow_nan_and_reads_back_with_it(
    admin: Client, project: str, trained: TrainedModel
) -> None:
    spec: dict[str, object] = {"name": "X", "dtype": "float64", "shape": [-1, 4]}
    rows = np.asarray(trained.X)[:3]
    nan = admin.models.register(
        project,
        "gaps",
        path=trained.path,
        sample=rows,
        inputs=[spec | {"allow_nan": True}],
    )
    assert nan.inputs == [spec | {"allow_nan": True}]
    assert admin.models.version(project, "gaps", nan.version).inputs == nan.inputs
    # Left out or false, the entry is stored and answered as it was before the field.
    plain = admin.models.register(project, "gaps", path=trained.path, sample=rows, inputs=[spec])
    off = admin.models.register(
        project,
        "gaps",
        path=trained.path,
        sample=rows,
        inputs=[spec | {"allow_nan": False}],
    )
    assert plain.inputs == off.inputs == [spec]
    assert admin.models.version(project, "gaps", off.version).inputs == [spec]
    with pytest.raises(InvalidInput):
        admin.models.register(
            project, "gaps", path=trained.path, sample=rows, inputs=[spec | {"nan": True}]
        )


def test_corrupt_onnx_and_unknown_files_are_refused(
    admin: Client, project: str, tmp_path: Path
) -> None:
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    with pytest.raises(InvalidInput, match="not a valid ONNX model"):
        admin.models.register(project, "bad", path=corrupt, sample=np.ones((1, 2)))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InvalidInput, match="not a model file ghaf can load safely"):
        admin.models.register(project, "bad", path=text, sample=np.ones((1, 2)))
    events = audited(admin, project, "model:register")
    assert [e.outcome for e in events] == ["denied", "denied"]


def test_aliases_resolve_as_name_at_alias(
    admin: Client, project: str, trained: TrainedModel
) -> None:
    for _ in range(2):
        admin.models.register(project, "churn", path=trained.path, sample=trained.X[:2])
    moved = admin.models.set_alias(project, "churn", "challenger", 1)
    assert (moved.version, moved.previous) == (1, None)
    moved = admin.models.set_alias(project, "churn", "challenger", 2)
    assert (moved.version, moved.previous) == (2, 1)
    assert admin.models.version(project, "churn@challenger").version == 2
    assert admin.models.version(project, "churn", "@challenger").version == 2
    assert admin.models.version(project, "churn", "challenger").version == 2
    assert admin.models.version(project, "churn", "latest").version == 2
    assert admin.models.get(project, "churn").aliases == {"challenger": 2}
    assert admin.models.version(project, "churn", 2).aliases == ["challenger"]
    with pytest.raises(NotFound, match="no alias 'prod'"):
        admin.models.version(project, "churn@prod")
    with pytest.raises(InvalidInput, match="reads as a version"):
        admin.models.set_alias(project, "churn", "latest", 1)
    admin.models.delete_alias(project, "churn", "challenger")
    assert admin.models.get(project, "churn").aliases == {}


def test_alias_cannot_point_into_another_model_or_project(
    admin: Client, project: str, trained: TrainedModel
) -> None:
    admin.models.register(project, "a", path=trained.path, sample=trained.X[:2])
    admin.models.register(project, "a", path=trained.path, sample=trained.X[:2])
    admin.models.register(project, "b", path=trained.path, sample=trained.X[:2])
    # Versions are numbered per model: "b" has no version 2, whatever "a" has.
    with pytest.raises(NotFound, match="model 'b' has no version 2"):
        admin.models.set_alias(project, "b", "champion", 2)
    other = admin.projects.create(unique("p")).name
    with pytest.raises(NotFound, match="has no model 'a'"):
        admin.models.set_alias(other, "a", "champion", 1)
    assert admin.models.get(project, "b").aliases == {}


def test_concurrent_alias_moves_last_wins_and_all_are_audited(
    admin: Client, platform, project: str, trained: TrainedModel
) -> None:
    for _ in range(4):
        admin.models.register(project, "churn", path=trained.path, sample=trained.X[:2])
    results: list[int] = []
    errors: list[BaseException] = []

    def move(version: int) -> None:
        try:
            with platform.client() as client:
                results.append(client.models.set_alias(project, "churn", "prod", version).version)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=move, args=(v,)) for v in (1, 2, 3, 4) * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    events = audited(admin, project, "model:alias")
    assert len(events) == 8
    last = events[-1]
    final = admin.models.get(project, "churn").aliases["prod"]
    assert last.detail["version"] == final
    assert admin.audit.verify().ok


def test_download_verifies_and_needs_model_read(
    admin: Client, project: str, trained: TrainedModel, member_in, platform, tmp_path: Path
) -> None:
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:2])
    _, viewer = member_in(project, "viewer")
    target = viewer.models.download(project, "churn", 1, destination=tmp_path)
    assert target.read_bytes() == trained.path.read_bytes()
    _, outsider = platform.new_user()
    with pytest.raises(NotFound):
        outsider.models.download(project, "churn", 1, destination=tmp_path)
    with pytest.raises(PermissionDenied):
        viewer.models.register(project, "churn", path=trained.path, sample=trained.X[:2])


def test_archive_and_update(admin: Client, project: str, trained: TrainedModel) -> None:
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:2])
    admin.models.set_alias(project, "churn", "staging", 1)
    updated = admin.models.update(project, "churn", 1, description="v1", tags={"team": "risk"})
    assert (updated.description, updated.tags) == ("v1", {"team": "risk"})
    with pytest.raises(Conflict, match="holds alias"):
        admin.models.update(project, "churn", 1, archive=True)
    admin.models.delete_alias(project, "churn", "staging")
    assert admin.models.update(project, "churn", 1, archive=True).status == "archived"
    with pytest.raises(Conflict, match="archived"):
        admin.models.set_alias(project, "churn", "staging", 1)


def test_module_level_calls_use_the_stored_login(
    platform, admin: Client, project: str, trained: TrainedModel, monkeypatch
) -> None:
    monkeypatch.setenv("GHAF_URL", platform.url)
    monkeypatch.setenv("GHAF_TOKEN", platform.admin_token)
    monkeypatch.setenv("GHAF_PROJECT", project)
    version = ghaf.models.register("churn", path=trained.path, sample=trained.X[:2])
    ghaf.models.set_alias("churn", "staging", version.version)
    assert ghaf.models.version("churn@staging").id == version.id
    assert [m.name for m in ghaf.models.list()] == ["churn"]


def test_skops_file_with_an_untrusted_type_is_refused_until_the_policy_trusts_it(
    admin: Client, project: str, tmp_path: Path, trained: TrainedModel
) -> None:
    import os

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "transform.skops"
    sio.dump(FunctionTransformer(func=np.sqrt).fit(trained.X), path)
    admin.models.register(project, "sqrt", path=path, sample=trained.X[:2])  # numpy: trusted
    sio.dump(FunctionTransformer(func=os.getcwd), path)
    with pytest.raises(InvalidInput, match=r"not trusted: posix\.getcwd") as refused:
        admin.models.register(project, "cwd", path=path, sample=trained.X[:2])
    assert refused.value.extra["untrusted_types"] == ["posix.getcwd"]
    assert audited(admin, project, "model:register")[-1].outcome == "denied"


def test_purging_a_project_removes_its_models(
    platform, admin: Client, trained: TrainedModel
) -> None:
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from ghaf.core.clock import utcnow
    from ghaf.projects.manifest import purge_due_projects
    from ghaf.registry.models import ModelVersion, RegisteredModel
    from ghaf.security.tenancy import Project

    doomed = admin.projects.create(unique("p")).name
    admin.models.register(doomed, "churn", path=trained.path, sample=trained.X[:5])
    admin.models.set_alias(doomed, "churn", "champion", 1)
    admin.projects.delete(doomed)
    ctx = platform.runtime.context(write=True, system_actor="test")
    try:
        project_id = ctx.session.scalar(select(Project.id).where(Project.name == doomed))
        ctx.session.execute(
            update(Project)
            .where(Project.name == doomed)
            .values(purge_after=utcnow() - timedelta(seconds=1))
        )
        ctx.session.commit()
    finally:
        ctx.close()
    assert doomed in purge_due_projects(platform.runtime)
    with platform.runtime.database.transaction(write=False) as session:
        left = session.scalar(
            select(func.count())
            .select_from(ModelVersion)
            .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
            .where(RegisteredModel.project_id == project_id)
        )
    assert project_id is not None and left == 0
    with pytest.raises(NotFound):
        admin.models.get(doomed, "churn")


def test_lists_page_with_page_size_and_cursor(
    platform: object, admin: Client, project: str, trained: TrainedModel
) -> None:
    import httpx

    for _ in range(3):
        admin.models.register(project, "churn", path=trained.path, sample=trained.X[:2])
    base = f"{admin.url}/api/v1/projects/{project}/models/churn/versions"
    headers = {"Authorization": admin._http.headers["Authorization"]}
    first = httpx.get(base, params={"page_size": 2}, headers=headers).json()
    assert [v["version"] for v in first["items"]] == [3, 2] and first["next_cursor"]
    rest = httpx.get(
        base, params={"page_size": 2, "cursor": first["next_cursor"]}, headers=headers
    ).json()
    assert [v["version"] for v in rest["items"]] == [1] and rest["next_cursor"] is None
    too_big = httpx.get(base, params={"page_size": 1001}, headers=headers)
    assert too_big.status_code == 422 and "page_size" in too_big.text
    page = admin.models.versions_page(project, "churn", page_size=1)
    assert [v.version for v in page.items] == [3]
    assert [v.version for v in admin.models.versions(project, "churn", page_size=1)] == [3, 2, 1]
    reviews = f"{base}/1/reviews"
    for n in range(3):
        admin.models.request_approval(project, "churn", 1, comment=f"please {n}")
    one = httpx.get(reviews, params={"page_size": 1}, headers=headers).json()
    assert len(one["items"]) == 1 and one["next_cursor"]
    every = admin.models.reviews(project, "churn", 1, page_size=1)
    assert [r.comment for r in every] == ["please 0", "please 1", "please 2"]
