"""ONNX models, run by onnxruntime. Weights stored as external data must stay inside the
model's own folder: a path that climbs out of it (or is absolute) could read any file on
the server (the CVE class fixed in onnx 1.16/1.21)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from ghaf.core.errors import InvalidInput
from ghaf.registry.formats import (
    DEFAULT_LOAD,
    Arrays,
    Inspection,
    LoadOptions,
    ModelFormat,
    Trust,
    UnsafeModel,
)

# ONNX TensorProto element types to numpy names (the ones models use as inputs).
_ELEMENT_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "str",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}

# Inputs onnxruntime takes only in one float width: other floats are cast to it.
_FEED_TYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
}


def _outside(location: str) -> bool:
    for flavour in (PurePosixPath(location), PureWindowsPath(location)):
        if flavour.is_absolute() or flavour.drive or ".." in flavour.parts:
            return True
    return False


def _value_specs(values: Any) -> list[dict[str, Any]]:
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        specs.append(
            {
                "name": value.name,
                "dtype": _ELEMENT_TYPES.get(tensor.elem_type, str(tensor.elem_type)),
                "shape": shape,
            }
        )
    return specs


class OnnxFormat(ModelFormat):
    name = "onnx"

    def sniff(self, head: bytes, filename: str) -> bool:
        return filename.lower().endswith(".onnx")

    def inspect(self, path: Path, *, trust: Trust) -> Inspection:
        import onnx
        from onnx.external_data_helper import _get_all_tensors

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises several types for corrupt bytes
            raise InvalidInput(f"not a valid ONNX model: {exc}", field="path") from None
        for tensor in _get_all_tensors(model):
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if _outside(location):
                raise UnsafeModel(
                    f"ONNX tensor {tensor.name!r} reads external data from {location!r}, "
                    "outside the model's own folder; refused",
                    field="path",
                )
            raise InvalidInput(
                f"ONNX tensor {tensor.name!r} keeps its weights in a separate file "
                f"({location!r}); register a single-file model (onnx.save with "
                "save_as_external_data=False)",
                field="path",
            )
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise InvalidInput(f"ONNX model fails onnx.checker: {exc}", field="path") from None
        graph = model.graph
        initialisers = {init.name for init in graph.initializer}
        return Inspection(
            details={
                "ir_version": model.ir_version,
                "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
                "producer": f"{model.producer_name} {model.producer_version}".strip(),
            },
            inputs=_value_specs(i for i in graph.input if i.name not in initialisers),
            outputs=_value_specs(graph.output),
        )

    def load(self, path: Path, *, trust: Trust, options: LoadOptions = DEFAULT_LOAD) -> Any:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.threads
        return ort.InferenceSession(str(path), session_options, providers=list(options.providers))

    def predict(self, model: Any, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        return self.predictor(model)(inputs)

    def predictor(self, model: Any) -> Callable[[Mapping[str, np.ndarray[Any, Any]]], Arrays]:
        # The session's inputs and outputs are fixed once it is loaded: looked up once
        # here, not on every call (they are rebuilt from C++ objects each time they are
        # asked for, several microseconds against an 8 us call of a small model).
        specs = [(spec.name, _FEED_TYPES.get(spec.type)) for spec in model.get_inputs()]
        names = [o.name for o in model.get_outputs()]
        run = model.run

        def predict(inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
            feeds = {}
            for name, dtype in specs:
                if name in inputs:
                    value = inputs[name]
                elif len(inputs) == 1 and len(specs) == 1:
                    value = next(iter(inputs.values()))
                else:
                    raise InvalidInput(f"the model needs input {name!r}", field="sample")
                if dtype is not None:
                    value = value.astype(dtype, copy=False)
                feeds[name] = value
            results = run(names, feeds)
            return {
                name: np.asarray(result)
                for name, result in zip(names, results, strict=True)
                if isinstance(result, np.ndarray)
            }

        return predict
