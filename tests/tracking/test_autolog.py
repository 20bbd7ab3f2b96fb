"""``ghaf.autolog()`` for scikit-learn, and system metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import ghaf
from ghaf.client import Client


@pytest.fixture
def autologging() -> Iterator[None]:
    ghaf.autolog()
    yield
    ghaf.autolog(disable=True)


def test_sklearn_fit_is_logged_with_a_safe_model(
    admin: Client, project: str, tmp_path: Path, autologging: None
) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    with ghaf.start_run("auto", project=project, client=admin) as run:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5))
        model.fit(X[:200], y[:200])
        model.score(X[200:], y[200:])
    found = admin.runs.get(project, run.id)
    assert found.params["logisticregression__C"] == "0.5"
    assert 0.8 < found.metrics["training_score"] <= 1.0
    assert 0.8 < found.metrics["validation_score"] <= 1.0
    assert found.tags["estimator"] == "Pipeline"
    paths = {a.path for a in admin.runs.artifacts(project, run.id)}
    assert paths == {"model/model.skops", "model/signature.json", "model/sample.npz"}
    back = admin.runs.download_artifact(project, run.id, "model/model.skops", tmp_path)
    loaded = sio.load(back, trusted=sio.get_untrusted_types(file=back))
    assert (loaded.predict(X[200:]) == model.predict(X[200:])).all()
    signature = json.loads(
        admin.runs.download_artifact(project, run.id, "model/signature.json", tmp_path).read_text()
    )
    assert signature["inputs"] == [{"name": None, "dtype": "float64", "shape": [-1, 4]}]
    assert signature["outputs"][0]["dtype"] == "int64"
    # Nested fits (the pipeline's steps, a search's folds) log nothing of their own.
    with ghaf.start_run("auto", project=project, client=admin) as search_run:
        GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3).fit(X, y)
    searched = admin.runs.get(project, search_run.id)
    assert "cv_best_score" in searched.metrics and "best_C" in searched.params
    assert len(admin.runs.history(project, search_run.id, "training_score")) == 1


def test_a_fit_outside_a_run_gets_its_own_run(
    admin: Client, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    monkeypatch.setenv("GHAF_URL", admin.url)
    monkeypatch.setenv("GHAF_TOKEN", admin._http.headers["Authorization"].split()[1])
    ghaf.autolog(experiment="fits", project=project, log_models=False)
    try:
        DecisionTreeClassifier(max_depth=2).fit([[0], [1], [2], [3]], [0, 0, 1, 1])
    finally:
        ghaf.autolog(disable=True)
    (run,) = admin.runs.search(project, "fits")
    assert run.status == "finished" and run.params["max_depth"] == "2"
    assert run.metrics["training_score"] == 1.0


def test_system_metrics_are_sampled(admin: Client, project: str) -> None:
    with ghaf.start_run(
        "sys", project=project, client=admin, system_metrics=True, system_metrics_interval=0.2
    ) as run:
        time.sleep(0.9)
    found = admin.runs.get(project, run.id)
    for key in ("system/cpu_percent", "system/memory_percent", "system/process_rss_mb"):
        assert key in found.metrics
    assert len(admin.runs.history(project, run.id, "system/cpu_percent")) >= 2
