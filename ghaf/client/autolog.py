"""``ghaf.autolog()``: record scikit-learn training without changing training code.

After ``autolog()``, every outermost ``fit`` of a scikit-learn estimator logs, to the
active run (or to a new run in ``experiment`` when none is active):

- the estimator's params (``get_params(deep=True)``; long values are clipped);
- ``training_score`` (the estimator's own ``score`` on the training data) and, for
  searches such as ``GridSearchCV``, ``cv_best_score`` and the ``best_*`` params;
- the fitted model as ``model/model.skops`` (skops, a format that loads without running
  pickled code; see the model registry) and its input and output signature as
  ``model/signature.json``, and the first rows of its input as ``model/sample.npz``
  (what the model registry predicts to check the model when it is registered).

Each later ``score(X, y)`` on that estimator logs ``validation_score``. Fits nested
inside another fit (pipeline steps, cross-validation folds) are not logged separately.
XGBoost and LightGBM are not covered yet: log their params and metrics yourself.
"""

from __future__ import annotations

import inspect
import json
import logging
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ghaf.client.active_run import ActiveRun, active_run, start_run
from ghaf.core.errors import GhafError
from ghaf.tracking.schemas import MAX_PARAM_VALUE

log = logging.getLogger("ghaf.client")
_state = threading.local()
_config: dict[str, Any] = {}
_patched: dict[tuple[type, str], Callable[..., Any]] = {}
# Which run each estimator was fitted in, so its score() is logged there (weak: never
# keeps an estimator alive, and never an attribute that would end up in the saved model).
_fitted_in: weakref.WeakKeyDictionary[Any, ActiveRun] = weakref.WeakKeyDictionary()


def _depth() -> int:
    return getattr(_state, "depth", 0)


def autolog(
    *,
    experiment: str = "autolog",
    project: str | None = None,
    log_models: bool = True,
    disable: bool = False,
) -> None:
    """Turn scikit-learn autologging on (or off with ``disable=True``).

    Fits outside any ``start_run`` block get a run of their own in ``experiment`` of
    ``project`` (default ``$GHAF_PROJECT``).
    """
    if disable:
        for (cls, name), original in _patched.items():
            setattr(cls, name, original)
        _patched.clear()
        return
    _config.update(experiment=experiment, project=project, log_models=log_models)
    from sklearn.utils import all_estimators

    for _name, estimator in all_estimators():
        for method, wrap in (("fit", _wrap_fit), ("score", _wrap_score)):
            # Patch the class that defines the method, once; subclasses inherit it.
            owner = next((c for c in estimator.__mro__ if method in c.__dict__), None)
            if owner is None or (owner, method) in _patched:
                continue
            original = owner.__dict__[method]
            if not inspect.isfunction(original):  # e.g. available_if descriptors
                continue
            _patched[(owner, method)] = original
            setattr(owner, method, wrap(original))


def _wrap_fit(original: Callable[..., Any]) -> Callable[..., Any]:
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _depth() > 0:
            # Nested (a pipeline step): not logged, but its score() counts as the run's.
            current = active_run()
            if current is not None:
                _fitted_in[self] = current
            return original(self, *args, **kwargs)
        X, y = _data(args, kwargs)
        run, own = active_run(), None
        if run is None:
            try:
                own = run = start_run(_config["experiment"], project=_config["project"])
            except Exception as exc:  # no project or server: train anyway, unlogged
                log.warning("ghaf autolog: not logging this fit: %s", exc)
        _state.depth = _depth() + 1
        try:
            result = original(self, *args, **kwargs)
        except BaseException:
            if own is not None:
                own.end("failed")
            raise
        finally:
            _state.depth -= 1
        if run is not None:
            _state.depth = _depth() + 1
            try:
                _log_fit(run, self, X, y)
            except Exception as exc:  # logging must never break training
                log.warning(
                    "ghaf autolog: logging the fit of %s failed: %s", type(self).__name__, exc
                )
            finally:
                _state.depth -= 1
            _fitted_in[self] = run
        if own is not None:
            own.end()
        return result

    return fit


def _wrap_score(original: Callable[..., Any]) -> Callable[..., Any]:
    def score(self: Any, *args: Any, **kwargs: Any) -> Any:
        value = original(self, *args, **kwargs)
        run = _fitted_in.get(self)
        if _depth() == 0 and run is not None and active_run() is run:
            run.log_metric("validation_score", float(value))
        return value

    return score


def _data(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``X`` and ``y`` of a ``fit(X, y=None, ...)`` call, however they were passed."""
    X = args[0] if args else kwargs.get("X")
    y = args[1] if len(args) > 1 else kwargs.get("y")
    return X, y


def _text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "..."


def _log_fit(run: ActiveRun, estimator: Any, X: Any, y: Any) -> None:
    params = {k: _text(v) for k, v in estimator.get_params(deep=True).items()}
    run.log_params(params)
    run.set_tags({"estimator": type(estimator).__name__})
    if y is not None and hasattr(estimator, "score"):
        run.log_metric("training_score", float(estimator.score(X, y)))
    if hasattr(estimator, "best_score_"):
        run.log_metric("cv_best_score", float(estimator.best_score_))
        run.log_params({f"best_{k}": _text(v) for k, v in estimator.best_params_.items()})
    signature = {"inputs": _signature(X)}
    if hasattr(estimator, "predict"):
        signature["outputs"] = _signature(estimator.predict(_head(X)))
    if _config.get("log_models", True):
        _log_model(run, estimator, signature, _head(X))


def _head(X: Any, rows: int = 5) -> Any:
    return X.iloc[:rows] if hasattr(X, "iloc") else X[:rows]


def _signature(data: Any) -> list[dict[str, Any]]:
    """Names, dtypes and shapes of a table's columns or an array."""
    import numpy as np

    if hasattr(data, "dtypes") and hasattr(data, "columns"):
        return [{"name": str(c), "dtype": str(t), "shape": [-1]} for c, t in data.dtypes.items()]
    array = np.asarray(data)
    return [{"name": None, "dtype": str(array.dtype), "shape": [-1, *array.shape[1:]]}]


def _log_model(run: ActiveRun, estimator: Any, signature: dict[str, Any], head: Any) -> None:
    import skops.io as sio

    from ghaf.registry import tensors

    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "model.skops"
        sio.dump(estimator, model)
        run.log_artifact(model, path="model/model.skops")
        described = Path(folder) / "signature.json"
        described.write_text(json.dumps(signature, indent=2))
        run.log_artifact(described, path="model/signature.json")
        try:  # the registry predicts this sample when the model is registered
            sample = tensors.to_npz(tensors.from_user(head))
        except GhafError:
            return  # e.g. object columns: the registry then needs an explicit sample
        rows = Path(folder) / "sample.npz"
        rows.write_bytes(sample)
        run.log_artifact(rows, path="model/sample.npz")
