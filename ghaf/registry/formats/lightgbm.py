"""LightGBM boosters saved as text (``booster.save_model('model.txt')``): data only."""

from __future__ import annotations

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


class LightGBMFormat(ModelFormat):
    name = "lightgbm"
    convertible = True

    def sniff(self, head: bytes, filename: str) -> bool:
        return head.startswith(b"tree\n") or head.startswith(b"tree\r\n")

    def inspect(self, path: Path, *, trust: Trust) -> Inspection:
        header: dict[str, str] = {}
        with path.open("rb") as handle:
            for raw in handle:
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("Tree="):
                    break
                key, _, value = line.partition("=")
                header[key] = value
        if "version" not in header or "max_feature_idx" not in header:
            raise InvalidInput("not a valid LightGBM text model (no header)", field="path")
        try:
            features = int(header["max_feature_idx"]) + 1
        except ValueError:
            raise InvalidInput("LightGBM header has a bad max_feature_idx", field="path") from None
        return Inspection(
            details={"version": header["version"], "objective": header.get("objective", "")},
            inputs=[{"name": "X", "dtype": "float64", "shape": [-1, features]}],
        )

    def load(self, path: Path, *, trust: Trust, options: LoadOptions = DEFAULT_LOAD) -> Any:
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(path))
        # A booster read from a file ignores constructor params, and LightGBM takes the
        # thread count per predict call; keeping it in the booster's own params (over the
        # training run's value) lets predict() bound OpenMP to what serving sized, and to
        # one thread in the checker's child, as its OMP_NUM_THREADS=1 does.
        booster.params["num_threads"] = options.threads
        return booster

    def predict(self, model: Any, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        threads = model.params.get("num_threads", DEFAULT_LOAD.threads)
        return {"predictions": np.asarray(model.predict(tabular(inputs), num_threads=threads))}
