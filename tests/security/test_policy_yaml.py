"""Hostile registry-policy YAML: alias bombs, self-reference and deep nesting are refused
before they are expanded, with a line number, and the stored policy is left as it was."""

from __future__ import annotations

import time

import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput
from ghaf.registry import policy

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
