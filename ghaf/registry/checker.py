"""The child process that loads and runs a model: ``python -I ghaf/registry/checker.py``.

The server never loads a model file itself. It writes the file and a job to a temporary
folder and runs this file in a fresh interpreter (isolated mode, an environment without
ghaf's settings or secrets, CPU and file-size limits, a wall-clock timeout; see
ghaf/registry/sandbox.py). A job is one JSON object on stdin; the answer is one JSON
object on stdout.

The first thing the child does, while it is one thread and before it imports numpy or
reads the model, is confine itself (ghaf/registry/confine.py: Landlock and seccomp): from
then on it reads only the interpreter's files, writes only the job folder, and has no
network. It runs as a script rather than ``-m ghaf.registry.checker`` because importing
the ghaf package loads numpy first. Where the kernel cannot confine it, pickles are
refused (safe formats still run, as they did before confinement existed).

Jobs: ``check`` (load, predict the sample, describe the outputs, optionally convert to
ONNX), ``latency`` (predict the sample N times) and ``evaluate`` (metrics on a table).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

# Nothing else at the top: numpy, the formats and the model come after confinement.

UNCONFINED_PICKLE = (
    "this host cannot confine the model checker ({why}), so pickle models are refused on "
    "it: loading one runs code, and only a confined process may do that. Safe formats "
    "(ONNX, skops, XGBoost, LightGBM) still work. Confinement needs Linux 5.13+ with "
    "Landlock enabled (lsm=...,landlock) and seccomp, on x86_64 or aarch64."
)


def _trust(job: dict[str, Any]) -> Any:
    from ghaf.registry.formats import Trust

    return Trust(
        skops_types=tuple(job.get("skops_types", ())),
        pickle_globals=tuple(job.get("pickle_globals", ())),
    )


def _load(job: dict[str, Any]) -> tuple[Any, Any, float]:
    from ghaf.registry.formats import get

    started = time.perf_counter()
    fmt = get(job["format"])
    model = fmt.load(Path(job["model"]), trust=_trust(job))
    return fmt, model, (time.perf_counter() - started) * 1000


def check(job: dict[str, Any]) -> dict[str, Any]:
    from ghaf.registry import tensors
    from ghaf.registry.formats import Trust

    fmt, model, load_ms = _load(job)
    sample = tensors.from_npz(Path(job["sample"]).read_bytes())
    started = time.perf_counter()
    outputs = fmt.predict(model, sample)
    predict_ms = (time.perf_counter() - started) * 1000
    answer: dict[str, Any] = {
        "load_ms": round(load_ms, 3),
        "predict_ms": round(predict_ms, 3),
        "outputs": tensors.infer(outputs),
        "rows": int(next(iter(sample.values())).shape[0]) if sample else 0,
    }
    if job.get("convert_to"):
        from ghaf.registry import convert
        from ghaf.registry.formats.onnx import OnnxFormat

        data = convert.to_onnx(job["format"], model, sample)
        target = Path(job["convert_to"])
        target.write_bytes(data)
        onnx = OnnxFormat()
        session = onnx.load(target, trust=Trust())
        converted = onnx.predict(session, {"X": convert.features(sample)})
        answer["conversion"] = convert.compare(outputs, converted)
    return answer


def latency(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from ghaf.registry import tensors

    fmt, model, _ = _load(job)
    sample = tensors.from_npz(Path(job["sample"]).read_bytes())
    fmt.predict(model, sample)  # warm-up, not measured
    times = []
    for _ in range(int(job["repeats"])):
        started = time.perf_counter()
        fmt.predict(model, sample)
        times.append((time.perf_counter() - started) * 1000)
    values = np.asarray(times)
    return {f"p{p}": float(np.percentile(values, p)) for p in (50, 95, 99)} | {
        "repeats": len(times)
    }


METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "r2", "mae", "mse", "rmse")


def evaluate(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn import metrics

    fmt, model, _ = _load(job)
    table = pq.read_table(job["data"])
    target = job["target"]
    if target not in table.column_names:
        raise KeyError(f"the table has no column {target!r}; it has {table.column_names}")
    inputs = job["inputs"]
    names = [spec["name"] for spec in inputs]
    if len(inputs) == 1 and len(inputs[0]["shape"]) == 2:
        columns = [c for c in table.column_names if c != target]
        if inputs[0]["name"] in table.column_names:
            columns = [inputs[0]["name"]]
        features = {names[0]: np.column_stack([table.column(c).to_numpy() for c in columns])}
    else:
        missing = [n for n in names if n not in table.column_names]
        if missing:
            raise KeyError(f"the table lacks input column(s) {missing}")
        features = {n: table.column(n).to_numpy() for n in names}
    truth = table.column(target).to_numpy()
    outputs = fmt.predict(model, features)
    predicted = outputs["predictions"]
    scores = outputs.get("probabilities")
    values: dict[str, float] = {}
    for name in job["metrics"]:
        if name == "accuracy":
            values[name] = metrics.accuracy_score(truth, predicted)
        elif name in ("precision", "recall", "f1"):
            scorer = {
                "precision": metrics.precision_score,
                "recall": metrics.recall_score,
                "f1": metrics.f1_score,
            }[name]
            average = "binary" if len(np.unique(truth)) <= 2 else "macro"
            values[name] = scorer(truth, predicted, average=average, zero_division=0)
        elif name == "roc_auc":
            score = predicted if scores is None else scores[:, 1] if scores.ndim == 2 else scores
            values[name] = metrics.roc_auc_score(truth, score)
        elif name == "r2":
            values[name] = metrics.r2_score(truth, predicted)
        elif name == "mae":
            values[name] = metrics.mean_absolute_error(truth, predicted)
        elif name in ("mse", "rmse"):
            mse = metrics.mean_squared_error(truth, predicted)
            values[name] = mse if name == "mse" else float(np.sqrt(mse))
    return {"metrics": {k: float(v) for k, v in values.items()}, "rows": int(truth.shape[0])}


ACTIONS = {"check": check, "latency": latency, "evaluate": evaluate}


def _limit(job: dict[str, Any]) -> None:
    """CPU seconds and file size, set before anything from the model is read."""
    import resource

    cpu = int(job.get("cpu_limit_s", 240))
    size = int(job.get("file_limit_bytes", 4 * 1024**3))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def _confine_module() -> ModuleType:
    """ghaf/registry/confine.py, loaded from beside this file without importing the ghaf
    package (whose ``__init__`` imports numpy)."""
    if "ghaf.registry.confine" in sys.modules:
        return sys.modules["ghaf.registry.confine"]
    spec = importlib.util.spec_from_file_location(
        "_ghaf_confine", Path(__file__).with_name("confine.py")
    )
    if spec is None or spec.loader is None:
        raise ImportError("ghaf/registry/confine.py is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def confine_self(job: dict[str, Any]) -> dict[str, Any]:
    """Confine this process (the job folder writable, the server's protected paths kept
    out); what was done, or why it could not be."""
    confine = _confine_module()
    try:
        done = confine.confine(
            writable=[job.get("folder") or os.getcwd()], protected=job.get("protected", [])
        )
    except (confine.Unconfinable, OSError) as exc:
        return {"confined": False, "reason": str(exc)}
    applied: dict[str, Any] = done.as_dict()
    return {"confined": True} | applied


def main() -> int:
    job = json.loads(sys.stdin.read())
    _limit(job)
    confinement = confine_self(job)  # before numpy, the formats or the model
    from ghaf.core.errors import GhafError

    try:
        if not confinement["confined"] and job.get("format") == "pickle":
            answer = {"ok": False, "error": UNCONFINED_PICKLE.format(why=confinement["reason"])}
        else:
            answer = {"ok": True} | ACTIONS[job["action"]](job)
    except GhafError as exc:
        answer = {"ok": False, "error": exc.detail}
    except Exception as exc:  # the model's own failure: report it, never crash silently
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}{where}"}
    answer["confinement"] = {k: v for k, v in confinement.items() if k not in ("readable",)}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
