"""The MLflow side of bench/tracking.py, run by the interpreter of `.bench/mlflow`.

Reads one JSON command from argv, drives the MLflow tracking server with MLflow's own
client (or seeds its SQLite store), and prints one JSON result line.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient


def _experiment(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def log_batch(client: MlflowClient, points: int) -> dict:
    warm_up = client.create_run(_experiment(client, "bench-batch"))  # 10,000 points, as ghaf's
    for start in range(0, 10_000, 1000):
        metrics = [Metric("loss", 1.0, 1, i) for i in range(start, start + 1000)]
        client.log_batch(warm_up.info.run_id, metrics=metrics)
    run = client.create_run(_experiment(client, "bench-batch"))
    now = int(time.time() * 1000)
    started = time.perf_counter()
    for start in range(0, points, 1000):
        metrics = [
            Metric("loss", float(i), now + i, i) for i in range(start, min(start + 1000, points))
        ]
        client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id)
    elapsed = time.perf_counter() - started
    stored = len(client.get_metric_history(run.info.run_id, "loss"))
    return {"seconds": elapsed, "stored": stored}


def log_metric(client: MlflowClient, calls: int) -> dict:
    run = client.create_run(_experiment(client, "bench-metric"))
    costs = []
    for i in range(calls):
        started = time.perf_counter_ns()
        client.log_metric(run.info.run_id, "loss", float(i), step=i)
        costs.append(time.perf_counter_ns() - started)
    client.set_terminated(run.info.run_id)
    return {"median_us": statistics.median(costs) / 1000}


def seed(db_uri: str, runs: int, experiment_id: str) -> dict:
    """Bulk-insert runs straight into MLflow's store (its REST path would take hours)."""
    from mlflow.store.tracking.dbmodels import models as m
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(db_uri)
    now = int(time.time() * 1000)
    with Session(engine) as session:
        for i in range(runs):
            run_id = uuid.uuid4().hex
            auc = ((i * 7919) % 10_000) / 10_000
            session.add(
                m.SqlRun(
                    run_uuid=run_id,
                    name=f"r{i}",
                    source_type="LOCAL",
                    source_name="",
                    entry_point_name="",
                    user_id="bench",
                    status="FINISHED",
                    start_time=now + i,
                    end_time=now + i,
                    source_version="",
                    lifecycle_stage="active",
                    artifact_uri="",
                    experiment_id=int(experiment_id),
                )
            )
            session.add(m.SqlParam(key="model", value="rf" if i % 2 else "lr", run_uuid=run_id))
            for key, value in (("auc", auc), ("loss", 1 - auc)):
                session.add(
                    m.SqlMetric(
                        key=key, value=value, timestamp=now, step=0, is_nan=False, run_uuid=run_id
                    )
                )
                session.add(
                    m.SqlLatestMetric(
                        key=key, value=value, timestamp=now, step=0, is_nan=False, run_uuid=run_id
                    )
                )
        session.commit()
    return {"runs": runs}


def search(client: MlflowClient, experiment_id: str, filter_string: str, repeats: int) -> dict:
    times, found = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        found = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            order_by=["metrics.auc DESC"],
            max_results=1000,
        )
        times.append(time.perf_counter() - started)
    return {"p50_s": statistics.median(times), "aucs": [r.data.metrics["auc"] for r in found]}


def artifacts(client: MlflowClient, path: str) -> dict:
    run = client.create_run(_experiment(client, "bench-artifacts"))
    started = time.perf_counter()
    client.log_artifact(run.info.run_id, path)
    upload = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as target:
        started = time.perf_counter()
        local = client.download_artifacts(run.info.run_id, Path(path).name, target)
        download = time.perf_counter() - started
        same = Path(local).read_bytes() == Path(path).read_bytes()
    return {"upload_s": upload, "download_s": download, "same": same}


def create_runs(client: MlflowClient, runs: int) -> dict:
    experiment_id = _experiment(client, "bench-create")
    now = int(time.time() * 1000)
    started = time.perf_counter()
    for i in range(runs):
        run = client.create_run(experiment_id)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(f"m{k}", float(i + k), now, 0) for k in range(10)],
            params=[Param(f"p{k}", str(k)) for k in range(10)],
            tags=[RunTag("bench", "create")],
        )
        client.set_terminated(run.info.run_id)
    return {"seconds": time.perf_counter() - started}


def registry(client: MlflowClient, versions: int) -> dict:
    """A registered model with ``versions`` versions (each from a run's artifact) and the
    alias ``champion`` on version 2 (or 1)."""
    experiment = _experiment(client, "bench-registry")
    client.create_registered_model("churn")
    for _ in range(versions):
        run = client.create_run(experiment)
        with tempfile.TemporaryDirectory() as folder:
            weights = Path(folder) / "model.bin"
            weights.write_bytes(b"weights")
            client.log_artifact(run.info.run_id, str(weights), "model")
        client.create_model_version(
            "churn", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
    champion = min(2, versions)
    client.set_registered_model_alias("churn", "champion", str(champion))
    return {"champion": champion}


def main() -> None:
    command = json.loads(sys.argv[1])
    kind = command.pop("kind")
    if kind == "seed":
        result = seed(**command)
    elif kind == "experiment":
        mlflow.set_tracking_uri(command["url"])
        result = {"id": _experiment(MlflowClient(command["url"]), command["name"])}
    else:
        client = MlflowClient(command.pop("url"))
        result = {
            "log_batch": log_batch,
            "log_metric": log_metric,
            "search": search,
            "artifacts": artifacts,
            "create_runs": create_runs,
            "registry": registry,
        }[kind](client, **command)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
