"""Experiment tracking against MLflow: logging throughput, call cost, search, artifacts
and run creation.

Both servers run on this machine on SQLite: MLflow 3.x (`mlflow server`, default
settings, proxied artifacts on local disk) from its own virtual environment
`.bench/mlflow`, created on first use, driven by MLflow's own client
(bench/_mlflow_driver.py); ghaf (`ghaf server`, encrypting artifacts) driven by its SDK.
Cases:
  (a) 100,000 metric points from one run, until durable on the server: MLflow's
      `log_batch` (1,000 per call, its limit) against `ghaf.start_run` + `log_metric`;
  (b) the cost of one `log_metric` call in user code (median);
  (c) search over 10,000 runs: `metrics.auc > 0.5`, ordered by `metrics.auc desc`, up to
      1,000 rows (p50 of repeated searches; both return the same AUCs in the same order);
  (d) a 50 MB artifact, upload and download (same bytes back);
  (e) 1,000 runs, each with 10 params and 10 metrics (create, log params and metrics,
      end), on an idle machine and again with every core busy: a burner process per
      core (bench/_burn.py) runs beside both sides, as on a loaded CI runner.
The 10,000 search runs are bulk-inserted into MLflow's store directly (its REST path would
take about half an hour); ghaf's are created through its API.

Prints a table and, last, one JSON line (DESIGN.md "Benchmarks").
Usage: python bench/tracking.py [--points 100000] [--search-runs 10000] [--runs 1000]
                                [--artifact-mb 50] [--cases abcde] [--no-burn] [--quick]
       (--quick: tiny sizes, and MLflow only if .bench/mlflow already exists;
        --cases e: only case (e), e.g. while working on run creation;
        --no-burn: skip (e) with every core busy)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _burn import burning
from _mlflow import MlflowServer, mlflow
from _peers import ensure_peer
from _report import case, print_report

import ghaf
from ghaf.client import Client
from ghaf.core.settings import Settings
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess
from ghaf.tracking.batches import LogBatch, metrics_table

NAN = float("nan")


def ghaf_log_points(client: Client, project: str, points: int) -> tuple[float, int]:
    """(seconds from the first call until all points are durable, points stored)."""
    with ghaf.start_run("bench-points", project=project, client=client) as run:
        log_metric = run.log_metric
        started = time.perf_counter()  # like MLflow's figure: after the run exists
        for i in range(points):
            log_metric("loss", float(i), step=i)
    elapsed = time.perf_counter() - started
    return elapsed, len(client.runs.history(project, run.id, "loss"))


def ghaf_call_cost(client: Client, project: str, calls: int) -> float:
    """Median microseconds of one log_metric call (timed one by one, in its own run so
    the timing does not slow the throughput figure)."""
    costs = []
    clock = time.perf_counter_ns
    with ghaf.start_run("bench-calls", project=project, client=client) as run:
        log_metric = run.log_metric
        for i in range(calls):
            before = clock()
            log_metric("loss", float(i), step=i)
            costs.append(clock() - before)
    return statistics.median(costs) / 1000


def ghaf_seed(client: Client, project: str, runs: int) -> None:
    def one(i: int) -> None:
        auc = ((i * 7919) % 10_000) / 10_000
        run = client.runs.create(project, "bench-search", name=f"r{i}")
        batch = LogBatch(
            metrics=metrics_table(["auc", "loss"], [auc, 1 - auc], [0, 0], [1, 1]),
            params={"model": "rf" if i % 2 else "lr"},
            status="finished",
        )
        client.runs.log(project, run.id, batch)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(runs)))


def ghaf_search(client: Client, project: str, repeats: int) -> tuple[float, list[float]]:
    times, found = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        found = client.runs.search(
            project,
            "bench-search",
            filter="metrics.auc > 0.5",
            order_by=["metrics.auc desc"],
            page_size=1000,
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times), [r.metrics["auc"] for r in found]


def ghaf_artifacts(client: Client, project: str, path: Path) -> tuple[float, float]:
    with ghaf.start_run("bench-artifacts", project=project, client=client) as run:
        started = time.perf_counter()
        run.log_artifact(path)
        upload = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as target:
        started = time.perf_counter()
        back = client.runs.download_artifact(project, run.id, path.name, target)
        download = time.perf_counter() - started
        assert back.read_bytes() == path.read_bytes()
    return upload, download


def ghaf_create_runs(client: Client, project: str, runs: int) -> float:
    started = time.perf_counter()
    for i in range(runs):
        with ghaf.start_run("bench-create", project=project, client=client) as run:
            run.log_params({f"p{k}": k for k in range(10)})
            run.log_metrics({f"m{k}": float(i + k) for k in range(10)}, step=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--search-runs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--artifact-mb", type=int, default=50)
    parser.add_argument("--metric-calls", type=int, default=300, help="MLflow log_metric calls")
    parser.add_argument("--cases", default="abcde", help="which cases to run, e.g. 'e'")
    parser.add_argument(
        "--no-burn", dest="burn", action="store_false",
        help="skip case (e) with every core busy",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI smoke tests")
    args = parser.parse_args()
    if args.quick:
        args.points, args.search_runs, args.runs, args.artifact_mb = 2000, 100, 10, 2
        args.metric_calls = 20
    wanted = set(args.cases)
    with_mlflow = ensure_peer("mlflow", install=not args.quick)
    peer = "MLflow" if with_mlflow else "MLflow (not installed)"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        artifact = tmp / "weights.bin"
        if "d" in wanted:
            artifact.write_bytes(os.urandom(args.artifact_mb << 20))

        m: dict[str, Any] = {}
        if with_mlflow:
            server = MlflowServer(tmp)
            try:
                url = server.url
                if "a" in wanted:
                    m["batch"] = mlflow(kind="log_batch", url=url, points=args.points)
                    assert m["batch"]["stored"] == args.points, m["batch"]
                if "b" in wanted:
                    m["metric"] = mlflow(kind="log_metric", url=url, calls=args.metric_calls)
                if "c" in wanted:
                    experiment = mlflow(kind="experiment", url=url, name="bench-search")["id"]
                    mlflow(kind="seed", db_uri=server.db_uri, runs=args.search_runs,
                           experiment_id=experiment)  # fmt: skip
                    m["search"] = mlflow(
                        kind="search", url=url, experiment_id=experiment,
                        filter_string="metrics.auc > 0.5", repeats=5,
                    )  # fmt: skip
                if "d" in wanted:
                    m["artifacts"] = mlflow(kind="artifacts", url=url, path=str(artifact))
                    assert m["artifacts"]["same"]
                if "e" in wanted:
                    m["create"] = mlflow(kind="create_runs", url=url, runs=args.runs)
                    if args.burn:
                        with burning():
                            m["create_busy"] = mlflow(kind="create_runs", url=url, runs=args.runs)
            finally:
                server.stop()

        home = tmp / "ghaf-home"
        token = initialise(Settings(home=home, database_url="", master_key=None)).token
        assert token is not None
        env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": "", "GHAF_LOG_LEVEL": "warning"}
        os.environ["GHAF_CACHE"] = str(tmp / "ghaf-cache")
        g: dict[str, Any] = {}
        with (
            ServerProcess(env=env) as ghaf_server,
            Client(url=ghaf_server.url, token=token.token, timeout=600) as client,
        ):
            project = client.projects.create("bench").name
            ghaf_log_points(client, project, 10_000)  # warm both ends up, as MLflow's is
            if "a" in wanted:
                g["points_s"], stored = ghaf_log_points(client, project, args.points)
                assert stored == args.points, stored
            if "b" in wanted:
                g["call_us"] = ghaf_call_cost(client, project, args.points)
            if "c" in wanted:
                ghaf_seed(client, project, args.search_runs)
                g["search_s"], aucs = ghaf_search(client, project, repeats=20)
                if with_mlflow:
                    assert aucs == m["search"]["aucs"], "ghaf and MLflow searches disagree"
            if "d" in wanted:
                g["upload_s"], g["download_s"] = ghaf_artifacts(client, project, artifact)
            if "e" in wanted:
                g["create_s"] = ghaf_create_runs(client, project, args.runs)
                if args.burn:
                    with burning():
                        g["create_busy_s"] = ghaf_create_runs(client, project, args.runs)

    def get(*path: str) -> float:
        value: Any = m
        for key in path:
            if key not in value:
                return NAN
            value = value[key]
        return float(value)

    def row(name: str, unit: str, peer_value: float, ghaf_value: float, ratio: float,
            goal: str, met: bool, digits: int = 2) -> dict[str, Any]:  # fmt: skip
        return case(name, unit, peer, peer_value, ghaf_value, ratio, goal,
                    met if with_mlflow else None, digits=digits)  # fmt: skip

    mb = args.artifact_mb
    cases = []
    if "a" in wanted:
        mlflow_points, points_s = get("batch", "seconds"), g["points_s"]
        cases.append(row(f"(a) log {args.points:,} points, until durable", "s", mlflow_points,
                         points_s, mlflow_points / points_s, ">= 30x faster",
                         mlflow_points / points_s >= 30))  # fmt: skip
    if "b" in wanted:
        mlflow_call, call_us = get("metric", "median_us"), g["call_us"]
        cases.append(row("(b) one log_metric call, median", "us", mlflow_call, call_us,
                         mlflow_call / call_us, "ghaf < 20 us", call_us < 20))  # fmt: skip
    if "c" in wanted:
        mlflow_search, search_ms = get("search", "p50_s") * 1000, g["search_s"] * 1000
        cases.append(row(f"(c) search {args.search_runs:,} runs, <=1,000 rows, p50", "ms",
                         mlflow_search, search_ms, mlflow_search / search_ms,
                         ">= 10x and ghaf < 100 ms",
                         mlflow_search / search_ms >= 10 and search_ms < 100,
                         digits=1))  # fmt: skip
    if "d" in wanted:
        up, down = mb / get("artifacts", "upload_s"), mb / get("artifacts", "download_s")
        ghaf_up, ghaf_down = mb / g["upload_s"], mb / g["download_s"]
        cases += [
            row(f"(d) upload a {mb} MB artifact", "MB/s", up, ghaf_up, ghaf_up / up,
                ">= 1x (encrypting)", ghaf_up >= up, digits=1),
            row(f"(d) download a {mb} MB artifact", "MB/s", down, ghaf_down, ghaf_down / down,
                ">= 1x (decrypting)", ghaf_down >= down, digits=1),
        ]  # fmt: skip
    if "e" in wanted:
        busy = [("", "create", "create_s")]
        if args.burn:
            busy.append((f", {os.cpu_count()} cores busy", "create_busy", "create_busy_s"))
        for label, peer_key, ghaf_key in busy:
            mlflow_rate = args.runs / get(peer_key, "seconds")
            ghaf_rate = args.runs / g[ghaf_key]
            cases.append(row(f"(e) create {args.runs:,} runs, 10 params + 10 metrics{label}",
                             "runs/s", mlflow_rate, ghaf_rate, ghaf_rate / mlflow_rate,
                             ">= 20x", ghaf_rate / mlflow_rate >= 20, digits=1))  # fmt: skip
    print_report(
        "tracking",
        cases,
        note=(
            "ratio: how many times better ghaf is (peer/ghaf for times, ghaf/peer for rates); "
            f"both servers on SQLite on this machine, {os.cpu_count()} CPUs; MLflow "
            "driven by its own client; 'cores busy': one burner process per CPU beside "
            "both sides"
        ),
    )


if __name__ == "__main__":
    main()
