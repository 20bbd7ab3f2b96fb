"""The models a serving app holds, each with its batcher, and what every route shares:
reading a bounded JSON body and answering errors as ``{"error": "..."}``."""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from ghaf.core.errors import GhafError, InvalidInput, NotFound
from ghaf.serving.batching import Batcher, BatchingOptions
from ghaf.serving.calls import Answer, Call, too_large
from ghaf.serving.predlog import EXCHANGE
from ghaf.serving.runtime import LoadedModel
from ghaf.serving.schemas import ModelMetadata, TensorMetadata
from ghaf.serving.tensors import InputSpec, finite, signature_datatype

log = logging.getLogger("ghaf.serving")
Array = np.ndarray[Any, Any]


class ModelFailed(GhafError):
    """The model raised on input that passed every check: a fault of the model or of
    ghaf, logged with its traceback; the caller gets its type only."""

    status = 500
    code = "model-failed"
    title = "Model failed"


class ServedModel:
    """A loaded version and the batcher its requests go through."""

    def __init__(self, loaded: LoadedModel, batching: BatchingOptions | None = None) -> None:
        self.loaded = loaded
        self.batcher = Batcher(loaded.predict, batching or BatchingOptions(), name=loaded.name)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def signature(self) -> list[InputSpec]:
        return self.loaded.signature

    async def predict(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """The model's outputs for checked ``inputs``, through the batcher."""
        try:
            outputs = await self.batcher.predict(inputs)
        except GhafError:
            raise
        except (ValueError, TypeError) as exc:
            # Values that fit the signature and still do not suit the model (an unseen
            # category, a value out of a transformer's range): the caller's to fix.
            raise InvalidInput(f"the model could not run on this input: {exc}") from None
        except Exception as exc:
            log.exception("model %s v%s failed", self.name, self.version)
            raise ModelFailed(
                f"model {self.name!r} failed on this request ({type(exc).__name__}); "
                "see the server log"
            ) from None
        exchange = EXCHANGE.get()
        if exchange is not None:  # for the prediction log (ghaf/serving/metrics.py)
            exchange.inputs, exchange.outputs = inputs, outputs
        return outputs

    def metadata(self) -> ModelMetadata:
        outputs = [
            TensorMetadata(
                name=str(spec["name"]),
                datatype=signature_datatype(str(spec.get("dtype", ""))) or "BYTES",
                shape=[-1 if d is None else int(d) for d in spec.get("shape", [])],
            )
            for spec in self.loaded.info.outputs
        ]
        return ModelMetadata(
            name=self.name,
            versions=[self.version],
            platform=self.loaded.platform,
            inputs=[TensorMetadata(**spec.metadata()) for spec in self.signature],
            outputs=outputs,
            parameters={"device": self.loaded.device, "threads": self.loaded.threads},
        )


class ModelTable:
    """The served models by name and version."""

    def __init__(self, models: Sequence[ServedModel]) -> None:
        if not models:
            raise InvalidInput("a serving app needs at least one model")
        self._by_name: dict[str, dict[str, ServedModel]] = {}
        for model in models:
            self._by_name.setdefault(model.name, {})[model.version] = model
        self.default = models[0]

    def __iter__(self) -> Any:
        for versions in self._by_name.values():
            yield from versions.values()

    def get(self, name: str, version: str | None = None) -> ServedModel:
        versions = self._by_name.get(name)
        if versions is None:
            raise NotFound(
                f"no model {name!r} is served here; served: {', '.join(sorted(self._by_name))}",
                field="model",
            )
        found = versions[max(versions, key=int)] if version is None else versions.get(version)
        if found is None:
            raise NotFound(
                f"model {name!r} has no version {version!r} served here; served: "
                f"{', '.join(sorted(versions, key=int))}",
                field="version",
            )
        exchange = EXCHANGE.get()
        if exchange is not None:  # the request's model, for its metrics and log
            exchange.model = found
        return found

    def versions(self, name: str) -> list[str]:
        self.get(name)
        return sorted(self._by_name[name], key=int)

    def start(self) -> None:
        for model in self:
            model.batcher.start()

    async def stop(self) -> None:
        for model in self:
            await model.batcher.stop()


# --- requests and errors ----------------------------------------------------------------


async def read_body(call: Call, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes (declared, sent or, for a body sent
    with ``Content-Encoding: gzip`` or ``deflate``, decompressed: no zip bombs)."""
    body = await call.body(limit)
    encoding = call.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity") or not body:
        return body
    if encoding not in _DECODERS:
        raise InvalidInput(
            f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none",
            field="content-encoding",
        )
    decoder = zlib.decompressobj(_DECODERS[encoding])
    try:
        plain = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(
            f"the body is not valid {encoding} data: {exc}", field="content-encoding"
        ) from None
    if len(plain) > limit:
        raise too_large(limit)
    if not decoder.eof:
        raise InvalidInput(f"the {encoding} body is truncated", field="content-encoding")
    return plain


# zlib's window bits: 16 + MAX_WBITS reads a gzip header, MAX_WBITS a zlib one (what
# HTTP's "deflate" means in practice, and what tritonclient sends).
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def parse_json(body: bytes) -> Any:
    """``body`` as JSON, or ``InvalidInput`` saying why not."""
    if not body:
        raise InvalidInput("the request has no body; send JSON")
    try:
        # orjson is ten times faster on the hot path (docs/adr/0021); what it refuses
        # (NaN and Infinity, lone surrogates, integers past 64 bits) the standard
        # parser reads or refuses as before, so the answer is the same either way.
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise InvalidInput("the body is not UTF-8 text") from None
    except ValueError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # what orjson refused as too deep (past 1,024 levels)
        raise InvalidInput("the body is not valid JSON: it is nested too deeply") from None


def json_answer(document: Any, status: int = 200, *, finite: bool = False) -> Response:
    """``document`` as a JSON response (see :func:`json_reply` for ``finite``)."""
    return json_reply(document, status, finite=finite).response()


def json_reply(document: Any, status: int = 200, *, finite: bool = False) -> Answer:
    """``document`` as a JSON answer. ``finite``: the caller knows it holds no NaN or
    infinite float, so orjson may write it (ten times faster than ``json.dumps`` on an
    answer, docs/adr/0021-serving-hot-path.md); orjson would write NaN as ``null``, so
    anything else keeps ``json.dumps``, which writes the ``NaN`` most clients read."""
    return Answer(status, dump_json(document, finite=finite))


def dump_json(document: Any, *, finite: bool = False) -> bytes:
    """``document`` as JSON bytes (see :func:`json_reply` for ``finite``)."""
    if finite:
        try:
            return orjson.dumps(document)
        except TypeError:  # what orjson does not write (an integer past 64 bits)
            pass
    return json.dumps(document).encode()


def all_finite(arrays: Iterable[Array]) -> bool:
    """Whether no array among ``arrays`` holds NaN or infinity."""
    return all(finite(array) for array in arrays)


def error_answer(error: GhafError) -> Response:
    """:func:`error_reply` as a response (the app's exception handlers)."""
    return error_reply(error).response()


def error_reply(error: GhafError) -> Answer:
    """``{"error": "..."}``: bad input is 400 (as OIP says), the rest keep their status."""
    status = 400 if isinstance(error, InvalidInput) else error.status
    answer = json_reply({"error": error.detail}, status)
    if status == 401:
        answer.headers.append((b"www-authenticate", b"Bearer"))
    if status == 429:
        answer.headers.append((b"retry-after", str(error.extra.get("retry_after", 1)).encode()))
    return answer
