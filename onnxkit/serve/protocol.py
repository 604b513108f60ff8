"""The Open Inference Protocol (KServe V2) over JSON: decoding requests, encoding replies.

Tensors travel as {"name", "shape", "datatype", "data"}, with `data` the
row-major values (flat or nested). A requested output may ask for the
classification extension, {"name": "logits", "parameters": {"classification": K}},
which returns the K best classes per row as BYTES "score:index[:label]".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxkit.errors import OnnxkitError, suggest
from onnxkit.runtime import Model, Prediction, TensorSpec
from onnxkit.runtime.text import TEXT_INPUT, TEXT_SPEC, carries_tokenizer, text_feeds

PLATFORM = "onnxruntime_onnx"
MODEL_VERSION = "1"

_V2_BY_ORT = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16", "tensor(string)": "BYTES",
}  # fmt: skip
_V2_BY_KIND = {"b": "BOOL", "O": "BYTES", "U": "BYTES", "S": "BYTES"}


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class InferRequest:
    """A decoded infer request: checked session feeds and the outputs asked for."""

    feeds: dict[str, np.ndarray]
    outputs: list[str]
    classification: dict[str, int] = field(default_factory=dict)  # output name -> K
    id: str | None = None

    @property
    def rows(self) -> int:
        return len(next(iter(self.feeds.values())))


def v2_datatype(spec: TensorSpec) -> str:
    return _V2_BY_ORT.get(spec.type, spec.type)


def model_metadata(model: Model) -> dict[str, Any]:
    """The V2 model metadata reply; free dimensions are -1."""

    def tensors(specs: list[TensorSpec]) -> list[dict[str, Any]]:
        return [
            {
                "name": spec.name,
                "datatype": v2_datatype(spec),
                "shape": [d if isinstance(d, int) else -1 for d in spec.shape],
            }
            for spec in specs
        ]

    return {
        "name": model.name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": tensors(model.inputs + ([TEXT_SPEC] if carries_tokenizer(model) else [])),
        "outputs": tensors(model.outputs),
    }


def decode_request(body: bytes, model: Model) -> InferRequest:
    """Parse and check an infer request body against the model; RequestError(400) if bad."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"malformed JSON in the request body: {e}") from e
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise RequestError(400, 'the request body must be a JSON object with an "inputs" list')
    by_name = {spec.name: spec for spec in model.inputs}
    if carries_tokenizer(model):
        by_name.setdefault(TEXT_INPUT, TEXT_SPEC)
    values: dict[str, np.ndarray] = {}
    for tensor in payload["inputs"]:
        name, array = _decode_tensor(tensor, by_name, model.name)
        if name in values:
            raise RequestError(400, f"input {name!r} is given twice")
        values[name] = array
    try:
        if TEXT_INPUT in values and TEXT_INPUT not in {spec.name for spec in model.inputs}:
            if len(values) > 1:
                raise OnnxkitError(f"give either {TEXT_INPUT!r} or the token inputs, not both")
            values = text_feeds(model, values[TEXT_INPUT].reshape(-1).tolist())
        feeds = model.prepare(values)
    except OnnxkitError as e:
        raise RequestError(400, f"model {model.name!r}: {e}") from e
    outputs, classification = _requested_outputs(payload.get("outputs"), model)
    request_id = payload.get("id")
    return InferRequest(feeds, outputs, classification, None if request_id is None else str(request_id))


def encode_response(model: Model, request: InferRequest, outputs: dict[str, np.ndarray]) -> bytes:
    """The V2 infer reply as JSON bytes (non-finite floats are written as NaN/Infinity)."""
    tensors = []
    for name in request.outputs:
        if name in request.classification:
            array = _classify(model, outputs, request.classification[name])
        else:
            array = np.asarray(outputs[name])
        datatype = _V2_BY_KIND.get(array.dtype.kind) or _V2_BY_ORT[f"tensor({_ort_name(array)})"]
        data = array.reshape(-1).tolist()
        tensors.append({"name": name, "datatype": datatype, "shape": list(array.shape), "data": data})
    reply: dict[str, Any] = {"model_name": model.name, "model_version": MODEL_VERSION}
    if request.id is not None:
        reply["id"] = request.id
    reply["outputs"] = tensors
    return json.dumps(reply, separators=(",", ":")).encode()


def _decode_tensor(tensor: Any, by_name: dict[str, TensorSpec], model: str) -> tuple[str, np.ndarray]:
    if not isinstance(tensor, dict) or not {"name", "shape", "datatype", "data"} <= tensor.keys():
        raise RequestError(400, 'each input must be an object with "name", "shape", "datatype", "data"')
    name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
    if name not in by_name:
        raise RequestError(
            400,
            f"model {model!r} has no input {name!r}.{suggest(str(name), by_name)} Its inputs: {', '.join(by_name)}",
        )
    expected = v2_datatype(by_name[name])
    if datatype != expected:
        raise RequestError(400, f"input {name!r} of model {model!r} has datatype {expected}, got {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise RequestError(400, f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    try:
        array = np.asarray(tensor["data"], dtype=object if datatype == "BYTES" else None)
    except (ValueError, TypeError) as e:
        raise RequestError(400, f"input {name!r}: data is not a regular array of values ({e})") from e
    if array.size != math.prod(shape):
        raise RequestError(
            400, f"input {name!r}: shape {shape} holds {math.prod(shape)} values, but data has {array.size}"
        )
    return name, array.reshape(shape)


def _requested_outputs(requested: Any, model: Model) -> tuple[list[str], dict[str, int]]:
    names = [spec.name for spec in model.outputs]
    if requested is None:
        return names, {}
    if not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
        raise RequestError(400, '"outputs" must be a list of objects with a "name"')
    chosen, classification = [], {}
    for output in requested:
        name = output["name"]
        if name not in names:
            raise RequestError(400, f"model {model.name!r} has no output {name!r}.{suggest(str(name), names)}")
        k = (output.get("parameters") or {}).get("classification")
        if k is not None:
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise RequestError(400, f"output {name!r}: classification must be a positive integer")
            if name != names[0]:
                raise RequestError(400, f"classification is available for the first output, {names[0]!r}")
            classification[name] = k
        chosen.append(name)
    return chosen, classification


def _classify(model: Model, outputs: dict[str, np.ndarray], k: int) -> np.ndarray:
    prediction = Prediction(outputs, model.class_names, model.task)
    try:
        indices, scores = prediction.top_k_indices(k)
    except OnnxkitError as e:
        raise RequestError(400, f"model {model.name!r}: {e}") from e
    names = model.class_names
    return np.array(
        [
            [f"{s:g}:{i}" + (f":{names[i]}" if names else "") for i, s in zip(row_i, row_s, strict=True)]
            for row_i, row_s in zip(indices.tolist(), scores.tolist(), strict=True)
        ],
        dtype=object,
    ).reshape(len(indices), -1)


def _ort_name(array: np.ndarray) -> str:
    name = array.dtype.name
    return {"float32": "float", "float64": "double"}.get(name, name)
