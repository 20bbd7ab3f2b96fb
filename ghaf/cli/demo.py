"""``ghaf demo``: the whole platform lifecycle on embedded defaults, narrated.

Each capability adds its own step here. The demo is re-runnable: it reuses what an
earlier run created and never deletes user data.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.panel import Panel
from rich.table import Table

from ghaf.client import Client
from ghaf.console.output import console, reporting_errors, styled
from ghaf.core.errors import (
    Conflict,
    GhafError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    TooManyRequests,
    Unauthenticated,
)
from ghaf.core.ids import new_id
from ghaf.core.settings import load_settings
from ghaf.server.install import initialise, mint_admin_token
from ghaf.server.process import ServerProcess, free_port

DEMO_PASSWORD = "demo-password-123"  # noqa: S105 - a local demo user's password, printed


def database_kind(url: str) -> str:
    """What a person calls the database behind ``url``: from its dialect, never assumed."""
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    # ghaf opens every SQLite file in WAL mode (ghaf.core.database).
    names = {"sqlite": "SQLite (WAL)", "postgresql": "PostgreSQL"}
    return names.get(backend, backend)


def _step(number: int, title: str) -> None:
    console.rule(styled((f"{number}. {title}", "bold cyan")), align="left")


def _ok(*parts: str | tuple[str, str]) -> None:
    """One step's result; parts are plain text or ``(text, style)``, never markup."""
    console.print(styled("  ", ("✓", "green"), " ", *parts), highlight=False)


def _existing(create: Any, get: Any) -> Any:
    """Create, or reuse what an earlier demo run created."""
    try:
        return create()
    except Conflict:
        return get()


def demo() -> None:
    """Run the lifecycle end to end on a local platform home (GHAF_HOME, else ./.ghaf)."""
    with reporting_errors():
        _run()


def _run() -> None:
    settings = load_settings()
    console.print(
        Panel.fit(
            styled(("ghaf demo", "bold"), ": secure-by-default MLOps platform"),
            border_style="cyan",
        )
    )

    _step(1, "Initialise the platform home")
    result = initialise(settings)
    _ok(
        f"home {result.home}: {database_kind(settings.resolved_database_url)} database "
        f"({result.database}) with the sealed keyring; artifact folder in the home"
    )
    _ok(f"schema at revision {result.schema_after}")
    if result.token is not None:
        admin_token = result.token.token
        _ok("platform admin 'admin' created")
    else:
        admin_token = mint_admin_token(settings, admin_name="admin").token
        _ok("platform admin exists; minted a fresh admin token through local access")

    _step(2, "Start the API server on a free 127.0.0.1 port")
    log_path = settings.home / "demo-server.log"
    env = {
        "GHAF_HOME": str(settings.home),
        # The demo's canary rollout runs in seconds, not minutes: the server writes what
        # it counted twice a second, judges rollouts every second and stores shadow logs
        # after two seconds (5 s, 5 s and a minute by default).
        "GHAF_DEPLOYMENT_TRAFFIC_FLUSH_S": "0.5",
        "GHAF_DEPLOYMENT_ROLLOUT_INTERVAL_S": "1",
        "GHAF_DEPLOYMENT_SHADOW_LOG_ROTATE_S": "2",
    }
    server = ServerProcess(env=env, log_path=log_path).start()
    try:
        _ok(f"{server.url} ready in {server.started_in:.2f}s (log: {log_path})")
        _lifecycle(server.url, admin_token, settings.home)
    finally:
        code = server.stop()
    _step(16, "Stop the server cleanly")
    if code != 0:
        raise GhafError(f"the server exited with code {code}; see {log_path}")
    _ok("server exited with code 0; a signed audit checkpoint was written on shutdown")
    _finish(settings.home)


