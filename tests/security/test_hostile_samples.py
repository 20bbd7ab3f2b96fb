"""A run's ``model/sample.npz`` is attacker-controlled bytes: a pickled object array or a
corrupt archive is a 422 naming the sample, never a 500, and nothing is registered."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import ghaf
from ghaf.client import Client
from ghaf.core.errors import InvalidInput, NotFound
from ghaf.registry import tensors
from tests.conftest import TrainedModel


def _object_array_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=np.array([{"a": 1}, None], dtype=object))
    return buffer.getvalue()


HOSTILE = {
    "pickled object array": (_object_array_npz(), "pickled object array"),
    "not a zip": (b"PK\x03\x04 not really", "corrupt"),
    "empty": (b"", "corrupt"),
}


@pytest.mark.parametrize(("data", "why"), HOSTILE.values(), ids=HOSTILE.keys())
def test_from_npz_refuses_with_the_field(data: bytes, why: str) -> None:
    with pytest.raises(InvalidInput, match=why) as refused:
        tensors.from_npz(data)
    assert refused.value.field == "sample"


@pytest.mark.parametrize(("data", "why"), HOSTILE.values(), ids=HOSTILE.keys())
def test_registering_from_a_run_with_a_hostile_sample_is_422(
    admin: Client,
    project: str,
    trained: TrainedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    data: bytes,
    why: str,
) -> None:
    monkeypatch.setenv("GHAF_URL", admin.url)
    monkeypatch.setenv("GHAF_TOKEN", admin._http.headers["Authorization"].split()[1])
    sample = tmp_path / "sample.npz"
    sample.write_bytes(data)
    with ghaf.start_run("hostile-samples", project=project) as run:
        run.log_artifact(trained.path, path="model/model.skops")
        run.log_artifact(sample, path="model/sample.npz")
    with pytest.raises(InvalidInput, match=why) as refused:
        admin.models.register(project, "from-run", run=run.id)
    assert refused.value.field == "sample"
    with pytest.raises(NotFound):
        admin.models.get(project, "from-run")
