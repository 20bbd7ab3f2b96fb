"""Model serving: ghaf against a bare FastAPI + onnxruntime endpoint and BentoML.

One run, one model (a RandomForest: 100 trees, depth 10, 20 float32 features, trained on
generated data and converted to ONNX with skl2onnx), served by:
  (a) a bare FastAPI endpoint: raw ``Request``, ``json.loads``, ``InferenceSession.run``,
      ``json.dumps``, one uvicorn worker, no authentication;
  (b) BentoML >= 1.4 in its own venv (``.bench/bentoml``), with batching off and on;
  (c) ``ghaf serve`` (one uvicorn worker) with authentication and, where the serving app
      has them, metrics and the prediction log on;
  (d) onnxruntime in this process on one thread: the physical limit.
Load: wrk (``apt-get install wrk``), 32 connections, bounded in time, 127.0.0.1 only;
unloaded latency: one kept-alive connection, one request at a time. Every server runs
its model on one thread; wrk and the server share this machine's cores.

Cases: 1-row requests (throughput, p50); unloaded latency (1 and 100 rows); 1,000-row
requests in rows/s (binary tensors and JSON); the same forest served from skops
(scikit-learn, no ONNX) with batching against without; start-up to ready and idle RSS.
Prints a table with ratios and goals, and one JSON line last (DESIGN.md "Benchmarks").
Usage: python bench/serving.py [--duration 8] [--connections 32] [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _load import Target, check, measure, unloaded_ms
from _peers import peer_venv
from _report import case, print_report

from ghaf.client import Client
from ghaf.core.settings import Settings
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
FEATURES = 20
MODEL = "forest"
MAX_LATENCY_MS = 2.0  # ghaf serve's default

BARE_APP = '''
"""The bare endpoint: what a user writes by hand around onnxruntime."""
import json, os
import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from starlette.responses import Response

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["BENCH_MODEL"], options,
                               providers=["CPUExecutionProvider"])
app = FastAPI()

@app.post("/v2/models/forest/infer")
async def infer(request: Request) -> Response:
    body = json.loads(await request.body())
    tensor = body["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    label, proba = session.run(["label", "probabilities"], {"X": x})
    answer = {"model_name": "forest", "outputs": [
        {"name": "label", "datatype": "INT64", "shape": list(label.shape),
         "data": label.ravel().tolist()},
        {"name": "probabilities", "datatype": "FP32", "shape": list(proba.shape),
         "data": proba.ravel().tolist()}]}
    return Response(json.dumps(answer), media_type="application/json")

@app.get("/ready")
async def ready() -> dict:
    return {"ready": True}
'''

BENTO_SERVICE = '''
"""The same forest as a BentoML 1.4 service, batching as BENCH_BATCHABLE says."""
import os
import bentoml
import numpy as np
import onnxruntime as ort

BATCHABLE = os.environ.get("BENCH_BATCHABLE") == "1"

@bentoml.service(workers=1)
class Forest:
    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(os.environ["BENCH_MODEL"], options,
                                            providers=["CPUExecutionProvider"])

    @bentoml.api(batchable=BATCHABLE, max_batch_size=64, max_latency_ms=1000)
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["probabilities"], {"X": x.astype(np.float32)})[0]
'''

# --- the model -------------------------------------------------------------------------


@dataclass
class Models:
    onnx: Path
    skops: Path
    X: np.ndarray[Any, Any]
    forest: Any


def build_models(folder: Path, *, trees: int, depth: int) -> Models:
    import skops.io as sio
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(n_samples=4000, n_features=FEATURES, random_state=0)
    X = X.astype(np.float32)
    forest = RandomForestClassifier(n_estimators=trees, max_depth=depth, random_state=0)
    forest.fit(X, y)
    onx = to_onnx(forest, X[:1], options={"zipmap": False}, target_opset=17)
    onnx_path = folder / "forest.onnx"
    onnx_path.write_bytes(onx.SerializeToString())
    skops_path = folder / "forest.skops"
    sio.dump(forest, skops_path)
    return Models(onnx=onnx_path, skops=skops_path, X=X, forest=forest)


def in_process(models: Models, calls: int) -> dict[str, float]:
    """onnxruntime on one thread in this process: us per 1-row call, rows/s at 100 and
    1,000 rows; and one scikit-learn call of 32 rows (ms) for the batching case."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(models.onnx), options, providers=["CPUExecutionProvider"])

    def timed(rows: int, repeat: int) -> float:
        x = np.ascontiguousarray(models.X[:rows])
        session.run(None, {"X": x})
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            session.run(None, {"X": x})
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    sklearn_samples = []
    x32 = models.X[:32].astype(np.float64)
    for _ in range(max(5, calls // 200)):
        started = time.perf_counter()
        models.forest.predict(x32)
        models.forest.predict_proba(x32)
        sklearn_samples.append(time.perf_counter() - started)
    return {
        "one_row_us": timed(1, calls) * 1e6,
        "rows_s_100": 100 / timed(100, max(20, calls // 10)),
        "rows_s_1000": 1000 / timed(1000, max(10, calls // 50)),
        "sklearn_32_ms": statistics.median(sklearn_samples) * 1000,
    }


# --- requests ---------------------------------------------------------------------------


def oip_json(x: np.ndarray[Any, Any]) -> bytes:
    tensor = {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def oip_binary(x: np.ndarray[Any, Any]) -> tuple[bytes, dict[str, str]]:
    """The binary tensor extension: a JSON header, then the raw little-endian rows."""
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [
                {"name": "label", "parameters": {"binary_data": True}},
                {"name": "probabilities", "parameters": {"binary_data": True}},
            ],
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return header + raw, headers


def same_answers(bare: dict[str, Any], ours: dict[str, Any]) -> None:
    """Both servers gave the same predictions for the same 100 rows."""
    theirs = {o["name"]: o["data"] for o in bare["outputs"]}
    mine = {o["name"]: o["data"] for o in ours["outputs"]}
    if theirs["label"] != mine["label"] or not np.allclose(
        theirs["probabilities"], mine["probabilities"], rtol=1e-5
    ):
        raise RuntimeError("ghaf and the bare endpoint answered differently")


# --- servers ----------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def process(
    cmd: list[str], *, port: int, ready_path: str, env: dict[str, str], log: Path, timeout: float
) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """A server child; yields it once ``ready_path`` answers 200, with the seconds that
    took from the spawn."""
    started = time.perf_counter()
    with log.open("ab") as out:
        child = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=out)
    try:
        deadline = started + timeout
        while True:
            if child.poll() is not None:
                raise RuntimeError(
                    f"{cmd[:3]} exited with {child.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", ready_path)
                if conn.getresponse().status == 200:
                    conn.close()
                    break
                conn.close()
            except OSError:
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"{cmd[:3]} not ready within {timeout:.0f}s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.01)
        yield child, time.perf_counter() - started
    finally:
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def bare_server(models: Models, folder: Path, port: int) -> Any:
    (folder / "bare_app.py").write_text(BARE_APP)
    cmd = [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(folder)]
    cmd += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    return process(
        cmd,
        port=port,
        ready_path="/ready",
        env={"BENCH_MODEL": str(models.onnx)},
        log=folder / "bare.log",
        timeout=60,
    )


def bento_ready() -> bool:
    return (peer_venv("bentoml") / "bin" / "bentoml").exists()


def ensure_bento(*, install: bool) -> bool:
    """BentoML, onnxruntime and numpy in ``.bench/bentoml`` (installed once when asked)."""
    if bento_ready():
        return True
    if not install:
        return False
    venv = peer_venv("bentoml")
    print(f"installing bentoml into {venv} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet"]
    subprocess.run([*pip, "bentoml>=1.4", "onnxruntime", "numpy"], check=True)
    return True


def bento_server(models: Models, folder: Path, port: int, *, batchable: bool) -> Any:
    (folder / "bento_service.py").write_text(BENTO_SERVICE)
    venv = peer_venv("bentoml")
    cmd = [str(venv / "bin" / "bentoml"), "serve", "bento_service:Forest", "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--working-dir", str(folder)]
    env = {
        "BENCH_MODEL": str(models.onnx),
        "BENCH_BATCHABLE": "1" if batchable else "0",
        "BENTOML_HOME": str(folder / "bentoml-home"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    return process(
        cmd, port=port, ready_path="/readyz", env=env, log=folder / "bento.log", timeout=120
    )


@dataclass
class Platform:
    url: str
    token: str
    project: str
    env: dict[str, str]


def ghaf_server(platform: Platform, folder: Path, port: int, ref: str, extra: list[str]) -> Any:
    cmd = [sys.executable, "-m", "ghaf", "serve", ref, "-p", platform.project, "--port"]
    cmd += [str(port), "--threads", "1", *extra]
    env = {**platform.env, "GHAF_URL": platform.url, "GHAF_TOKEN": platform.token}
    return process(
        cmd,
        port=port,
        ready_path="/v2/health/ready",
        env=env,
        log=folder / f"ghaf-{port}.log",
        timeout=60,
    )


def ghaf_flags() -> list[str]:
    """What `ghaf serve` offers of metrics and the prediction log, switched on."""
    text = subprocess.run(
        [sys.executable, "-m", "ghaf", "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        check=False,
    ).stdout
    flags = []
    for flag in ("--metrics", "--prediction-log", "--log-predictions"):
        if flag in text.replace("--no-", "--"):
            flags.append(flag)
    return flags


# --- the run ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load case")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--calls", type=int, default=1000, help="unloaded calls per case")
    parser.add_argument("--quick", action="store_true", help="tiny run for CI smoke tests")
    parser.add_argument(
        "--no-install", action="store_true", help="skip BentoML unless already installed"
    )
    args = parser.parse_args()
    trees, depth = 100, 10
    if args.quick:
        args.duration, args.calls, trees, depth = 1.0, 50, 10, 4
    if not shutil.which("wrk") and not args.quick:
        sys.exit("bench/serving.py needs wrk: apt-get install -y wrk")
    with_bento = ensure_bento(install=not (args.quick or args.no_install))
    conns, duration = args.connections, args.duration
    results: dict[str, Any] = {}

    with tempfile.TemporaryDirectory(prefix="ghaf-bench-serving-") as tmp:
        folder = Path(tmp)
        models = build_models(folder, trees=trees, depth=depth)
        limit = in_process(models, args.calls * 10)
        one, hundred, thousand = models.X[:1], models.X[:100], models.X[:1000]

        def targets(port: int, path: str, headers: dict[str, str]) -> dict[str, Target]:
            binary, binary_headers = oip_binary(thousand)
            json_headers = {**headers, "Content-Type": "application/json"}
            return {
                "one": Target(port, path, oip_json(one), json_headers),
                "hundred": Target(port, path, oip_json(hundred), json_headers),
                "thousand": Target(port, path, oip_json(thousand), json_headers),
                "binary": Target(port, path, binary, {**headers, **binary_headers}),
            }

        # (a) the bare endpoint
        port = free_port()
        with bare_server(models, folder, port):
            bare = targets(port, f"/v2/models/{MODEL}/infer", {})
            results["bare_1"] = measure(bare["one"], folder, conns, duration)
            results["bare_unloaded_1"] = unloaded_ms(bare["one"], args.calls)
            results["bare_unloaded_100"] = unloaded_ms(bare["hundred"], args.calls // 2)
            rps, _, _ = measure(bare["thousand"], folder, conns, duration)
            results["bare_1000_rows_s"] = rps * 1000
            bare_answer = json.loads(check(bare["hundred"]))

        # (b) BentoML, batching off and on
        for batchable in (False, True) if with_bento else ():
            port = free_port()
            with bento_server(models, folder, port, batchable=batchable):
                body = json.dumps({"x": one.tolist()}).encode()
                target = Target(port, "/predict", body, {"Content-Type": "application/json"})
                results[f"bento_{'on' if batchable else 'off'}"] = measure(
                    target, folder, conns, duration
                )

        # (c) ghaf serve beside a platform that holds the models
        home = folder / "home"
        env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": "", "GHAF_LOG_LEVEL": "warning"}
        token = initialise(Settings(home=home, database_url="", master_key=None)).token
        assert token is not None
        server = ServerProcess(env=env, log_path=folder / "platform.log").start()
        try:
            with Client(url=server.url, token=token.token) as client:
                project = client.projects.create("bench").name
                client.models.register(project, MODEL, path=models.onnx, sample=models.X[:5])
                client.models.register(project, "sk", path=models.skops, sample=models.X[:5])
            platform = Platform(server.url, token.token, project, env)
            auth = {"Authorization": f"Bearer {token.token}"}
            flags = ghaf_flags()
            port = free_port()
            with ghaf_server(platform, folder, port, f"{MODEL}:1", flags) as (child, started):
                results["startup_s"] = started
                time.sleep(1.0)
                results["idle_rss_mb"] = _rss_mb(child.pid)
                ours = targets(port, f"/v2/models/{MODEL}/infer", auth)
                results["ghaf_1"] = measure(ours["one"], folder, conns, duration)
                results["ghaf_unloaded_1"] = unloaded_ms(ours["one"], args.calls)
                results["ghaf_unloaded_100"] = unloaded_ms(ours["hundred"], args.calls // 2)
                rps, _, _ = measure(ours["thousand"], folder, conns, duration)
                results["ghaf_1000_json_rows_s"] = rps * 1000
                same_answers(bare_answer, json.loads(check(ours["hundred"])))
                try:
                    check(ours["binary"])
                except RuntimeError as why:
                    print(f"binary tensors: not measured ({why})", file=sys.stderr)
                else:
                    rps, _, _ = measure(ours["binary"], folder, conns, duration)
                    results["ghaf_1000_binary_rows_s"] = rps * 1000
            sk_rows = Target(0, "/v2/models/sk/infer", oip_json(one), ours["one"].headers)
            for batching, extra in (
                ("on", ["--max-batch-size", "32", "--max-latency-ms", str(MAX_LATENCY_MS)]),
                ("off", ["--max-batch-size", "1"]),
            ):
                port = free_port()
                with ghaf_server(platform, folder, port, "sk:1", [*flags, *extra]):
                    sk_rows.port = port
                    results[f"sk_{batching}"] = measure(sk_rows, folder, conns, duration)
        finally:
            server.stop()

    report(results, limit, with_bento=with_bento, flags=flags, conns=conns, duration=duration)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def report(
    results: dict[str, Any],
    limit: dict[str, float],
    *,
    with_bento: bool,
    flags: list[str],
    conns: int,
    duration: float,
) -> None:
    rows: list[dict[str, Any]] = []
    bare_rps, bare_p50, _ = results["bare_1"]
    ghaf_rps, ghaf_p50, _ = results["ghaf_1"]
    ratio = _ratio(ghaf_rps, bare_rps)
    rows.append(
        case(
            f"1-row infer, {conns} conns",
            "req/s",
            "bare FastAPI+ORT",
            bare_rps,
            ghaf_rps,
            ratio,
            ">= 1.2x bare",
            ratio >= 1.2,
        )
    )
    rows.append(
        case(
            f"1-row infer p50, {conns} conns",
            "ms",
            "bare FastAPI+ORT",
            bare_p50,
            ghaf_p50,
            _ratio(ghaf_p50, bare_p50),
            "<= bare",
            ghaf_p50 <= bare_p50,
            digits=2,
        )
    )
    if with_bento:
        for mode in ("off", "on"):
            rps = results[f"bento_{mode}"][0]
            rows.append(
                case(
                    f"1-row infer, BentoML batching {mode}",
                    "req/s",
                    "BentoML 1.4",
                    rps,
                    ghaf_rps,
                    _ratio(ghaf_rps, rps),
                    "-",
                    None,
                )
            )
        best = max(results["bento_off"][0], results["bento_on"][0])
        ratio = _ratio(ghaf_rps, best)
        rows.append(
            case(
                "1-row infer vs BentoML's best",
                "req/s",
                "BentoML 1.4 best",
                best,
                ghaf_rps,
                ratio,
                ">= 5x",
                ratio >= 5,
            )
        )
    else:
        rows.append(
            case(
                "1-row infer vs BentoML's best",
                "req/s",
                "BentoML (not installed)",
                0.0,
                ghaf_rps,
                float("nan"),
                ">= 5x",
                None,
            )
        )
    for rows_n in (1, 100):
        bare_ms, ghaf_ms = results[f"bare_unloaded_{rows_n}"], results[f"ghaf_unloaded_{rows_n}"]
        rows.append(
            case(
                f"unloaded p50, {rows_n} row(s)",
                "ms",
                "bare FastAPI+ORT",
                bare_ms,
                ghaf_ms,
                _ratio(ghaf_ms, bare_ms),
                "<= bare + 0.5 ms",
                ghaf_ms <= bare_ms + 0.5,
                digits=3,
            )
        )
    physical = limit["rows_s_1000"]
    json_rows = results["ghaf_1000_json_rows_s"]
    binary_rows = results.get("ghaf_1000_binary_rows_s")
    rows.append(
        case(
            "1,000-row JSON infer",
            "rows/s",
            "bare FastAPI+ORT",
            results["bare_1000_rows_s"],
            json_rows,
            _ratio(json_rows, results["bare_1000_rows_s"]),
            "-",
            None,
            digits=0,
        )
    )
    if binary_rows is None:
        rows.append(
            case(
                "1,000-row binary infer (n/a: no binary tensors yet)",
                "rows/s",
                "in-process ORT",
                physical,
                0.0,
                float("nan"),
                ">= 0.5x",
                None,
                digits=0,
            )
        )
        rows.append(
            case(
                "binary vs JSON, 1,000 rows (n/a)",
                "rows/s",
                "ghaf JSON route",
                json_rows,
                0.0,
                float("nan"),
                ">= 2x",
                None,
                digits=0,
            )
        )
    else:
        ratio = _ratio(binary_rows, physical)
        rows.append(
            case(
                "1,000-row binary infer",
                "rows/s",
                "in-process ORT, 1 thread",
                physical,
                binary_rows,
                ratio,
                ">= 0.5x",
                ratio >= 0.5,
                digits=0,
            )
        )
        ratio = _ratio(binary_rows, json_rows)
        rows.append(
            case(
                "binary vs JSON, 1,000 rows",
                "rows/s",
                "ghaf JSON route",
                json_rows,
                binary_rows,
                ratio,
                ">= 2x",
                ratio >= 2,
                digits=0,
            )
        )
    on_rps, _, on_p99 = results["sk_on"]
    off_rps = results["sk_off"][0]
    ratio = _ratio(on_rps, off_rps)
    rows.append(
        case(
            f"scikit-learn, batching on vs off, {conns} conns",
            "req/s",
            "ghaf, batching off",
            off_rps,
            on_rps,
            ratio,
            ">= 4x, no 5xx",
            ratio >= 4,
        )
    )
    budget = MAX_LATENCY_MS + limit["sklearn_32_ms"]
    rows.append(
        case(
            "scikit-learn, batching on, p99",
            "ms",
            "max_latency_ms + 1 call",
            budget,
            on_p99,
            _ratio(on_p99, budget),
            "<= budget",
            on_p99 <= budget,
            digits=2,
        )
    )
    rows.append(
        case(
            "start-up to ready",
            "s",
            "-",
            2.0,
            results["startup_s"],
            results["startup_s"] / 2.0,
            "<= 2 s",
            results["startup_s"] <= 2.0,
            digits=2,
        )
    )
    rows.append(
        case(
            "idle RSS",
            "MB",
            "-",
            200.0,
            results["idle_rss_mb"],
            results["idle_rss_mb"] / 200.0,
            "<= 200 MB",
            results["idle_rss_mb"] <= 200.0,
        )
    )
    rows.append(
        case(
            "in-process ORT, 1 row",
            "us/call",
            "-",
            limit["one_row_us"],
            limit["one_row_us"],
            1.0,
            "-",
            None,
            digits=1,
        )
    )
    generator = "wrk" if shutil.which("wrk") else "python threads"
    on = ", ".join(["authentication", "/metrics", *flags])
    print_report(
        "serving",
        rows,
        note=(
            f"load generator: {generator}, {conns} connections, {duration:.0f}s per case, "
            f"one worker per server, model on 1 thread; ghaf with {on}; in-process ORT: "
            f"{limit['rows_s_100']:,.0f} rows/s at 100, {physical:,.0f} at 1,000"
        ),
    )


if __name__ == "__main__":
    main()
