"""``ghaf serve NAME@ALIAS -p PROJECT``: a standalone inference server for one version.

It fetches the version from the platform with the stored login (or GHAF_URL and
GHAF_TOKEN), checks its SHA-256, loads it, and serves it under uvicorn over the Open
Inference Protocol v2 (``/v2/...``) and ``POST /predict``. Callers need a token holding
``deployment:invoke`` in the project, which this server checks with the platform and
remembers for ``--token-ttl`` seconds, or the server's own invoke key
(``--invoke-key-file``, ``GHAF_SERVE_INVOKE_KEY``). Every answered request goes to the
prediction log, stored in the project with the server's login (docs/serving.md,
docs/adr/0020). ``GHAF_SERVE_*`` settings give the defaults of the options.

``ghaf serve --bundle DIR --invoke-key-file KEY`` serves a bundle instead
(ghaf/serving/bundle.py) with no platform: every file checked against its manifest, and
only the invoke key accepted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ghaf.console.output import fail, reporting_errors, with_client

if TYPE_CHECKING:
    from ghaf.serving.app import ServingOptions
    from ghaf.serving.auth import InvokeKey
    from ghaf.serving.runtime import LoadedModel, RuntimeOptions

DEFAULT_PORT = 8080


def serve(
    ref: Annotated[
        str | None,
        typer.Argument(help="NAME@ALIAS, NAME:VERSION, or NAME (its latest version)."),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            "--project", "-p", envvar="GHAF_PROJECT", help="Project name (a bundle names its own)."
        ),
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            metavar="DIR",
            help="Serve a bundle (ghaf models download --bundle) with no platform: every "
            "file is checked against its manifest; needs --invoke-key-file.",
        ),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option(
            "--sha256",
            help="With --bundle: the SHA-256 the model file must have (as `ghaf models show` "
            "prints it), so that a rewritten manifest is caught too.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = (
        DEFAULT_PORT
    ),
    device: Annotated[
        str, typer.Option(help="cpu, or gpu (the CUDA execution provider; ONNX models).")
    ] = "cpu",
    allow_cpu_fallback: Annotated[
        bool, typer.Option(help="With --device gpu: run on the CPU when no GPU can (logged).")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Model threads (default: this process's cores).")
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Most rows merged into one model call.")
    ] = 64,
    max_latency_ms: Annotated[
        float, typer.Option(min=0, help="Longest a batch waits to fill under load.")
    ] = 2.0,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Requests that may wait; more are answered 429.")
    ] = 1024,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body.")] = 32.0,
    token_ttl: Annotated[
        float, typer.Option(min=0, help="Seconds a token's check with the platform is reused.")
    ] = 10.0,
    tls_cert: Annotated[
        Path | None, typer.Option(help="TLS certificate file (PEM) [GHAF_SERVE_TLS_CERT].")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="TLS private key file (PEM) [GHAF_SERVE_TLS_KEY].")
    ] = None,
    invoke_key_file: Annotated[
        Path | None,
        typer.Option(
            help="File (0600) with this server's invoke key, accepted as a bearer token "
            "without asking the platform [GHAF_SERVE_INVOKE_KEY_FILE; or the key itself in "
            "GHAF_SERVE_INVOKE_KEY]."
        ),
    ] = None,
    prediction_log: Annotated[
        bool | None,
        typer.Option(
            "--prediction-log/--no-prediction-log",
            help="Store every answered request in the project's prediction log "
            "[GHAF_SERVE_PREDICTION_LOG, on].",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[str, typer.Option(envvar="GHAF_LOG_FORMAT", help="text or json.")] = (
        "text"
    ),
) -> None:
    """Serve a registered model version over OIP v2 and /predict until stopped.

    With --bundle DIR, serve a bundle (ghaf models download --bundle) with no platform.
    """
    if bundle is not None and ref is not None:
        fail("give NAME@ALIAS or --bundle DIR, not both")
    if bundle is None and sha256 is not None:
        fail("--sha256 pins a bundle's model file; it goes with --bundle")
    from ghaf.core.settings import load_settings

    with reporting_errors():
        settings = load_settings()
    tls_cert = tls_cert or settings.serve_tls_cert
    tls_key = tls_key or settings.serve_tls_key
    if (tls_cert is None) != (tls_key is None):
        fail("give both --tls-cert and --tls-key, or neither")
    if device not in ("cpu", "gpu"):
        fail(f"--device is cpu or gpu, not {device!r}")
    # Imported here: ``ghaf --help`` and the platform's manifests need none of it.
    import uvicorn

    from ghaf.core.logging import configure_logging
    from ghaf.serving.app import ServingOptions, create_serving_app
    from ghaf.serving.auth import Authorizer, KeyAuthorizer, RemoteAuthorizer
    from ghaf.serving.batching import BatchingOptions
    from ghaf.serving.predlog import ClientSink, PredictionLog, PredictionLogOptions
    from ghaf.serving.runtime import RuntimeOptions
    from ghaf.serving.standalone import check_tls, invoke_key

    configure_logging(fmt=log_format, level="info")
    with reporting_errors():
        runtime = RuntimeOptions(
            device="gpu" if device == "gpu" else "cpu",
            allow_cpu_fallback=allow_cpu_fallback,
            threads=threads,
        )
        options = ServingOptions(
            batching=BatchingOptions(
                max_batch_size=max_batch_size, max_latency_ms=max_latency_ms, max_queue=max_queue
            ),
            max_body_bytes=int(max_body_mb * 1024 * 1024),
        )
        if tls_cert is not None and tls_key is not None:
            check_tls(tls_cert, tls_key)
        secret = settings.serve_invoke_key
        key = invoke_key(
            invoke_key_file or settings.serve_invoke_key_file,
            secret.get_secret_value() if secret else None,
        )
        log_on = settings.serve_prediction_log if prediction_log is None else prediction_log
        log_options = PredictionLogOptions(
            queue_size=settings.serve_prediction_log_queue,
            rotate_bytes=settings.serve_prediction_log_rotate_bytes,
            rotate_s=settings.serve_prediction_log_rotate_s,
        )

    def listen(app: Any) -> None:
        import gc

        from ghaf.serving.wire import protocol_for

        # What is loaded by now (ghaf, its libraries, the models) lives as long as the
        # process: frozen, the collector's full passes skip it. Each one stopped the
        # event loop for 50-80 ms under load, a p99 of 50-70 ms (ADR 0022).
        gc.collect()
        gc.freeze()
        uvicorn.run(
            app,
            # Prediction requests answered off the connection, without ASGI (wire.py),
            # and slow clients cut off as the platform's server does.
            http=protocol_for(
                app,
                header_timeout_s=settings.header_timeout_s,
                max_header_bytes=settings.max_header_bytes,
                body_timeout_s=settings.body_timeout_s,
                body_min_rate=settings.body_min_rate,
            )
            or "auto",
            timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
            h11_max_incomplete_event_size=settings.max_header_bytes,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            server_header=False,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            timeout_graceful_shutdown=10,
        )

    if bundle is not None:
        listen(_bundle_app(bundle, sha256, key, prediction_log, runtime, options))
        return
    if ref is None:
        fail("name a model (NAME@ALIAS, NAME:VERSION) or give --bundle DIR")
    if project is None:
        fail("give the project: -p PROJECT (or GHAF_PROJECT)")

    def run(client: Any) -> None:
        # The whole server runs inside the login: the prediction log stores its files
        # with it until the server stops.
        with tempfile.TemporaryDirectory(prefix="ghaf-serve-") as folder:
            # The loader reads the file into memory; the folder goes once it is loaded.
            loaded = _prepare(client, project, ref, Path(folder), runtime)
        authorizer: Authorizer = RemoteAuthorizer(
            str(client.url), project, loaded.name, ttl_s=token_ttl
        )
        if key is not None:
            authorizer = KeyAuthorizer(key, project, authorizer)
        log = PredictionLog(ClientSink(client.artifacts), log_options) if log_on else None
        listen(
            create_serving_app([loaded], authorizer=authorizer, options=options, prediction_log=log)
        )

    with_client(run)


def _prepare(
    client: Any, project: str, ref: str, folder: Path, runtime: RuntimeOptions
) -> LoadedModel:
    from ghaf.serving.standalone import prepare

    return prepare(client.models, project, ref, folder, options=runtime)


def _bundle_app(
    folder: Path,
    sha256: str | None,
    key: InvokeKey | None,
    prediction_log: bool | None,
    runtime: RuntimeOptions,
    options: ServingOptions,
) -> Any:
    """The serving app of a bundle: no platform to ask about tokens or to store the
    prediction log in, so only the server's invoke key is accepted. Its project is the
    one the bundle names (``-p`` is not asked for)."""
    import logging

    from ghaf.serving.app import create_serving_app
    from ghaf.serving.auth import KeyAuthorizer
    from ghaf.serving.standalone import prepare_bundle

    if key is None:
        fail(
            "a bundle is served with no platform to check tokens with: give "
            "--invoke-key-file (or GHAF_SERVE_INVOKE_KEY) with this server's invoke key"
        )
    if prediction_log:
        fail("the prediction log is stored on the platform; a bundle is served without one")
    with reporting_errors():
        loaded = prepare_bundle(folder, expected_sha256=sha256, options=runtime)
    logging.getLogger("ghaf.serving").info(
        "serving bundle %s with its invoke key only; no prediction log (no platform)", folder
    )
    return create_serving_app(
        [loaded],
        authorizer=KeyAuthorizer(key, loaded.info.project or ""),
        options=options,
        prediction_log=None,
    )
