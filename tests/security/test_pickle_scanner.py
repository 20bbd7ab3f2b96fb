"""The pickle allow-list judges what a global really is, and picklescan's verdict is
final: issue 12's chain of stdlib objects named through scikit-learn modules is refused
by the scan and by the loader, and never writes its file."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from ghaf.core.errors import InvalidInput
from ghaf.registry.formats import pickle as pk
from ghaf.registry.formats.pickle import ALLOWED_NAMES, restricted_load, scan
from tests.security.pickle_payloads import function_transformer_chain

STDLIB = {
    "sklearn.compose._column_transformer.partial": "functools.partial",
    "sklearn.feature_selection._base.attrgetter": "operator.attrgetter",
    "sklearn.feature_extraction._dict_vectorizer.itemgetter": "operator.itemgetter",
    "sklearn.base.defaultdict": "collections.defaultdict",
    "sklearn.utils.discovery.Path": "pathlib.Path",
}


def test_the_payload_is_real(tmp_path: Path) -> None:
    """Unpickled without a guard, predicting the sample writes the attacker's file."""
    target = tmp_path / "evil.pth"
    data = function_transformer_chain(target, b"import os; os.system('id')\n")
    model = pickle.loads(data)  # proving the payload works, in a tmp folder
    model.transform(np.zeros((2, 2)))
    assert target.read_bytes() == b"import os; os.system('id')\n"


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_stdlib_objects_named_through_sklearn_are_refused(tmp_path: Path, protocol: int) -> None:
    target = tmp_path / "evil.pth"
    data = function_transformer_chain(target, b"import os\n", protocol=protocol)
    found = scan(data)
    for written, really in STDLIB.items():
        assert written in found.refused, found.refused
        assert f"is {really}, which" in found.refused[written]
        assert found.canonical[written] == really
    for dangerous in ("functools.partial", "operator.attrgetter", "operator.itemgetter"):
        assert dangerous in found.picklescan["dangerous"]
    assert found.as_dict()["picklescan"]["verdict"] == "dangerous"
    with pytest.raises(InvalidInput, match=r"is (functools\.partial|operator\.\w+), which"):
        restricted_load(data, allowed=())
    assert not target.exists()


def test_picklescan_refuses_even_what_the_policy_vouches_for(tmp_path: Path) -> None:
    target = tmp_path / "evil.pth"
    data = function_transformer_chain(target, b"import os\n")
    vouched = (*STDLIB, "functools.*", "operator.*")
    found = scan(data, allowed=vouched)
    assert set(found.refused) == {
        "sklearn.compose._column_transformer.partial",
        "sklearn.feature_selection._base.attrgetter",
        "sklearn.feature_extraction._dict_vectorizer.itemgetter",
    }
    for why in found.refused.values():
        assert "picklescan rates it dangerous" in why and "pickle_allow lists it" in why

    class System:
        def __reduce__(self):
            return (os.system, ("touch " + str(target),))

    class Exec:
        def __reduce__(self):
            return (exec, ("open(" + repr(str(target)) + ", 'w')",))

    for payload, policy in ((System(), ("os.*", "posix.*")), (Exec(), ("builtins.*",))):
        found = scan(pickle.dumps(payload), allowed=policy)
        assert found.refused and all("picklescan" in w for w in found.refused.values())
    assert not target.exists()


def test_only_a_class_defined_in_sklearn_under_its_own_name_passes() -> None:
    def one(module: str, name: str) -> dict[str, str]:
        return scan(f"c{module}\n{name}\n)R.".encode()).refused

    assert one("sklearn.linear_model._logistic", "LogisticRegression") == {}
    assert one("scipy.sparse._csr", "csr_matrix") == {}
    assert one("numpy", "float64") == {}
    # a re-export of an sklearn class: only its own name is accepted
    assert (
        "only that name"
        in one("sklearn.linear_model", "LogisticRegression")[
            "sklearn.linear_model.LogisticRegression"
        ]
    )
    # test helpers (CheckingClassifier calls any function it is given), datasets
    assert one("sklearn.utils._mocking", "CheckingClassifier")
    assert one("sklearn.datasets._base", "Bunch")
    assert one("sklearn.externals._packaging.version", "Version")
    assert one("numpy", "load") == {"numpy.load": "is a function, not a class"}
    assert one("numpy", "ndarray") == {}
    assert "not one of numpy's scalar" in one("numpy", "memmap")["numpy.memmap"]


def test_every_allowed_name_is_what_it_says() -> None:
    """No entry is an import of something else (numpy.core vs numpy._core aside)."""
    for target in sorted(ALLOWED_NAMES):
        module, _, name = target.rpartition(".")
        obj = pk._resolve(module, name)
        found = pk._identity(obj)
        assert found is not None, target
        top = module.split(".")[0]
        assert found[0].split(".")[0] == top, (target, found)
        assert found[1] == name or found[1].endswith("." + name), (target, found)
    assert "collections.defaultdict" not in ALLOWED_NAMES  # it calls its factory
    assert not any(t.startswith(("functools", "operator", "pathlib")) for t in ALLOWED_NAMES)


def _models() -> dict[str, object]:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return {
        "logistic": LogisticRegression().fit(X, y),
        "forest": RandomForestClassifier(8, random_state=np.random.RandomState(0)).fit(X, y),
        "pipeline": Pipeline([("s", StandardScaler()), ("m", LogisticRegression())]).fit(X, y),
        "histgb": HistGradientBoostingClassifier(max_iter=5).fit(X, y),
        "knn": KNeighborsClassifier(3).fit(X, y),
        "X": X,
    }


def test_real_fitted_models_still_pass_and_load() -> None:
    import joblib

    models = _models()
    X = models.pop("X")
    assert isinstance(X, np.ndarray)
    for label, model in models.items():
        files = {f"protocol {p}": pickle.dumps(model, protocol=p) for p in range(6)}
        for compress in (0, 3, ("gzip", 3)):
            buffer = io.BytesIO()
            joblib.dump(model, buffer, compress=compress)
            files[f"joblib {compress}"] = buffer.getvalue()
        for how, data in files.items():
            found = scan(data)
            assert not found.refused, (label, how, found.refused)
            assert found.picklescan["verdict"] == "clean", (label, how)
            loaded = restricted_load(data, allowed=())
            assert (loaded.predict(X) == model.predict(X)).all(), (label, how)  # type: ignore[attr-defined]


def test_numpy_core_and_numpy__core_spellings_both_load() -> None:
    data = pickle.dumps(np.arange(3.0), protocol=2)
    assert b"numpy._core" in data
    old = data.replace(b"numpy._core", b"numpy.core")
    for variant in (data, old):
        assert not scan(variant).refused
        assert (restricted_load(variant, allowed=()) == np.arange(3.0)).all()
