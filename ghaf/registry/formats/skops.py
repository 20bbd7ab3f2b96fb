"""scikit-learn models saved with ``skops.io``: loaded only with an explicit trusted-type
list. Types beyond skops' own safe set must be named in the project's policy
(``trusted_types``); anything else is refused and listed."""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ghaf.core.errors import InvalidInput
from ghaf.registry.formats import (
    DEFAULT_LOAD,
    Arrays,
    Inspection,
    LoadOptions,
    ModelFormat,
    Trust,
    UnsafeModel,
    tabular,
)

# scikit-learn's own internals that skops does not trust by default but whose state is
# plain arrays: tree structures, neighbour indexes, distance metrics, optimiser state.
BUILTIN_TRUSTED = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    }
)


def predict_tabular(model: Any, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
    X = tabular(inputs)
    if not hasattr(model, "predict") and hasattr(model, "transform"):
        return {"transformed": np.asarray(model.transform(X))}  # a fitted preprocessing step
    outputs = {"predictions": np.asarray(model.predict(X))}
    if hasattr(model, "predict_proba"):
        # e.g. an SVC without probability=True has the method but refuses to run it
        with contextlib.suppress(AttributeError, NotImplementedError):
            outputs["probabilities"] = np.asarray(model.predict_proba(X))
    return outputs


class SkopsFormat(ModelFormat):
    name = "skops"
    convertible = True

    def sniff(self, head: bytes, filename: str) -> bool:
        return filename.lower().endswith(".skops") or (
            head.startswith(b"PK") and b"schema.json" in head
        )

    def untrusted(self, path: Path, trust: Trust) -> list[str]:
        import skops.io as sio

        try:
            found = sio.get_untrusted_types(file=path)
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise InvalidInput(f"not a valid skops file: {exc}", field="path") from None
        allowed = BUILTIN_TRUSTED | set(trust.skops_types)
        return sorted(t for t in found if t not in allowed)

    def inspect(self, path: Path, *, trust: Trust) -> Inspection:
        refused = self.untrusted(path, trust)
        if refused:
            raise UnsafeModel(
                f"the skops file uses {len(refused)} type(s) that are not trusted: "
                f"{', '.join(refused)}. Loading would construct them; if you know them to "
                "be safe, a project owner can list them under trusted_types in the "
                "registry policy",
                field="path",
                untrusted_types=refused,
            )
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        return Inspection(details={"members": len(names)})

    def load(self, path: Path, *, trust: Trust, options: LoadOptions = DEFAULT_LOAD) -> Any:
        import skops.io as sio

        allowed = BUILTIN_TRUSTED | set(trust.skops_types)
        trusted = sorted(set(sio.get_untrusted_types(file=path)) & allowed)
        return sio.load(path, trusted=trusted)

    def predict(self, model: Any, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        return predict_tabular(model, inputs)
