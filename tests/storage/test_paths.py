from __future__ import annotations

import pytest

from ghaf.core.errors import InvalidInput
from ghaf.storage.paths import normalise_path


@pytest.mark.parametrize(
    "path", ["model.onnx", "a/b/c.txt", "données/é.csv", "x" * 255, "with space/and-dash_1.bin"]
)
def test_valid(path: str) -> None:
    assert normalise_path(path) == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "relative"),
        ("../escape", "'..'"),
        ("a/../b", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a\nb", "control"),
        ("a\x1bb", "control"),
        ("x" * 1025, "1025"),
        ("a/" + "y" * 256, "255"),
        ("trailing/", "empty"),
    ],
)
def test_refused(path: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        normalise_path(path)


def test_nfc() -> None:
    assert normalise_path("e\u0301") == "\u00e9"
