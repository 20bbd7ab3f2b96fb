"""Conversion to ONNX (skl2onnx for scikit-learn, onnxmltools for XGBoost and LightGBM),
checked numerically against the original on the version's sample. Runs in the checker's
child process only: it needs the loaded model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ghaf.core.errors import InvalidInput

# float32 inference against the original's float64: agreement within these is "equal".
RTOL = 1e-3
ATOL = 1e-4


def features(sample: Mapping[str, np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """The sample as the float32 matrix the converters and converted models take."""
    from ghaf.registry.formats import tabular

    X = np.asarray(tabular(sample))
    if X.dtype.kind not in "biuf":
        raise InvalidInput(
            "ONNX conversion needs numeric inputs; this sample has text", field="convert_onnx"
        )
    return X.astype(np.float32)


def to_onnx(format_name: str, model: Any, sample: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    X = features(sample)
    try:
        if format_name in ("skops", "pickle"):
            from skl2onnx import to_onnx as sklearn_to_onnx

            converted = sklearn_to_onnx(model, X[:1], options={"zipmap": False})
        else:
            import onnxmltools
            from onnxmltools.convert.common.data_types import FloatTensorType

            types = [("X", FloatTensorType([None, X.shape[1]]))]
            if format_name == "xgboost":
                converted = onnxmltools.convert_xgboost(model, initial_types=types)
            elif format_name == "lightgbm":
                converted = onnxmltools.convert_lightgbm(model, initial_types=types, zipmap=False)
            else:
                raise InvalidInput(
                    f"{format_name} models cannot be converted to ONNX", field="convert_onnx"
                )
    except ImportError as exc:
        raise InvalidInput(
            f"ONNX conversion needs {exc.name}: pip install 'ghaf[onnx-convert]'",
            field="convert_onnx",
        ) from None
    except InvalidInput:
        raise
    except Exception as exc:  # converters raise many types for unsupported models
        raise InvalidInput(
            f"ONNX conversion failed: {type(exc).__name__}: {exc}", field="convert_onnx"
        ) from None
    data: bytes = converted.SerializeToString()
    return data


def compare(
    original: Mapping[str, np.ndarray[Any, Any]], converted: Mapping[str, np.ndarray[Any, Any]]
) -> dict[str, Any]:
    """Does some output of the converted model equal the original's predictions?

    Classifier labels must match exactly (within tolerance as numbers); a booster that
    predicts probabilities matches the converted model's positive-class column.
    """
    expected = np.asarray(original["predictions"]).astype(np.float64).ravel()
    best: tuple[float, str] | None = None
    for name, output in converted.items():
        candidates = [(name, np.asarray(output))]
        if output.ndim == 2 and output.shape[1] == 2:
            candidates.append((f"{name}[:, 1]", output[:, 1]))
        for label, values in candidates:
            if values.size != expected.size or values.dtype.kind not in "biuf":
                continue
            diff = float(np.max(np.abs(values.astype(np.float64).ravel() - expected), initial=0))
            if best is None or diff < best[0]:
                best = (diff, label)
            if np.allclose(values.astype(np.float64).ravel(), expected, rtol=RTOL, atol=ATOL):
                return {
                    "equal": True,
                    "output": label,
                    "max_abs_diff": diff,
                    "rtol": RTOL,
                    "atol": ATOL,
                }
    return {
        "equal": False,
        "output": best[1] if best else None,
        "max_abs_diff": best[0] if best else None,
        "rtol": RTOL,
        "atol": ATOL,
    }
