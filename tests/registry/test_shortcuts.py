"""``ghaf.runs`` and ``ghaf.models`` take what the client methods they wrap take, in the
same order, with ``project`` moved to a keyword (docs/conventions.md, SDK)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from ghaf.client.registry import Models
from ghaf.client.shortcuts import ModelsShortcut, RunsShortcut
from ghaf.client.tracking import Runs

PAIRS = [(RunsShortcut, Runs), (ModelsShortcut, Models)]


def _public_methods(cls: type) -> list[str]:
    return sorted(n for n, v in vars(cls).items() if callable(v) and not n.startswith("_"))


def _cases() -> list[Any]:
    return [
        pytest.param(shortcut, client, name, id=f"{shortcut.__name__}.{name}")
        for shortcut, client in PAIRS
        for name in _public_methods(shortcut)
    ]


def _expected(client_method: Any) -> inspect.Signature:
    """The client method's signature with ``project`` moved to the end, keyword-only."""
    parameters = list(inspect.signature(client_method).parameters.values())
    assert [p.name for p in parameters[:2]] == ["self", "project"], (
        f"{client_method.__qualname__} must take the project first"
    )
    project = inspect.Parameter(
        "project", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None"
    )
    rest = parameters[2:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest):
        raise AssertionError(f"{client_method.__qualname__}: **kwargs cannot be mirrored")
    return inspect.Signature(
        [parameters[0], *rest, project],
        return_annotation=inspect.signature(client_method).return_annotation,
    )


def _normalised(signature: inspect.Signature) -> inspect.Signature:
    # builtins.list (the client's spelling inside a class that defines list) and list
    # name the same type.
    def clean(annotation: Any) -> Any:
        return annotation.replace("builtins.", "") if isinstance(annotation, str) else annotation

    return signature.replace(
        parameters=[
            p.replace(annotation=clean(p.annotation)) for p in signature.parameters.values()
        ],
        return_annotation=clean(signature.return_annotation),
    )


@pytest.mark.parametrize(("shortcut", "client", "name"), _cases())
def test_shortcut_mirrors_its_client_method(shortcut: type, client: type, name: str) -> None:
    client_method = getattr(client, name, None)
    assert client_method is not None, f"{client.__name__} has no {name}: the shortcut wraps nothing"
    found = _normalised(inspect.signature(getattr(shortcut, name)))
    wanted = _normalised(_expected(client_method))
    assert found == wanted, f"{shortcut.__name__}.{name}{found} != {wanted}"


def test_the_check_catches_a_drift() -> None:
    """The comparison is not vacuous: a reordered or renamed argument fails it."""

    class Drifted:
        def version(self, version: Any = None, name: str = "", *, project: str | None = None):  # type: ignore[no-untyped-def]
            ...

    assert _normalised(inspect.signature(Drifted.version)) != _normalised(_expected(Models.version))
