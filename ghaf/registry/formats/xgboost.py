"""XGBoost boosters saved as JSON or UBJSON (``save_model('model.json')``): data only."""

from __future__ import annotations

import json
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
    tabular,
)


class XGBoostFormat(ModelFormat):
    name = "xgboost"
    convertible = True

    def sniff(self, head: bytes, filename: str) -> bool:
        lower = filename.lower()
        if lower.endswith(".ubj"):
            return True
        return lower.endswith(".json") and b'"learner"' in head

    def inspect(self, path: Path, *, trust: Trust) -> Inspection:
        if path.suffix.lower() == ".ubj" or path.name.lower().endswith(".ubj"):
            return Inspection(details={"encoding": "ubjson"})
        try:
            document = json.loads(path.read_bytes())
            learner = document["learner"]
            features = int(learner["learner_model_param"]["num_feature"])
            objective = learner["objective"]["name"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"not a valid XGBoost JSON model: {exc}", field="path") from None
        return Inspection(
            details={"encoding": "json", "objective": objective, "features": features},
            inputs=[{"name": "X", "dtype": "float32", "shape": [-1, features]}],
        )

    def load(self, path: Path, *, trust: Trust, options: LoadOptions = DEFAULT_LOAD) -> Any:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(path))
        booster.set_param({"nthread": options.threads})
        return booster

    def predict(self, model: Any, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        return {"predictions": np.asarray(model.inplace_predict(tabular(inputs)))}
