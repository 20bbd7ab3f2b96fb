"""The registration check, done outside any database transaction: write the file to a
private folder, detect and inspect its format (refusing pickles unless the policy allows
them and the scan passes), settle the signature against the sample, then load and
predict in the checker's child process (and convert to ONNX when asked)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghaf.core.errors import InvalidInput, PermissionDenied
from ghaf.registry import formats, sandbox, tensors
from ghaf.registry.formats import Trust, UnsafeModel
from ghaf.registry.formats.pickle import SAFE_ALTERNATIVES


@dataclass
class Candidate:
    """A model file on its way in, and what the policy lets it do."""

    filename: str
    trust: Trust
    allow_pickle: bool
    can_trust: bool
    sample: dict[str, Any] | None = None  # wire form
    sample_npz: bytes | None = None  # from the run
    inputs: list[dict[str, Any]] | None = None
    outputs: list[dict[str, Any]] | None = None
    convert_onnx: bool = False


@dataclass
class Checked:
    format: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    sample_npz: bytes
    checks: dict[str, Any] = field(default_factory=dict)
    onnx: bytes | None = None


def safe_filename(name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name.replace("\\", "/")).name).lstrip(".")
    return base[:200] or "model"


def write_file(folder: Path, filename: str, pieces: Iterable[bytes]) -> Path:
    target = folder / safe_filename(filename)
    with target.open("wb") as out:
        for piece in pieces:
            out.write(piece)
    return target


def _sample(candidate: Candidate) -> dict[str, Any]:
    if candidate.sample is not None:
        return tensors.from_wire(candidate.sample)
    if candidate.sample_npz is not None:
        return tensors.from_npz(candidate.sample_npz)
    raise InvalidInput(
        "a sample input is required: registration predicts it to prove the model works "
        "(give sample=..., a few rows of real input)",
        field="sample",
    )


def _settle_inputs(
    candidate: Candidate, declared_by_file: list[dict[str, Any]] | None, sample: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    declared = candidate.inputs or declared_by_file
    if declared and len(declared) == 1 and len(sample) == 1:
        # One input: the sample takes the declared name (X, float_input, ...).
        sample = {declared[0]["name"]: next(iter(sample.values()))}
    if not declared:
        return tensors.infer(sample), sample
    problems = tensors.mismatches(declared, sample)
    if problems:
        source = "the declared signature" if candidate.inputs else "the model's own signature"
        raise InvalidInput(
            f"the sample does not match {source}: " + "; ".join(problems), field="sample"
        )
    return declared, sample


def refuse_pickle(candidate: Candidate) -> None:
    if not candidate.allow_pickle:
        raise UnsafeModel(
            f"{candidate.filename!r} is a pickle (or joblib/cloudpickle) file: loading one "
            "runs whatever code its author put in it, so ghaf refuses it. " + SAFE_ALTERNATIVES,
            field="path",
        )
    if not candidate.can_trust:
        raise PermissionDenied(
            "registering a pickle needs model:trust (the project's policy allows scanned "
            "pickles, but only for principals trusted to vouch for them)",
            permission="model:trust",
        )


def check(candidate: Candidate, pieces: Iterable[bytes], *, timeout_s: float) -> Checked:
    """Everything a version must pass before it is recorded; raises with the reason."""
    with tempfile.TemporaryDirectory(prefix="ghaf-model-") as folder:
        root = Path(folder)
        path = write_file(root, candidate.filename, pieces)
        fmt = formats.detect(path, filename=candidate.filename)
        if not fmt.safe:
            refuse_pickle(candidate)
        inspection = fmt.inspect(path, trust=candidate.trust)
        inputs, sample = _settle_inputs(candidate, inspection.inputs, _sample(candidate))
        if candidate.convert_onnx and not fmt.convertible:
            raise InvalidInput(
                f"{fmt.name} models cannot be converted to ONNX"
                + (" (it already is ONNX)" if fmt.name == "onnx" else ""),
                field="convert_onnx",
            )
        sample_npz = tensors.to_npz(sample)
        (root / "sample.npz").write_bytes(sample_npz)
        job = {
            "action": "check",
            "format": fmt.name,
            "model": str(path),
            "sample": str(root / "sample.npz"),
            "skops_types": list(candidate.trust.skops_types),
            "pickle_globals": list(candidate.trust.pickle_globals),
            "convert_to": str(root / "converted.onnx") if candidate.convert_onnx else None,
        }
        answer = sandbox.run(job, folder=root, timeout_s=timeout_s, what="load and predict")
        outputs = answer["outputs"]
        if candidate.outputs is not None:
            names = {o["name"] for o in outputs}
            missing = [o["name"] for o in candidate.outputs if o["name"] not in names]
            if missing:
                raise InvalidInput(
                    f"the model's outputs are {sorted(names)}; the declared output(s) "
                    f"{missing} do not exist",
                    field="outputs",
                )
            outputs = candidate.outputs
        checks: dict[str, Any] = {
            "load_ms": answer["load_ms"],
            "predict_ms": answer["predict_ms"],
            "sample_rows": answer["rows"],
            "format": inspection.details,
            "confinement": answer.get("confinement"),
        }
        onnx = None
        conversion = answer.get("conversion")
        if conversion is not None:
            if not conversion["equal"]:
                raise InvalidInput(
                    "the ONNX conversion does not reproduce the model on the sample "
                    f"(largest difference {conversion['max_abs_diff']}, tolerance "
                    f"rtol={conversion['rtol']}, atol={conversion['atol']}); refused",
                    field="convert_onnx",
                )
            onnx = (root / "converted.onnx").read_bytes()
            checks["conversion"] = conversion
        return Checked(fmt.name, inputs, outputs, sample_npz, checks, onnx)