def _artifacts(admin: Client, alice: Client, home: Path) -> None:
    table = _demo_table()
    stored = alice.artifacts.upload("risk", "datasets/credit.csv", table, overwrite=True)
    _ok(
        f"alice stored datasets/credit.csv: {stored.size} bytes, sha256 {stored.sha256[:12]}…, "
        f"region {stored.region}"
    )
    marker = table.splitlines()[1]
    on_disk = [p for p in (home / "artifacts").rglob("*") if p.is_file()]
    leaked = [p for p in on_disk if marker in p.read_bytes()]
    if leaked:
        raise GhafError(f"plaintext found at rest in {leaked[0]}")
    _ok(
        f"{len(on_disk)} object file(s) on disk, none containing the plaintext "
        "(AES-256-GCM chunks, per-object data key)"
    )
    again = alice.artifacts.upload("risk", "datasets/credit-copy.csv", table, overwrite=True)
    after = [p for p in (home / "artifacts").rglob("*") if p.is_file()]
    _ok(
        f"the same content under a second name: linked, not stored again "
        f"({len(after)} object file(s); same sha256: {again.sha256 == stored.sha256})"
    )
    back = alice.artifacts.read("risk", "datasets/credit.csv", start=0, end=40)
    _ok(f"ranged read of bytes 0-40 decrypts to: {back.decode()!r}")
    rotation = admin.keys.rotate("risk")
    _ok(
        f"rotated the project's key to version {rotation.version}; {rotation.rewrapped} data "
        "key(s) re-wrapped, no data re-encrypted"
    )
    report = admin.artifacts.verify("risk")
    _ok(f"verify: {report.checked} object(s) re-read and authenticated, ok={report.ok}")
    _existing(
        lambda: admin.projects.create("eu-only", allowed_regions=["eu-west"]),
        lambda: admin.projects.get("eu-only"),
    )
    try:
        admin.artifacts.upload("eu-only", "data.csv", table)
        raise GhafError("a write outside the project's regions was accepted")
    except PermissionDenied as refused:
        _ok("residency: ", (refused.detail, "yellow"))


def _datasets(alice: Client, home: Path) -> None:
    shards = home / "demo-data" / "credit-shards"
    shards.mkdir(parents=True, exist_ok=True)
    lines = _demo_table().decode().splitlines()
    header, rows = lines[0], lines[1:]
    for index in range(20):
        part = rows[index * 100 : (index + 1) * 100]
        (shards / f"part-{index:02d}.csv").write_text("\n".join([header, *part]) + "\n")
    _existing(
        lambda: alice.datasets.create("risk", "credit-shards"),
        lambda: alice.datasets.get("risk", "credit-shards"),
    )
    first = alice.datasets.add_version("risk", "credit-shards", shards, description="20 shards")
    _ok(f"version {first.version}: {first.file_count} files, {first.total_bytes} bytes")
    (shards / "part-07.csv").write_text(header + "\n7,1,0.5,0\n")
    uploaded: list[int] = []
    second = alice.datasets.add_version(
        "risk", "credit-shards", shards, description="fix part 7", upload_progress=uploaded.append
    )
    _ok(
        f"version {second.version} (parent {second.parent}): changed 1 of 20 files, "
        f"uploaded {sum(uploaded)} bytes of content the project did not hold yet"
    )
    alice.datasets.set_alias("risk", "credit-shards", "prod-training", first.version)
    target = home / "demo-data" / "download"
    alice.datasets.download("risk", "credit-shards", "prod-training", destination=target)
    _ok(f"alias prod-training -> v{first.version}; downloaded and verified into {target}")
    _table_versions(alice)


def _table_versions(alice: Client) -> None:
    """A table as a dataset: schema, profile, classification, diff, DuckDB."""
    import pyarrow as pa

    def customers(count: int, shift: int) -> pa.Table:
        ids = list(range(1, count + 1))
        return pa.table(
            {
                "customer_id": ids,
                "email": [f"user{i}@example.ae" for i in ids],
                "income": [30_000.0 + shift + (i * 7919) % 90_000 for i in ids],
            }
        )

    _existing(
        lambda: alice.datasets.create("risk", "customers"),
        lambda: alice.datasets.get("risk", "customers"),
    )
    first = alice.datasets.add_version("risk", "customers", customers(1000, 0))
    income = (first.profile or {})["columns"]["income"]
    _ok(
        f"table version {first.version}: {first.row_count} rows, income mean "
        f"{income['mean']:,.0f}, p95 {income['quantiles']['0.95']:,.0f} (profiled on ingest)"
    )
    alice.datasets.classify("risk", "customers", "email", "pii")
    second = alice.datasets.add_version("risk", "customers", customers(1200, 25_000))
    diff = alice.datasets.diff("risk", "customers", first.version, second.version)
    moved = diff.moved_columns[0] if diff.moved_columns else None
    _ok(
        f"v{second.version} inherits email={second.classifications.get('email')}; diff: rows "
        f"{diff.rows_before} -> {diff.rows_after}"
        + (f", most moved column {moved.column} ({moved.score:.2f} std)" if moved else "")
    )
    relation = alice.datasets.duckdb("risk", "customers")
    ((high,),) = relation.filter("income > 100000").count("*").fetchall()
    _ok(f"DuckDB over the cached Parquet: {high} customers earn over 100,000")


