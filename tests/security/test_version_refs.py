"""Version references are parsed in one place: ASCII digits, ``latest`` or an alias.
Unicode digits, exponents, signs and huge numbers answer 404 or 422, never 500."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput
from ghaf.core.refs import Ref, is_reserved, parse_ref
from tests.conftest import Platform, TrainedModel

ODD = [
    "²",
    "٣",
    "\uff11",
    "1e3",
    "-1",
    "+1",
    "1.0",
    "0x10",
    "9" * 30,
    "1" + "0" * 9,
    "0",
    "@²",
    " ",
]


def test_parse_ref() -> None:
    assert parse_ref("3") == Ref(number=3)
    assert parse_ref(3) == Ref(number=3)
    assert parse_ref("@3") == Ref(number=3)
    assert parse_ref("007") == Ref(number=7)
    assert parse_ref("latest") == Ref(latest=True)
    assert parse_ref("@champion") == parse_ref("champion") == Ref(alias="champion")
    assert parse_ref("1e3") == Ref(alias="1e3")  # a name, which then does not exist
    for value in ["²", "٣", "\uff11", "-1", "@-1", "9" * 10, "", "a/b", "x\x00"]:
        with pytest.raises(InvalidInput):
            parse_ref(value)
    with pytest.raises(InvalidInput):
        parse_ref(True)  # type: ignore[arg-type]
    assert is_reserved("latest") and is_reserved("007") and not is_reserved("²")


def test_dataset_refs_never_answer_500(platform: Platform, admin: Client, project: str) -> None:
    admin.datasets.create(project, "ds")
    admin.datasets.add_version(project, "ds", _frame())
    base = f"{platform.url}/api/v1/projects/{project}/datasets/ds"
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    for ref in ODD:
        quoted = quote(ref, safe="")
        for url, params in [
            (f"{base}/versions/{quoted}", None),
            (f"{base}/versions/{quoted}/files", None),
            (f"{base}/versions/{quoted}/lineage", None),
            (f"{base}/diff", {"before": ref, "after": "1"}),
        ]:
            response = httpx.get(url, params=params, headers=headers)
            assert response.status_code in (404, 422), (url, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(f"{base}/versions/1", headers=headers).status_code == 200
    run = admin.runs.create(project, "e")
    for ref in ["²", "-1", "9" * 30]:
        with pytest.raises(InvalidInput):
            admin.runs.log_input(project, run.id, "ds", ref)


def test_model_refs_never_answer_500(
    platform: Platform, admin: Client, project: str, trained: TrainedModel
) -> None:
    admin.models.register(project, "m", path=trained.path, sample=trained.X[:3])
    base = f"{platform.url}/api/v1/projects/{project}/models"
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    for ref in ODD:
        quoted = quote(ref, safe="")
        for url in [
            f"{base}/m/versions/{quoted}",
            f"{base}/m/versions/{quoted}/file",
            f"{base}/m/versions/{quoted}/card",
            f"{base}/{quote('m@' + ref, safe='')}/versions/latest",
        ]:
            response = httpx.get(url, headers=headers)
            assert response.status_code in (404, 422), (url, response.text)
    assert httpx.get(f"{base}/m/versions/1", headers=headers).status_code == 200


def test_aliases_and_tags_cannot_look_like_versions(
    admin: Client, project: str, trained: TrainedModel
) -> None:
    admin.models.register(project, "m", path=trained.path, sample=trained.X[:3])
    for alias in ["007", "latest", "²"]:
        with pytest.raises(InvalidInput):
            admin.models.set_alias(project, "m", alias, 1)
    admin.datasets.create(project, "ds")
    admin.datasets.add_version(project, "ds", _frame())
    for alias in ["007", "latest", "٣"]:
        with pytest.raises(InvalidInput):
            admin.datasets.set_alias(project, "ds", alias, 1)
    with pytest.raises(InvalidInput):
        admin.datasets.set_alias(project, "ds", "prod", 10**12)


def _frame() -> object:
    import pyarrow as pa

    return pa.table({"x": [1, 2, 3]})
