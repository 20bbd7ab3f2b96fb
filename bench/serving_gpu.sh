#!/usr/bin/env bash
# bench/serving_gpu.sh: rows/s of one ONNX model served by `ghaf serve`'s app on the CUDA
# execution provider against the CPU provider, with 1,000-row binary-tensor requests
# (OIP v2 binary extension), behind an invoke key, in one run.
#
# It installs nothing and reaches nothing but 127.0.0.1: run it where ghaf and
# onnxruntime-gpu are already installed (PYTHON=path/to/python, default .venv/bin/python)
# on a machine with an NVIDIA GPU and its driver.
#
# The model is a multi-layer perceptron (MatMul/Add/Relu, all CUDA kernels), generated
# here with fixed weights: tree ensembles (the issue's RandomForest) have no CUDA kernels
# in onnxruntime and would run on the CPU inside a CUDA session, which measures nothing.
#
# usage: bench/serving_gpu.sh [--seconds 10] [--concurrency 8] [--batch 1000]
#                             [--features 64] [--hidden 1024] [--quick] [--cpu-only]
# --cpu-only measures the CPU side alone (a check of the script on a machine without a
# GPU); without it, a machine whose onnxruntime has no CUDA provider exits 3, "not run".
# The last line printed is the JSON object of DESIGN.md's "Benchmarks".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$PYTHON" ]]; then
  echo "serving_gpu: no Python at $PYTHON (set PYTHON=...); nothing is installed by this script" >&2
  exit 2
fi
exec "$PYTHON" - "$@" <<'PY'
import argparse
import hashlib
import json
import multiprocessing
import secrets
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, ".")
from bench._report import case, print_report  # noqa: E402

parser = argparse.ArgumentParser(prog="bench/serving_gpu.sh")
parser.add_argument("--seconds", type=float, default=10.0, help="load per provider")
parser.add_argument("--concurrency", type=int, default=8, help="client processes")
parser.add_argument("--batch", type=int, default=1000, help="rows per request")
parser.add_argument("--features", type=int, default=64)
parser.add_argument("--hidden", type=int, default=1024)
parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds (a smoke run)")
parser.add_argument("--cpu-only", action="store_true", help="measure the CPU provider alone")
args = parser.parse_args()
if args.quick:
    args.seconds, args.concurrency, args.hidden = 1.0, 2, 64

import onnxruntime as ort  # noqa: E402

available = ort.get_available_providers()
has_cuda = "CUDAExecutionProvider" in available
if not has_cuda and not args.cpu_only:
    print(
        "serving_gpu: not run: onnxruntime offers no CUDAExecutionProvider here "
        f"(available: {', '.join(available)}; install onnxruntime-gpu on a GPU machine)"
    )
    print(json.dumps({"bench": "serving_gpu", "cases": [], "not_run": "no CUDA provider"}))
    sys.exit(3)

import httpx  # noqa: E402
import onnx  # noqa: E402
import uvicorn  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ghaf.server.process import free_port  # noqa: E402
from ghaf.serving.app import ServingOptions, create_serving_app  # noqa: E402
from ghaf.serving.auth import InvokeKey, KeyAuthorizer  # noqa: E402
from ghaf.serving.batching import BatchingOptions  # noqa: E402
from ghaf.serving.runtime import RuntimeOptions, VersionInfo, load_model  # noqa: E402


def mlp(path: Path, features: int, hidden: int) -> None:
    """X float32[-1, features] -> three dense layers -> scores float32[-1, 2]."""
    rng = np.random.default_rng(0)
    sizes = [features, hidden, hidden, 2]
    nodes, weights, current = [], [], "X"
    for index, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        w = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
        bias = (rng.normal(size=(b,)) * 0.01).astype(np.float32)
        weights += [numpy_helper.from_array(w, f"w{index}"), numpy_helper.from_array(bias, f"b{index}")]
        nodes.append(helper.make_node("MatMul", [current, f"w{index}"], [f"m{index}"]))
        last = index == len(sizes) - 2
        out = "scores" if last else f"a{index}"
        nodes.append(helper.make_node("Add", [f"m{index}", f"b{index}"], [out if last else f"z{index}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{index}"], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 2])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime >= 1.14 reads
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


