from __future__ import annotations

import uuid

import pytest

from ghaf.core.errors import InvalidInput
from ghaf.core.ids import new_id
from ghaf.core.names import validate_name
from ghaf.core.paging import decode_cursor, encode_cursor


@pytest.mark.parametrize("name", ["risk", "fraud-detection", "a", "v1.2_x", "A" * 64])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "a/b", "..", "x\\y", "a\x00", "a" * 65, "_x", "a b", "é", "a\nb"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_name(name, field="project")
    assert info.value.field == "project" and info.value.detail.startswith("project")


def test_ids_are_uuid7_and_ordered() -> None:
    ids = [new_id() for _ in range(2000)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_cursor_round_trip_and_garbage() -> None:
    assert decode_cursor(encode_cursor("abc")) == "abc"
    assert decode_cursor(encode_cursor(42)) == 42
    for garbage in ("", "!!", encode_cursor(None), "e30"):
        with pytest.raises(InvalidInput):
            decode_cursor(garbage)
