"""A signature registered with ``allow_nan`` reaches serving: the registry stores it, the
fetched version carries it, and NaN inputs are answered instead of refused."""

from __future__ import annotations

import json
import math
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


def test_nan_is_answered_when_the_registered_signature_allows_it(
    platform: Platform, tmp_path: Path, serve_app: Callable[[Any], Any]
) -> None:
    lgb = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 3))
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 5, "verbose": -1, "num_threads": 1},
        lgb.Dataset(X, label=(X[:, 0] > 0).astype(np.int64)),
        num_boost_round=4,
    )
    path = tmp_path / "model.txt"
    booster.save_model(str(path))
    admin = platform.client()
    project = admin.projects.create(unique("nan")).name
    spec = {"name": "X", "dtype": "float64", "shape": [-1, 3]}
    # LightGBM routes missing values down its trees: NaN is a real input for it.
    admin.models.register(
        project, "gaps", path=path, sample=X[:5], inputs=[spec | {"allow_nan": True}]
    )
    admin.models.register(project, "strict", path=path, sample=X[:5], inputs=[spec])
    served = [prepare(admin.models, project, name, tmp_path / name) for name in ("gaps", "strict")]
    assert [m.signature[0].allow_nan for m in served] == [True, False]

    rows = X[:2].copy()
    rows[0, 1] = math.nan
    # JSON has no NaN; Python's json (and many clients) write the bare token anyway.
    body = json.dumps(
        {
            "inputs": [
                {"name": "X", "datatype": "FP64", "shape": [2, 3], "data": rows.ravel().tolist()}
            ]
        }
    )
    headers = {"content-type": "application/json"}
    app = create_serving_app(served, authorizer=AllowAll())
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post("/v2/models/gaps/infer", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        (output,) = answer.json()["outputs"]
        np.testing.assert_allclose(output["data"], booster.predict(rows), rtol=1e-6)
        refused = http.post("/v2/models/strict/infer", content=body, headers=headers)
        assert refused.status_code == 400
        assert "holds 1 NaN or infinite value(s)" in refused.json()["error"]