@contextmanager
def listening(app):
    class Threaded(uvicorn.Server):
        @contextmanager
        def capture_signals(self):
            yield

    port = free_port()
    server = Threaded(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                     access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("serving_gpu: the serving app did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def binary_request(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    raw = np.ascontiguousarray(rows, dtype=np.float32).tobytes()
    header = json.dumps({
        "inputs": [{"name": "X", "datatype": "FP32", "shape": list(rows.shape),
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
    }).encode()
    return header + raw, {"inference-header-content-length": str(len(header)),
                          "content-type": "application/octet-stream"}


def decode_scores(response: httpx.Response, rows: int) -> np.ndarray:
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    (output,) = header["outputs"]
    size = output["parameters"]["binary_data_size"]
    data = np.frombuffer(response.content[length:length + size], dtype=np.float32)
    return data.reshape(rows, 2)


def client(job: tuple[str, str, float, int, int, int]) -> tuple[int, int, int]:
    """One client process: binary requests back to back; (requests, rows, errors)."""
    url, key, seconds, batch, features, seed = job
    rows = np.random.default_rng(seed).normal(size=(batch, features)).astype(np.float32)
    body, headers = binary_request(rows)
    headers["authorization"] = f"Bearer {key}"
    done = errors = 0
    with httpx.Client(base_url=url, timeout=60) as http:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            answer = http.post("/v2/models/mlp/infer", content=body, headers=headers)
            if answer.status_code == 200:
                done += 1
            else:
                errors += 1
    return done, done * batch, errors


def in_process(session, rows: np.ndarray, seconds: float) -> float:
    session.run(None, {"X": rows})  # warm-up (CUDA: kernels, allocations)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"X": rows})
        calls += 1
    return calls * len(rows) / (time.perf_counter() - start)


def measure(device: str, path: Path, info: VersionInfo, key: str, pool) -> dict:
    loaded = load_model(path, info, options=RuntimeOptions(device=device))
    if loaded.device != device:
        raise SystemExit(f"serving_gpu: asked for {device}, the runtime chose {loaded.device}")
    rows = np.random.default_rng(99).normal(size=(args.batch, args.features)).astype(np.float32)
    direct = in_process(loaded.model, rows, min(args.seconds, 3.0))
    options = ServingOptions(batching=BatchingOptions(max_batch_size=args.batch * args.concurrency))
    app = create_serving_app([loaded], authorizer=KeyAuthorizer(InvokeKey(key), "bench"),
                             options=options)
    with listening(app) as url:
        body, headers = binary_request(rows)
        headers["authorization"] = f"Bearer {key}"
        first = httpx.post(f"{url}/v2/models/mlp/infer", content=body, headers=headers, timeout=60)
        if first.status_code != 200:
            raise SystemExit(f"serving_gpu: {device} answered {first.status_code}: {first.text[:300]}")
        served_scores = decode_scores(first, len(rows))
        jobs = [(url, key, args.seconds, args.batch, args.features, s) for s in range(args.concurrency)]
        start = time.perf_counter()
        results = pool.map(client, jobs)
        elapsed = time.perf_counter() - start
    requests = sum(r[0] for r in results)
    return {
        "device": device,
        "providers": list(loaded.model.get_providers()),
        "served_rows_s": sum(r[1] for r in results) / elapsed,
        "requests": requests,
        "errors": sum(r[2] for r in results),
        "in_process_rows_s": direct,
        "scores": served_scores,
        "rows": rows,
    }


def main() -> None:
    key = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="ghaf-gpu-bench-") as folder:
        path = Path(folder) / "mlp.onnx"
        mlp(path, args.features, args.hidden)
        info = VersionInfo(
            model="mlp", version=1, format="onnx",
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            inputs=[{"name": "X", "dtype": "float32", "shape": [-1, args.features]}],
            outputs=[{"name": "scores", "dtype": "float32", "shape": [-1, 2]}],
            project="bench", filename="mlp.onnx",
        )
        # Forked before any session exists (CUDA must not be set up in a forked child;
        # the clients use none), since a script read from stdin cannot be spawned.
        context = multiprocessing.get_context("fork")
        with context.Pool(args.concurrency) as pool:
            runs = [measure("cpu", path, info, key, pool)]
            if has_cuda and not args.cpu_only:
                runs.append(measure("gpu", path, info, key, pool))
        reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for run in runs:  # both served the same answers as a plain CPU session
            (expected,) = reference.run(None, {"X": run["rows"]})
            # TF32 matmuls on recent GPUs: close, not bit-identical.
            if not np.allclose(run["scores"], expected, rtol=1e-2, atol=1e-2):
                worst = float(np.abs(run["scores"] - expected).max())
                raise SystemExit(f"serving_gpu: {run['device']} answers differ (max {worst:.3g})")
            if run["errors"]:
                raise SystemExit(f"serving_gpu: {run['device']}: {run['errors']} failed requests")
    cpu = runs[0]
    gpu = runs[1] if len(runs) > 1 else None
    cases = []
    for field, what in (("served_rows_s", f"served, {args.batch}-row binary requests x{args.concurrency}"),
                        ("in_process_rows_s", f"in-process session.run, {args.batch} rows")):
        value = gpu[field] if gpu else 0.0  # 0: not measured (--cpu-only)
        cases.append(case(what, "rows/s", "CPUExecutionProvider", cpu[field], value,
                          value / cpu[field], "report (no target)", None, digits=0))
    note = (
        f"MLP {args.features}-{args.hidden}-{args.hidden}-2 (float32), {args.seconds:g} s per "
        f"provider, {args.concurrency} client processes; 'peer' is the CPU provider "
        f"({cpu['providers'][0]}), 'ghaf' is the CUDA provider "
        + (f"({gpu['providers'][0]}; {gpu['requests']} requests)" if gpu else "(not measured: --cpu-only)")
    )
    print_report("serving_gpu", cases, note=note)


if __name__ == "__main__":
    main()
PY
