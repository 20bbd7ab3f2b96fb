from __future__ import annotations

import itertools
from pathlib import Path

from ghaf.security.permissions import (
    PLATFORM_ADMIN,
    PROJECT_ROLES,
    ROLE_PERMISSIONS,
    highest_role,
    render_matrix,
)


def test_roles_are_cumulative() -> None:
    for lower, higher in itertools.pairwise(PROJECT_ROLES):
        assert ROLE_PERMISSIONS[lower] < ROLE_PERMISSIONS[higher]
    assert ROLE_PERMISSIONS["owner"] < ROLE_PERMISSIONS[PLATFORM_ADMIN]


def test_key_rules() -> None:
    assert "member:write" not in ROLE_PERMISSIONS["member"]
    assert "member:grant-owner" not in ROLE_PERMISSIONS["maintainer"]
    assert "project:delete" in ROLE_PERMISSIONS["owner"]
    assert all(p.endswith(":read") for p in ROLE_PERMISSIONS["viewer"])


def test_highest_role() -> None:
    assert highest_role(["viewer", "maintainer", "member"]) == "maintainer"
    assert highest_role([]) is None


def test_security_doc_shows_the_current_matrix() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    assert render_matrix() in doc, "regenerate the matrix: python -m ghaf.security.permissions"