def _tracking(alice: Client) -> list[str]:
    """Train a few models with autolog, then search and compare the runs."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    import ghaf

    rng = np.random.default_rng(7)
    features = rng.normal(size=(2000, 5))
    target = (features[:, 0] - 0.7 * features[:, 2] + rng.normal(0, 0.5, 2000) > 0).astype(int)
    train, test = slice(0, 1500), slice(1500, None)
    ghaf.autolog()
    candidates = [("logreg", LogisticRegression(C=c, max_iter=500)) for c in (0.01, 1.0)] + [
        ("forest", RandomForestClassifier(n_estimators=40, max_depth=d, random_state=0))
        for d in (3, 8)
    ]
    for family, model in candidates:
        with ghaf.start_run(
            "credit-default", project="risk", client=alice, tags={"family": family}
        ) as run:
            run.log_input(dataset="customers", version="latest")
            model.fit(features[train], target[train])  # autolog: params, score, model
            model.score(features[test], target[test])  # autolog: validation_score
            for epoch in range(200):  # a training curve, buffered in the background
                run.log_metric("loss", float(np.exp(-epoch / 40) + 0.05 * rng.random()), step=epoch)
        _ok(
            f"run {run.name} ({family}): {len(model.get_params())} params, model.skops, "
            "signature and 201 metric points logged"
        )
    ghaf.autolog(disable=True)

    with ghaf.start_run("throughput", project="risk", client=alice) as run:
        started = time.perf_counter()
        for step in range(100_000):
            run.log_metric("x", float(step), step=step)
        buffered = time.perf_counter() - started
    total = time.perf_counter() - started
    _ok(
        f"100,000 log_metric calls took {buffered * 1e6 / 100_000:.1f} µs each; durable on the "
        f"server {total:.2f} s after the first"
    )

    best = alice.runs.search(
        "risk",
        "credit-default",
        filter="metrics.validation_score > 0.7 and tags.family != ''",
        order_by=["metrics.validation_score desc"],
        page_size=10,
    )
    table = Table()
    for column in ("run", "family", "validation_score", "training_score", "input"):
        table.add_column(column)
    for found in best[:4]:
        table.add_row(
            found.name,
            found.tags.get("family", ""),
            f"{found.metrics['validation_score']:.3f}",
            f"{found.metrics['training_score']:.3f}",
            ", ".join(f"{i.dataset} v{i.version}" for i in found.inputs),
        )
    console.print(table)
    comparison = alice.runs.compare("risk", [r.id for r in best[:2]])
    _ok(
        "search 'metrics.validation_score > 0.7' ordered by it; compare of the top two: "
        f"{len(comparison.params)} params differ ({', '.join(list(comparison.params)[:3])}...)"
    )
    _ok(
        f"try: ghaf runs ls credit-default -p risk -o 'metrics.validation_score desc';  "
        f"ghaf runs compare {best[0].id[:13]} {best[1].id[:13]} -p risk"
    )
    return [best[1].id, best[0].id]  # the runner-up first: the best one replaces it


REGISTRY_POLICY = """\
approvals: {required: 1}          # four-eyes: one approver who did not register it
card: {required: [intended_use, owners]}
protected_aliases: [champion]
gates:
  - {metric: validation_score, min: 0.7}
  - no_regression: {metric: validation_score, margin: 0.02}
  - {card_fields: [intended_use, owners]}
  - {signature: required}
  - {safe_format: true}
  - {max_size_mb: 50}
  - latency: {max_ms: 50, percentile: 95, repeats: 50}
