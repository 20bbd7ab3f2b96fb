"""Hostile registry-policy YAML: alias bombs, self-reference and deep nesting are refused
before they are expanded, with a line number, and the stored policy is left as it was."""

from __future__ import annotations

import time

import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput, NotFound
from ghaf.registry import policy
from tests.conftest import Platform, unique

# ~300 bytes that a plain SafeLoader expands to 10^6 leaves ("billion laughs").
LAUGHS = "\n".join(
    [
        'a: &a ["x","x","x","x","x","x","x","x","x","x"]',
        *(
            f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]"
            for prev, name in zip("abcde", "bcdef", strict=True)
        ),
        "approvals: {required: 1}",
    ]
)
HOSTILE = {
    "billion laughs": LAUGHS,
    "self reference": "gates: &g [*g]\n",
    "alias of a scalar": "x: &x true\nallow_pickle: *x\n",
    "deep nesting": "gates: " + "[" * 5000 + "]" * 5000 + "\n",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_parse_refuses_without_expanding(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as refused:
        policy.parse(text)
    assert time.perf_counter() - started < 1.0
    assert refused.value.field == "policy"
    assert refused.value.detail.startswith("line ")


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_rest_refuses_and_keeps_the_stored_policy(admin: Client, project: str, text: str) -> None:
    admin.models.set_policy(project, "approvals: {required: 2}\n")
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as refused:
        admin.models.set_policy(project, text)
    assert time.perf_counter() - started < 2.0
    assert "YAML aliases" in refused.value.detail or "nested more than" in refused.value.detail
    assert admin.models.policy(project).policy["approvals"]["required"] == 2


def test_anchors_without_aliases_and_plain_documents_still_parse() -> None:
    assert policy.parse("approvals: &n {required: 3}\n").approvals.required == 3
    assert (
        policy.parse("allow_pickle: false\nprotected_aliases: [champion]\n").allow_pickle is False
    )


# Found by the fuzzer (tests/security/test_fuzz.py): each of these was a 500.
ODD_KEYS = {
    "an empty explicit key": "?",
    "a null key": "? : 1\n",
    "a sequence as key": "? [a, b]\n: 1\n",
    "a mapping as key": "? {a: 1}\n: 2\n",
    "an unknown tag": "allow_pickle: !!python/object:os.system x\n",
}


@pytest.mark.parametrize("text", ODD_KEYS.values(), ids=ODD_KEYS.keys())
def test_odd_yaml_is_bad_input_not_a_server_error(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        policy.parse(text)
    assert refused.value.field == "policy"
    assert refused.value.detail.startswith("line ")


def test_odd_yaml_over_http_is_a_422(admin: Client, project: str) -> None:
    with pytest.raises(InvalidInput):
        admin.request("PUT", f"/api/v1/projects/{project}/model-policy", json={"text": "?"})


def test_an_outsiders_bad_policy_gets_the_404_of_a_missing_project(
    platform: Platform, project: str
) -> None:
    _, outsider = platform.new_user()
    for where in (project, unique("missing")):
        with pytest.raises(NotFound):
            outsider.request("PUT", f"/api/v1/projects/{where}/model-policy", json={"text": "?"})
