"""What ``ghaf serve`` does before it listens: fetch the version, verify it, load it.

It reaches the platform through the SDK's ``client.models`` (handed in by the CLI, since
no domain imports the SDK): the version's metadata (format, SHA-256, signature), its
file (the SDK checks the SHA-256 while it downloads; :func:`load_model` checks the file
on disk again before loading it), and the project's registry policy for the skops types
it trusts. The same steps are what a deployment runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ghaf.core.errors import InvalidInput, PermissionDenied
from ghaf.core.names import validate_name
from ghaf.registry.formats import Trust
from ghaf.registry.schemas import PolicyOut, VersionOut
from ghaf.serving.auth import InvokeKey
from ghaf.serving.runtime import LoadedModel, RuntimeOptions, VersionInfo, load_model


class ModelSource(Protocol):
    """What serving needs of the registry's SDK resource (``client.models``)."""

    def version(self, project: str, name: str, version: int | str | None = None) -> VersionOut: ...

    def download(
        self,
        project: str,
        name: str,
        version: int | str | None = None,
        *,
        destination: str | Path = ".",
        onnx: bool = False,
    ) -> Path: ...

    def policy(self, project: str) -> PolicyOut: ...


def parse_ref(ref: str) -> tuple[str, str]:
    """``churn@champion`` -> (churn, @champion); ``churn:3`` -> (churn, 3);
    ``churn`` -> (churn, latest)."""
    name, at, alias = ref.partition("@")
    if at:
        version = f"@{alias}"
    else:
        name, colon, number = ref.partition(":")
        version = number if colon else "latest"
        if colon and not (number.isdigit() and int(number) >= 1):
            raise InvalidInput(
                f"{ref!r}: after ':' comes a version number (NAME:3); use NAME@ALIAS for an alias",
                field="model",
            )
    validate_name(name, field="model")
    if at and not alias:
        raise InvalidInput(f"{ref!r}: name the alias after '@'", field="model")
    return name, version


def version_info(found: VersionOut) -> VersionInfo:
    return VersionInfo(
        model=found.model,
        version=found.version,
        format=found.format,
        sha256=found.sha256,
        inputs=found.inputs,
        outputs=found.outputs,
        project=found.project,
        filename=found.filename,
    )


def _trust(source: ModelSource, project: str) -> Trust:
    """The skops types the project's policy trusts (none if the policy is not readable:
    then only skops' and ghaf's built-in safe types load)."""
    try:
        policy = source.policy(project).policy
    except PermissionDenied:
        return Trust()
    return Trust(skops_types=tuple(policy.get("trusted_types", ())))


def fetch(source: ModelSource, project: str, ref: str, directory: Path) -> tuple[VersionInfo, Path]:
    """The version ``ref`` names and its file, downloaded into ``directory``."""
    name, version = parse_ref(ref)
    found = source.version(project, name, version)
    path = source.download(project, found.model, found.version, destination=directory)
    return version_info(found), path


def prepare(
    source: ModelSource,
    project: str,
    ref: str,
    directory: Path,
    *,
    options: RuntimeOptions | None = None,
) -> LoadedModel:
    """Fetch ``ref`` from the platform and load it, refusing a file that does not match
    its registered SHA-256."""
    info, path = fetch(source, project, ref, directory)
    return load_model(path, info, options=options, trust=_trust(source, project))


def prepare_bundle(
    folder: Path,
    *,
    expected_sha256: str | None = None,
    options: RuntimeOptions | None = None,
) -> LoadedModel:
    """Load the bundle in ``folder`` with no platform: every file is checked against the
    manifest (and the model file against ``expected_sha256``, where given) before the
    registry's loader for its format reads it (ghaf/serving/bundle.py)."""
    from ghaf.serving import bundle

    found = bundle.open_bundle(folder, expected_sha256=expected_sha256)
    trust = bundle.trust(found, pinned=expected_sha256 is not None)
    return load_model(found.model_file, found.info, options=options, trust=trust)


def check_tls(cert: Path, key: Path) -> None:
    """Refuse, before listening, a certificate and key that cannot serve HTTPS (missing,
    not PEM, or not a pair), with one clear error instead of a failing handshake."""
    import ssl

    for path, what in ((cert, "--tls-cert"), (key, "--tls-key")):
        if not path.is_file():
            raise InvalidInput(f"{what} {path} is not a file", field=what.lstrip("-"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInput(
            f"--tls-cert {cert} and --tls-key {key} cannot serve HTTPS: they must be a PEM "
            f"certificate and its private key ({getattr(exc, 'reason', None) or exc})",
            field="tls_cert",
        ) from None


def invoke_key(key_file: Path | None, key: str | None) -> InvokeKey | None:
    """The server's invoke key: from ``key_file`` (``--invoke-key-file``), else the
    ``GHAF_SERVE_INVOKE_KEY`` setting; None when neither is given."""
    if key_file is not None and key:
        raise InvalidInput(
            "give the invoke key once: --invoke-key-file or GHAF_SERVE_INVOKE_KEY, not both",
            field="invoke_key",
        )
    if key_file is not None:
        return InvokeKey.from_file(key_file)
    if key:
        return InvokeKey(key, source="GHAF_SERVE_INVOKE_KEY")
    return None
