"""Pickles through the server: refused by default; with ``allow_pickle`` only for
``model:trust`` and only after the scan passes; a malicious one never runs."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput, PermissionDenied
from tests.conftest import TrainedModel, audited

MARKER = Path("/tmp/ghaf-server-pickle-marker")


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture(autouse=True)
def no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a payload executed"


def _joblib(obj: object, path: Path, compress: object = 3) -> Path:
    import joblib

    buffer = io.BytesIO()
    joblib.dump(obj, buffer, compress=compress)
    path.write_bytes(buffer.getvalue())
    return path


def test_pickles_are_refused_by_default_with_the_safe_alternatives(
    admin: Client, project: str, trained: TrainedModel, tmp_path: Path
) -> None:
    benign = tmp_path / "model.pkl"
    benign.write_bytes(pickle.dumps(trained.model))
    for path in (benign, _joblib(trained.model, tmp_path / "model.joblib")):
        with pytest.raises(InvalidInput, match=r"refuses it\. Save the model in a safe format"):
            admin.models.register(project, "churn", path=path, sample=trained.X[:2])
    events = audited(admin, project, "model:register")
    assert [e.outcome for e in events] == ["denied", "denied"]
    assert "skops" in events[0].detail["reason"]


def test_allow_pickle_needs_model_trust_and_a_passing_scan(
    admin: Client,
    project: str,
    trained: TrainedModel,
    member_in,
    tmp_path: Path,
) -> None:
    admin.models.set_policy(project, "allow_pickle: true\n")
    benign = _joblib(trained.model, tmp_path / "model.joblib")
    _, maintainer = member_in(project, "maintainer")
    with pytest.raises(PermissionDenied, match="model:trust"):
        maintainer.models.register(project, "churn", path=benign, sample=trained.X[:2])
    version = admin.models.register(project, "churn", path=benign, sample=trained.X[:2])
    scan = version.checks["format"]["scan"]
    assert version.format == "pickle" and scan["verdict"] == "passed"
    assert scan["container"] == "zlib"
    registered = audited(admin, project, "model:register")[-1]
    assert registered.outcome == "success" and registered.detail["pickle_scan"] == "passed"
    assert (
        "sklearn.linear_model._logistic.LogisticRegression" in registered.detail["pickle_targets"]
    )
    # The same trust does not stretch to a malicious file, plain, nested or compressed.
    attacks = {
        "evil.pkl": lambda p: p.write_bytes(pickle.dumps({"model": Evil()})),
        "evil.joblib": lambda p: _joblib({"m": trained.model, "x": Evil()}, p),
        "evil-gz.joblib": lambda p: _joblib([Evil()], p, ("gzip", 3)),
    }
    for name, write in attacks.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(
            InvalidInput,
            match=r"posix\.system \(is not on the allow-list; picklescan rates it dangerous\)",
        ):
            admin.models.register(project, "churn", path=path, sample=trained.X[:2])
    denied = [e for e in audited(admin, project, "model:register") if e.outcome == "denied"]
    assert len(denied) == 4  # the maintainer's attempt and the three payloads
    assert [v.version for v in admin.models.versions(project, "churn")] == [1]
    # The gates and a later check load it only in the child, under the same allow-list.
    assert admin.models.check_gates(project, "churn", 1).passed


def test_issue_12_chain_is_refused_over_rest_even_when_the_owner_vouches(
    admin: Client, project: str, trained: TrainedModel, tmp_path: Path
) -> None:
    """Any user can own a project and write its policy: the owner is the attacker here."""
    import numpy as np

    from tests.security.pickle_payloads import function_transformer_chain

    target = tmp_path / "evil.pth"
    path = tmp_path / "pipeline.pkl"
    path.write_bytes(function_transformer_chain(target, b"import os\n"))
    admin.models.set_policy(project, "allow_pickle: true\n")
    with pytest.raises(InvalidInput, match=r"is functools\.partial, which"):
        admin.models.register(project, "chain", path=path, sample=np.zeros((2, 2)))
    admin.models.set_policy(
        project,
        "allow_pickle: true\npickle_allow: ['sklearn.*', 'functools.*', 'operator.*']\n",
    )
    with pytest.raises(InvalidInput, match="picklescan rates it dangerous") as refused:
        admin.models.register(project, "chain", path=path, sample=np.zeros((2, 2)))
    assert "pickle_allow lists it" in str(refused.value)
    assert not target.exists()
    denied = audited(admin, project, "model:register")
    assert [e.outcome for e in denied] == ["denied", "denied"]
    # a real model still registers, scanned by both and loaded by a confined child
    version = admin.models.register(
        project, "churn", path=_joblib(trained.model, tmp_path / "m.joblib"), sample=trained.X[:2]
    )
    assert version.checks["format"]["scan"]["picklescan"]["verdict"] == "clean"
    from ghaf.registry import confine

    if confine.landlock_abi() >= 1:
        assert version.checks["confinement"]["confined"] is True
