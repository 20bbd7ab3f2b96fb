"""XGBoost and LightGBM served natively (no ONNX): registered, fetched and checked as
``ghaf serve`` does, then answered over OIP v2 and ``/predict`` row for row as the
library itself predicts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ghaf.serving.app import create_serving_app
from ghaf.serving.standalone import prepare
from tests.conftest import Platform, unique
from tests.serving.conftest import AllowAll

Array = np.ndarray[Any, Any]


def _data(features: int = 6) -> tuple[Array, Array]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, features))
    y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] > 0).astype(np.int64)
    return X, y


def _xgboost(folder: Path) -> tuple[Path, Callable[[Array], Array], Array]:
    xgb = pytest.importorskip("xgboost")
    X, y = _data()
    X = X.astype(np.float32)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(X, label=y),
        num_boost_round=8,
    )
    path = folder / "model.json"
    booster.save_model(str(path))
    return path, lambda rows: np.asarray(booster.inplace_predict(rows)), X


def _lightgbm(folder: Path) -> tuple[Path, Callable[[Array], Array], Array]:
    lgb = pytest.importorskip("lightgbm")
    X, y = _data()
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1},
        lgb.Dataset(X, label=y),
        num_boost_round=8,
    )
    path = folder / "model.txt"
    booster.save_model(str(path))
    return path, lambda rows: np.asarray(booster.predict(rows)), X


@pytest.mark.parametrize(
    ("make", "fmt", "datatype", "platform_name"),
    [
        (_xgboost, "xgboost", "FP32", "xgboost_json"),
        (_lightgbm, "lightgbm", "FP64", "lightgbm_text"),
    ],
    ids=["xgboost", "lightgbm"],
)
def test_boosters_are_served_natively_over_both_protocols(
    platform: Platform,
    tmp_path: Path,
    serve_app: Callable[[Any], Any],
    make: Callable[[Path], tuple[Path, Callable[[Array], Array], Array]],
    fmt: str,
    datatype: str,
    platform_name: str,
) -> None:
    path, direct, X = make(tmp_path)
    admin = platform.client()
    project = admin.projects.create(unique(fmt[:4])).name
    registered = admin.models.register(project, "booster", path=path, sample=X[:5])
    assert registered.format == fmt

    fetched = tmp_path / "fetched"
    fetched.mkdir()
    loaded = prepare(admin.models, project, "booster", fetched)
    assert loaded.platform == platform_name
    rows = X[:37]
    expected = direct(rows)

    serving = create_serving_app([loaded], authorizer=AllowAll())
    with serve_app(serving) as url, httpx.Client(base_url=url, timeout=30) as http:
        meta = http.get("/v2/models/booster").json()
        assert meta["platform"] == platform_name
        assert meta["inputs"][0]["datatype"] == datatype

        answer = http.post(
            "/v2/models/booster/infer",
            json={
                "inputs": [
                    {
                        "name": meta["inputs"][0]["name"],
                        "datatype": datatype,
                        "shape": list(rows.shape),
                        "data": rows.ravel().tolist(),
                    }
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        (output,) = answer.json()["outputs"]
        assert output["shape"] == [len(rows)]
        np.testing.assert_allclose(output["data"], expected, rtol=1e-6, atol=1e-7)

        plain = http.post("/predict", json=rows.tolist())
        assert plain.status_code == 200, plain.text
        np.testing.assert_allclose(plain.json(), expected, rtol=1e-6, atol=1e-7)

        wrong = http.post("/predict", json=X[:2, :3].tolist())
        assert wrong.status_code == 400
        assert "shape" in wrong.json()["error"]