"""


def _registry(admin: Client, alice: Client, runs: list[str], home: Path) -> None:
    """Register two trained models, refuse a pickle, gate, approve, crown a champion."""
    import io

    import joblib  # type: ignore[import-untyped]
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ghaf.registry.cli import print_gates

    admin.models.set_policy("risk", REGISTRY_POLICY)
    _ok("registry policy set by the owner: 1 approval, required card fields, 7 gates")
    card = {
        "intended_use": "Rank credit applications for manual review; not for automatic denial.",
        "limitations": "Trained on generated data; not calibrated for other regions.",
        "owners": ["alice", "risk-team"],
        "fairness": "No protected attributes are inputs; outcomes are monitored per segment.",
    }
    versions = []
    for run, convert in zip(runs, (False, True), strict=True):
        version = alice.models.register(
            "risk",
            "credit-scorer",
            run=run,
            card=card,
            convert_onnx=convert,
            description="autologged scikit-learn model",
        )
        versions.append(version)
        onnx = f"; ONNX copy, max diff {version.onnx.max_abs_diff:.1e}" if version.onnx else ""
        _ok(
            f"credit-scorer v{version.version} from run {run[:13]}: {version.format}, "
            f"inputs {version.inputs[0]['shape']}, loaded and predicted in a child process in "
            f"{version.checks['load_ms'] + version.checks['predict_ms']:.0f} ms{onnx}"
        )
    rogue = home / "demo-model.joblib"
    buffer = io.BytesIO()
    joblib.dump(LogisticRegression().fit(np.eye(2), [0, 1]), buffer)
    rogue.write_bytes(buffer.getvalue())
    try:
        alice.models.register("risk", "credit-scorer", path=rogue, sample=np.eye(2))
        raise GhafError("a pickle was registered: the safe-format rule is broken")
    except InvalidInput as refused:
        _ok("a joblib pickle refused: ", (f"{refused.detail[:110]}...", "yellow"))
    first, second = versions
    try:
        alice.models.approve("risk", "credit-scorer", first.version, comment="mine")
    except PermissionDenied as refused:
        _ok("alice cannot approve: ", (refused.detail, "yellow"))
    for version in versions:
        print_gates(alice.models.check_gates("risk", "credit-scorer", version.version))
        approved = admin.models.approve(
            "risk", "credit-scorer", version.version, comment="gates pass; card reviewed"
        )
        _ok(f"v{version.version} {approved.status} by admin (a second principal, four-eyes)")
        moved = alice.models.set_alias("risk", "credit-scorer", "champion", version.version)
        _ok(f"credit-scorer@champion -> v{moved.version} (protected alias: approved + gates)")
    lineage = alice.models.lineage("risk", "credit-scorer@champion")
    inputs = ", ".join(f"{d['dataset']} v{d['version']}" for d in lineage.datasets)
    _ok(
        f"lineage of v{lineage.version}: run {lineage.run['name'] if lineage.run else '-'} <- "
        f"{inputs}; -> aliases {lineage.aliases}"
    )
    _ok(
        "try: ghaf gates check credit-scorer@champion -p risk;  "
        f"ghaf models card credit-scorer {second.version} -p risk --format html -o card.html"
    )


def _demo_table() -> bytes:
    """A small generated credit table (no downloads)."""
    rows = ["customer_id,income,debt_ratio,defaulted"]
    rows += [
        f"{i},{30_000 + (i * 7919) % 90_000},{(i * 37 % 100) / 100:.2f},{i % 7 == 0:d}"
        for i in range(1, 2001)
    ]
    return ("\n".join(rows) + "\n").encode()


def _lifecycle(url: str, admin_token: str, home: Path) -> None:
    admin = Client(url=url, token=admin_token)

    _step(3, "Admin creates two projects and a user")
    for name, description in (("risk", "Credit risk models"), ("fraud", "Fraud detection")):
        _existing(
            lambda n=name, d=description: admin.projects.create(n, description=d),
            lambda n=name: admin.projects.get(n),
        )
        _ok("project ", (name, "bold"))
    _existing(
        lambda: admin.users.create("alice", password=DEMO_PASSWORD),
        lambda: admin.users.get("alice"),
    )
    _ok("user ", ("alice", "bold"), " (argon2-hashed password)")

    _step(4, "Alice joins 'risk' as a member and logs in with her password")
    try:
        admin.members.add("risk", principal="alice", role="member")
    except Conflict:
        admin.members.update("risk", "alice", role="member")
    alice_token = Client.login(url, "alice", DEMO_PASSWORD).token
    alice = Client(url=url, token=alice_token)
    me = alice.whoami()
    _ok(f"alice's roles: {me.projects}")
    _ok(f"alice sees projects: {[p.name for p in alice.projects.list()]}")
    wrong, refused_at = _guess_passwords(url)
    _ok(
        f"a password guesser got {wrong} wrong-password answers, then 429 "
        f"(Retry-After {refused_at} s): rate limits and lockout run before any hashing"
    )

    _step(5, "RBAC: alice tries an owner action, and a project she is not in")
    try:
        alice.projects.delete("risk")
        raise GhafError("alice was allowed to delete 'risk': RBAC is broken")
    except PermissionDenied as refused:
        _ok("delete 'risk' refused (403): ", (refused.detail, "yellow"))
    try:
        alice.projects.get("fraud")
        raise GhafError("alice could read 'fraud': RBAC is broken")
    except NotFound as hidden:
        _ok("get 'fraud' answers 404, existence not leaked: ", (hidden.detail, "yellow"))

    _step(6, "Encrypted, content-addressed artifacts")
    _artifacts(admin, alice, home)

    _step(7, "Versioned datasets with incremental upload")
    _datasets(alice, home)

    _step(8, "Experiment tracking: autologged training runs, search and compare")
    best_runs = _tracking(alice)

    _step(9, "Model registry: safe formats, gates, four-eyes approval, champion alias")
    _registry(admin, alice, best_runs, home)

    _step(10, "The audit trail")
    events = admin.audit.list()
    table = Table(show_lines=False)
    for column in ("seq", "actor", "project", "action", "resource", "outcome"):
        table.add_column(column)
    for event in events[-15:]:
        style = "red" if event.outcome != "success" else None
        table.add_row(
            str(event.seq),
            event.actor or "-",
            event.project or "-",
            event.action,
            event.resource,
            event.outcome,
            style=style,
        )
    console.print(table)
    _ok(f"{len(events)} rows in total; showing the last {min(len(events), 15)}")

    _step(11, "Verify the hash chain and signed checkpoints")
    report = admin.audit.verify()
    if not report.ok:
        raise GhafError(
            f"audit verification failed at row {report.first_bad_seq}: {report.problem}"
        )
    _ok(f"intact: {report.rows} rows, {report.checkpoints} signed checkpoints")
    if report.witnessed:
        _ok("latest witnessed checkpoint (keep it elsewhere): ", (report.witnessed, "bold"))
        seq = report.witnessed.split(":", 1)[0]
        forged = admin.audit.verify(anchor=f"{seq}:{'0' * 64}")
        if forged.ok:
            raise GhafError("a wrong anchor verified: the audit witness is broken")
        _ok("a wrong anchor fails: ", (str(forged.problem), "yellow"))

    _step(12, "Health and metrics")
    _ok(f"/readyz: {admin.health()}")
    metrics = admin.request("GET", "/metrics").text
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ghaf_http_requests_total{")
    )
    _ok(f"/metrics: {served:.0f} requests counted by route and status (Prometheus format)")
    # One in-server scheduler runs every domain's periodic work, leased in the database
    # so that several workers or servers never run a task twice at once.
    tasks = admin.admin.tasks()
    states = ", ".join(f"{t.name} {t.state}" for t in tasks)
    _ok(f"background tasks ({len(tasks)}, one scheduler; `ghaf admin tasks`): {states}")

    _step(13, "Serve the champion: Open Inference Protocol v2 and /predict")
    _serving(alice, url)

    _step(14, "Deploy champion against challenger, 50/50 and sticky, and read the A/B test")
    _deployments(admin, alice, url)

    _step(15, "Canary rollout with automatic rollback, beside a shadow variant")
    _rollout(admin, alice, url)
    admin.close()
    alice.close()


@contextmanager
def _listening(app: Any) -> Iterator[str]:
    """``app`` under uvicorn in a background thread on a free 127.0.0.1 port."""
    import threading

    import uvicorn

    class Quiet(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:  # the demo's main thread keeps them
            yield

    from ghaf.serving.wire import protocol_for

    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=protocol_for(app) or "auto",  # as ghaf serve answers: off the wire
    )
    server = Quiet(config)
    thread = threading.Thread(target=server.run, name="demo-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise GhafError("the demo's serving app did not start")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _serving(alice: Client, url: str) -> None:
    """``ghaf serve credit-scorer@champion`` in-process: fetched with alice's token and
    checked against its SHA-256, called over both protocols with her token (which the
    serving app checks with the platform), then bundled and served with no platform."""
    import secrets
    import tempfile

    import httpx
    import numpy as np

    from ghaf.serving.app import create_serving_app
    from ghaf.serving.auth import InvokeKey, KeyAuthorizer, RemoteAuthorizer
    from ghaf.serving.standalone import prepare, prepare_bundle

    ref = "credit-scorer@champion"
    with tempfile.TemporaryDirectory(prefix="ghaf-demo-serve-") as folder:
        started = time.perf_counter()
        loaded = prepare(alice.models, "risk", ref, Path(folder))
        spec = loaded.signature[0]
        _ok(
            f"{ref} -> v{loaded.version} ({loaded.info.format}, SHA-256 checked) loaded in "
            f"{(time.perf_counter() - started) * 1000:.0f} ms; input {spec.name} "
            f"{spec.datatype}{list(spec.shape)}"
        )
        authorizer = RemoteAuthorizer(url, "risk", loaded.name)
        features = spec.shape[1] if len(spec.shape) == 2 and spec.shape[1] > 0 else 5
        rows = np.random.default_rng(11).normal(size=(3, features)).round(4)
        tensor = {"name": spec.name, "datatype": "FP64", "shape": [3, rows.shape[1]]}
        expected = loaded.predict({spec.name: rows})["predictions"].tolist()
        token = {"authorization": alice._http.headers["authorization"]}
        with (
            _listening(create_serving_app([loaded], authorizer=authorizer)) as served,
            httpx.Client(base_url=served, timeout=30) as http,
        ):
            infer = http.post(
                f"/v2/models/{loaded.name}/infer",
                json={"id": "demo-1", "inputs": [{**tensor, "data": rows.tolist()}]},
                headers=token,
            )
            _check(infer, "OIP v2 infer")
            outputs = {o["name"]: o for o in infer.json()["outputs"]}
            got = outputs["predictions"]["data"]
            _ok(
                f"POST /v2/models/{loaded.name}/infer (3 rows, FP64): predictions {got}, "
                f"outputs {sorted(outputs)}; id echoed: {infer.json()['id']}"
            )
            plain = http.post("/predict", json=rows.tolist(), headers=token)
            _check(plain, "/predict")
            _ok(f"POST /predict with a bare list of rows: {plain.json()}")
            if got != expected or plain.json() != expected:
                raise GhafError(f"served predictions {got} differ from a direct call {expected}")
            _ok("both answers match a direct call of the model, row for row")
            anonymous = http.post("/predict", json=rows.tolist())
            refusal = anonymous.json()["error"].split(":", 1)[0]
            _ok(f"without a token: {anonymous.status_code} ", (refusal, "yellow"))

        bundle = Path(folder) / "bundle"
        alice.models.download("risk", ref, destination=bundle, bundle=True)
        key = secrets.token_urlsafe(32)
        offline = prepare_bundle(bundle, expected_sha256=loaded.info.sha256)
        gate = KeyAuthorizer(InvokeKey(key), "risk")
        with (
            _listening(create_serving_app([offline], authorizer=gate)) as served,
            httpx.Client(base_url=served, timeout=30) as http,
        ):
            answer = http.post(
                "/predict", json=rows.tolist(), headers={"authorization": f"Bearer {key}"}
            )
            _check(answer, "/predict on the bundle")
        if answer.json() != expected:
            raise GhafError(f"the bundle answered {answer.json()}, the platform's {expected}")
        files = ", ".join(sorted(p.name for p in bundle.iterdir()))
        _ok(
            f"bundle written ({files}), hash-checked and served with no platform behind its "
            f"own invoke key: {answer.json()}, the same answers"
        )
    _ok("try it (a token of a risk member in GHAF_TOKEN):")
    body = json.dumps({"inputs": [{**tensor, "data": rows.tolist()}]})
    auth = '-H "Authorization: Bearer $GHAF_TOKEN"'
    for line in (
        "ghaf serve credit-scorer@champion -p risk --port 8081 &",
        f"curl -s localhost:8081/v2/models/{loaded.name}/infer {auth} -d '{body}'",
        f"curl -s localhost:8081/predict {auth} -d '{json.dumps(rows.tolist())}'",
        "ghaf models download credit-scorer@champion -p risk --bundle ./credit   # air-gapped:",
        "ghaf serve --bundle ./credit --invoke-key-file KEYFILE",
    ):
        # Never wrapped, so that each line can be copied as it is.
        console.print(f"    {line}", markup=False, highlight=False, soft_wrap=True)


def _deployments(admin: Client, alice: Client, url: str) -> None:
    """A production deployment with two approved versions (the champion and the version
    before it), sticky per customer; alice's requests through the gateway start a
    replica of each on first use; synthetic conversions posted under the answers'
    outcome ids; the report with its always-valid p-values."""
    import httpx
    import numpy as np

    from ghaf.deployments.cli import print_report

    champion = admin.models.get("risk", "credit-scorer").aliases["champion"]
    challenger = champion - 1
    variants = [
        {"name": "champion", "model": "credit-scorer", "version": "@champion", "weight": 50},
        {"name": "challenger", "model": "credit-scorer", "version": challenger, "weight": 50},
    ]
    spec = {"kind": "binary", "control": "champion"}
    try:
        deployed = admin.deployments.create(
            "risk", "credit-api", variants=variants, production=True,
            sticky={"header": "x-customer"}, abtest=spec,
        )  # fmt: skip
    except Conflict:  # a second run of the demo: the same spec as a new revision
        deployed = admin.deployments.update(
            "risk", "credit-api", variants=variants, production=True, abtest=spec,
            reason="demo run again",
        )  # fmt: skip
    served = {k: f"v{v.version}" for k, v in deployed.resolved.items()}
    _ok(
        f"deployment credit-api revision {deployed.revision} (production: approved versions "
        f"whose gates pass): {served}, sticky on x-customer"
    )
    shape = alice.models.version("risk", "credit-scorer@champion").inputs[0]["shape"]
    width = shape[1] if len(shape) == 2 and shape[1] > 0 else 5
    rng = np.random.default_rng(7)
    predict = f"{url}/api/v1/projects/risk/deployments/credit-api/predict"
    token = {"authorization": alice._http.headers["authorization"]}
    answered: dict[str, str] = {}
    by_customer: dict[str, str] = {}
    with httpx.Client(timeout=120) as http:
        started = time.perf_counter()
        first = http.post(predict, json=rng.normal(size=(1, width)).round(3).tolist(),
                          headers={**token, "x-customer": "c0"})  # fmt: skip
        _check(first, "the deployment's /predict")
        _ok(
            f"first request held while a replica started (cold start): "
            f"{(time.perf_counter() - started) * 1000:.0f} ms, answered by "
            f"{first.headers['x-ghaf-variant']}"
        )
        started = time.perf_counter()
        for i in range(600):
            customer = f"c{i % 300}"  # each customer comes twice
            answer = http.post(
                predict,
                json=rng.normal(size=(1, width)).round(3).tolist(),
                headers={**token, "x-customer": customer},
            )
            _check(answer, "the deployment's /predict")
            variant = answer.headers["x-ghaf-variant"]
            if by_customer.setdefault(customer, variant) != variant:
                raise GhafError(f"customer {customer} moved variants: stickiness is broken")
            answered[answer.headers["x-ghaf-outcome-id"]] = variant
        elapsed = time.perf_counter() - started
    counts = {v: sum(1 for x in answered.values() if x == v) for v in ("champion", "challenger")}
    _ok(
        f"600 requests from 300 customers in {elapsed:.1f} s through the gateway: {counts}; "
        "every customer's second request went to the variant of their first"
    )
    rates = {"champion": 0.08, "challenger": 0.22}  # the challenger converts better
    outcomes = {r: float(rng.random() < rates[v]) for r, v in answered.items()}
    time.sleep(1.0)  # the gateway writes which variant answered twice a second
    result = alice.deployments.post_outcomes("risk", "credit-api", outcomes)
    _ok(
        f"{result.recorded} synthetic conversions ({result.unknown} unknown, "
        f"{result.duplicate} duplicates) posted by alice under the answers' outcome ids"
    )
    print_report(admin.deployments.abtest_report("risk", "credit-api"))
    _ok("try: ghaf deploy show credit-api -p risk;  ghaf deploy abtest report credit-api -p risk")


def _rollout(admin: Client, alice: Client, url: str) -> None:
    """Deployment ``scoring``: the champion takes all traffic and the version before it
    mirrors it as a shadow; a canary rollout of that version climbs 20% -> 100% on the
    evidence the gateway counts (failure rate and p99 against the stable), and the
    shadow's answers land in the project's shadow log."""
    import httpx
    import numpy as np

    from ghaf.deployments.cli import print_rollout

    champion = admin.models.get("risk", "credit-scorer").aliases["champion"]
    previous = champion - 1
    variants = [
        {"name": "stable", "model": "credit-scorer", "version": champion, "weight": 100},
        {"name": "mirror", "model": "credit-scorer", "version": previous, "shadow": True},
    ]
    try:
        admin.deployments.create("risk", "scoring", production=True, variants=variants)
    except Conflict:  # a second run of the demo: back to where the first one started
        with contextlib.suppress(Conflict):  # (one stopped mid-rollout is aborted)
            admin.deployments.abort_rollout("risk", "scoring", reason="demo run again")
        admin.deployments.update(
            "risk", "scoring", variants=variants, production=True, reason="demo run again"
        )
    _ok(
        f"deployment scoring: stable (v{champion}) answers everything; mirror (v{previous}) "
        "is a shadow: a copy of each request, answers logged, never returned"
    )
    steps = [
        {"weight": 20, "min_duration_s": 1, "min_requests": 20},
        {"weight": 100, "min_duration_s": 1, "min_requests": 20},
    ]
    admin.deployments.start_rollout(
        "risk",
        "scoring",
        {"name": "canary", "model": "credit-scorer", "version": previous},
        steps=steps,
        reason="demo: roll the challenger out",
    )
    _ok("rollout of canary started: 20% of stable's traffic, then 100%; each step held ≥1 s")
    shape = alice.models.version("risk", "credit-scorer@champion").inputs[0]["shape"]
    width = shape[1] if len(shape) == 2 and shape[1] > 0 else 5
    rng = np.random.default_rng(11)
    predict = f"{url}/api/v1/projects/risk/deployments/scoring/predict"
    token = {"authorization": alice._http.headers["authorization"]}
    seen_steps, sent = [1], 0
    deadline = time.monotonic() + 60
    status = admin.deployments.get_rollout("risk", "scoring")
    with httpx.Client(timeout=120) as http:
        while status.state == "running" and time.monotonic() < deadline:
            for _ in range(40):
                body = rng.normal(size=(1, width)).round(3).tolist()
                _check(http.post(predict, json=body, headers=token), "the rollout's /predict")
                sent += 1
            status = admin.deployments.get_rollout("risk", "scoring")
            if status.step != seen_steps[-1]:
                seen_steps.append(status.step)
    if status.state != "completed":
        raise GhafError(f"the demo's rollout did not complete: {status.state}: {status.outcome}")
    _ok(f"{sent} requests later the rollout completed through steps {seen_steps}:")
    print_rollout(status)
    final = admin.deployments.get("risk", "scoring")
    live = [f"{v['name']} {v['weight']:g}%" for v in final.spec["variants"] if not v["shadow"]]
    _ok(f"scoring is at revision {final.revision}, serving {', '.join(live)} (and the shadow)")
    deadline = time.monotonic() + 15
    logged: list[Any] = []
    while not logged and time.monotonic() < deadline:
        logged = admin.artifacts.list("risk", prefix="deployments/scoring/shadow/mirror/")
        time.sleep(0.25)
    metrics = admin.deployments.metrics("risk")
    mirrored = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ghaf_deployment_requests_total{")
        and 'deployment="scoring"' in line
        and 'shadow="true"' in line
    )
    _ok(
        f"the shadow answered {mirrored:.0f} copies; its log holds {len(logged)} Parquet "
        "file(s) in risk under deployments/scoring/shadow/mirror/ (encrypted, audited)"
    )
    _ok(
        "try: ghaf deploy rollout status scoring -p risk;  ghaf deploy metrics -p risk;  "
        "ghaf deploy history scoring -p risk"
    )


def _check(response: Any, what: str) -> None:
    if response.status_code != 200:
        raise GhafError(f"{what} answered {response.status_code}: {response.text[:300]}")


def _guess_passwords(url: str) -> tuple[int, int]:
    """Wrong passwords for a name until the server says 429; (wrong answers, Retry-After)."""
    name = f"guess-{new_id()[-6:]}"
    for attempt in range(50):
        try:
            Client.login(url, name, f"wrong-{attempt}")
        except Unauthenticated:
            continue
        except TooManyRequests as slowed:
            return attempt, slowed.retry_after
    raise GhafError("50 wrong passwords were never rate-limited")


def _finish(home: object) -> None:
    console.print(
        Panel(
            styled(
                "What you can open or query now:\n  • start the server:  ",
                (f"GHAF_HOME={home} .venv/bin/ghaf server", "bold"),
                "\n"
                "  • API docs:          http://127.0.0.1:8080/api/v1/docs  (OpenAPI: "
                "/api/v1/openapi.json)\n"
                "  • log in as admin:   .venv/bin/ghaf admin token, then ghaf login --url URL "
                "--token TOKEN\n"
                "  • read the trail:    ghaf audit ls --project risk;  ghaf audit verify\n"
                f"  • alice's password:  {DEMO_PASSWORD}",
            ),
            title="done",
            border_style="green",
        )
    )
