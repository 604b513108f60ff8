"""The Open Inference Protocol (KServe V2): checking infer requests, encoding replies.

Over HTTP, a tensor travels as JSON {"name", "shape", "datatype", "data"}, with `data`
the row-major values (flat or nested), or with the binary tensor data extension
(`onnxkit.serve.binary`): `"parameters": {"binary_data_size": N}` and its raw bytes after
the JSON header. A requested output may ask for raw bytes back (`"binary_data": true`, or
`"binary_data_output": true` in the request's parameters for every output) and for the
classification extension, {"classification": K}, which returns the K best classes per
row as BYTES "score:index[:label]". gRPC (`onnxkit.serve.grpc_service`) builds the same
`InferRequest` from its messages with `check_input` and `build_request`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxkit import __version__
from onnxkit.errors import OnnxkitError, suggest
from onnxkit.runtime import Model, TensorSpec
from onnxkit.runtime.signature import prepare_inputs
from onnxkit.runtime.text import TEXT_INPUT, TEXT_SPEC, carries_tokenizer, text_feeds
from onnxkit.serve import binary, jsonio
from onnxkit.serve.errors import RequestError

__all__ = ["RequestError"]  # re-exported: the batcher and the app raise it from here

SERVER_NAME = "onnxkit"
PLATFORM = "onnxruntime_onnx"
MODEL_VERSION = "1"
EXTENSIONS = ["classification", "binary_tensor_data", "model_repository", "statistics"]
# Triton's extensions this server leaves out, by how their HTTP endpoints (/v2/<key>...) and gRPC methods (named
# <Key>...) begin: tritonclient calls them by name, and is told which is unsupported
UNSUPPORTED_EXTENSIONS = {"systemsharedmemory": "system shared memory", "cudasharedmemory": "CUDA shared memory",
                          "trace": "tracing", "log": "logging control"}


def unsupported_extension(name: str) -> str | None:
    """What `name` (an endpoint's path after /v2/, or a gRPC method's name) asks of an extension this server
    leaves out ('system shared memory'), else None."""
    lowered = name.lower()
    return next((what for key, what in UNSUPPORTED_EXTENSIONS.items() if lowered.startswith(key)), None)
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_TEXTS = 8192  # texts a request may carry: the tokenizer keeps ~1 KB a text, even an empty one (413 past it)

_V2_BY_ORT = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16", "tensor(string)": "BYTES",
}  # fmt: skip
# scikit-learn classifiers' {class: probability} per row (skl2onnx's ZipMap), served as [rows, classes] FP32
_MAPS = frozenset({"seq(map(int64,tensor(float)))", "seq(map(string,tensor(float)))"})
_FLOATS = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_V2_BY_KIND = {"b": "BOOL", "O": "BYTES", "U": "BYTES", "S": "BYTES"}
_V2_BY_DTYPE = {dtype: name for name, dtype in binary.NUMPY_BY_V2.items()}
_NO_HEADER_LENGTH = (f"the request has no {HEADER_LENGTH} header: send it with the JSON's length in bytes, the "
                     "binary tensors following the JSON")
_INPUT_FIELDS = 'each input must be an object with "name", "shape", "datatype", "data" (or binary_data_size)'


@dataclass
class InferRequest:
    """A decoded infer request: checked session feeds and the outputs asked for."""

    feeds: dict[str, np.ndarray]
    outputs: list[str]
    classification: dict[str, int] = field(default_factory=dict)  # output name -> K
    id: str | None = None
    binary: set[str] = field(default_factory=set)  # outputs to send as raw bytes (HTTP)

    @property
    def rows(self) -> int:
        return len(next(iter(self.feeds.values())))


def v2_datatype(spec: TensorSpec) -> str:
    """The V2 datatype; a sequence of tensors (served stacked) has its tensors' own."""
    if spec.type in _MAPS:
        return "FP32"
    element = spec.type[len("seq("):-1] if spec.type.startswith("seq(") else spec.type
    return _V2_BY_ORT.get(element, spec.type)


def v2_shape(spec: TensorSpec) -> list[int]:
    """The tensor's shape as V2 gives it: free dimensions -1 (a sequence of tensors: [-1], its count)."""
    if spec.type in _MAPS:
        return [-1, -1]
    return [-1] if spec.type.startswith("seq(") else [d if isinstance(d, int) else -1 for d in spec.shape]


def server_metadata() -> dict[str, Any]:
    """The V2 server metadata reply."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}


def model_metadata(model: Model) -> dict[str, Any]:
    """The V2 model metadata reply; free dimensions are -1."""

    def tensors(specs: list[TensorSpec]) -> list[dict[str, Any]]:
        return [
            {
                "name": spec.name,
                "datatype": v2_datatype(spec),
                "shape": v2_shape(spec),
            }
            for spec in specs
        ]

    return {
        "name": model.name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": tensors(list(input_specs(model).values())),
        "outputs": tensors(model.outputs),
    }


def model_config(model: Model, max_batch_size: int, max_delay_s: float) -> dict[str, Any]:
    """The model's configuration in Triton's form (what tritonclient's `get_model_config` reads).

    When the batcher merges the model's requests (each output row its own input row's: `Model.rows_out`), the
    first dim is the batch dim: `max_batch_size` is the batcher's, dims leave it out and `dynamic_batching` gives
    the batcher's wait; otherwise `max_batch_size` is 0 and dims are whole. Free dims are -1. A tensor of one value
    a row ([batch]: the texts) is dims [1] with `reshape` [] (Triton's ONNX backend's form: a client sends the
    [rows, 1] that the config says, which `configured_shapes` takes).
    """
    inputs, outputs = list(input_specs(model).values()), model.outputs
    batched = _batched(model)

    def tensors(specs: list[TensorSpec]) -> list[dict[str, Any]]:
        configs = []
        for spec in specs:
            dims = v2_shape(spec)[1 if batched else 0 :]
            config: dict[str, Any] = {"name": spec.name, "data_type": _config_type(v2_datatype(spec)), "dims": dims}
            if batched and not dims:
                config.update(dims=[1], reshape={"shape": []})
            configs.append(config)
        return configs

    config: dict[str, Any] = {
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": max_batch_size if batched else 0,
        "input": tensors(inputs),
        "output": tensors(outputs),
    }
    if batched:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": round(max_delay_s * 1e6)}
    return config


def _batched(model: Model) -> bool:
    """Whether the model's config has a batch dim (`model_config`)."""
    specs = (*input_specs(model).values(), *model.outputs)
    return bool(model.rows_out) and all(v2_shape(spec)[:1] == [-1] for spec in specs)


def configured_shapes(model: Model, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`values` with each input of one value a row given as its config says, [rows, 1] (dims [1] reshaped to [],
    `model_config`), as the model's [rows]."""
    specs = input_specs(model)
    one_a_row = {name for name, value in values.items() if value.ndim == 2 and value.shape[1] == 1 and
                 name in specs and len(v2_shape(specs[name])) == 1}
    if not one_a_row or not _batched(model):
        return values
    return {name: value.reshape(len(value)) if name in one_a_row else value for name, value in values.items()}


def _config_type(datatype: str) -> str:
    """Triton's config name for a V2 datatype; TYPE_INVALID for a type V2 has none for (a sequence of tensors),
    which gRPC's ModelConfig could not hold (a 500)."""
    if datatype == "BYTES":
        return "TYPE_STRING"
    return f"TYPE_{datatype}" if datatype in _V2_BY_ORT.values() else "TYPE_INVALID"


def input_specs(model: Model) -> dict[str, TensorSpec]:
    """The inputs a request may give, by name: the model's, plus "text" if it carries a tokenizer."""
    specs = {spec.name: spec for spec in model.inputs}
    if carries_tokenizer(model):
        specs.setdefault(TEXT_INPUT, TEXT_SPEC)
    return specs


def check_input(
    name: Any, datatype: Any, shape: Any, specs: Mapping[str, TensorSpec], model: str, given: list[tuple[str, Any]]
) -> None:
    """RequestError(400) unless `name` is an input of the model not among the (name, value) pairs `given` before it
    (checked as each comes: 300,000 copies of one input took 2.6 s to decode before), with its datatype and a valid
    shape."""
    if not isinstance(name, str) or name not in specs:
        raise RequestError(
            400, f"model {model!r} has no input {name!r}.{suggest(str(name), specs)} Its inputs: {', '.join(specs)}"
        )
    if any(name == before for before, _ in given):
        raise RequestError(400, f"input {name!r} is given twice")
    expected = v2_datatype(specs[name])
    if datatype != expected:
        raise RequestError(400, f"input {name!r} of model {model!r} has datatype {expected}, got {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestError(400, f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if specs[name] is TEXT_SPEC and math.prod(shape) > MAX_TEXTS:  # from the shape, before the texts are read
        raise _too_many_texts(model, math.prod(shape))


def _too_many_texts(model: str, count: int) -> RequestError:
    return RequestError(413, f"model {model!r}: a request takes at most {MAX_TEXTS} texts, this one has {count}; "
                             "send them in several requests")  # fmt: skip


def build_request(
    model: Model,
    inputs: list[tuple[str, np.ndarray]],
    requested: list[tuple[Any, Mapping[str, Any]]] | None = None,
    *,
    binary_outputs: bool = False,
    request_id: Any = None,
) -> InferRequest:
    """An `InferRequest` from input arrays (`check_input`ed) and the outputs asked for as (name, parameters)."""
    values = configured_shapes(model, dict(inputs))
    for spec in model.inputs:
        if spec.type == "tensor(string)" and spec.name in values:
            values[spec.name] = _text(values[spec.name], spec.name)
    try:
        if TEXT_INPUT in values and TEXT_INPUT not in {spec.name for spec in model.inputs}:
            if len(values) > 1:
                raise OnnxkitError(f"give either {TEXT_INPUT!r} or the token inputs, not both")
            if values[TEXT_INPUT].ndim != 1:  # one row of outputs per text
                shape = list(values[TEXT_INPUT].shape)
                raise OnnxkitError(f"input {TEXT_INPUT!r} must have shape [texts], one text a row, got {shape}")
            if len(values[TEXT_INPUT]) > MAX_TEXTS:  # each costs the tokenizer ~1 KB, however short
                raise _too_many_texts(model.name, len(values[TEXT_INPUT]))
            values = text_feeds(model, values[TEXT_INPUT].tolist())
        # the model's own shapes, not Model.prepare's: that lets a fixed batch size (x [1, 4]) take any number of
        # rows, which `predict` runs in batches of that size, but the server runs a request as one session run
        feeds = prepare_inputs(model.inputs, values)
        model.value_checks.check(feeds)  # a token id past the vocabulary, a mask of 2
    except UnicodeDecodeError as e:
        raise RequestError(400, f"input {TEXT_INPUT!r}: text must be UTF-8 ({e})") from e
    except OnnxkitError as e:
        raise RequestError(400, f"model {model.name!r}: {e}") from e
    outputs, classification, raw = _requested_outputs(requested, model, binary_outputs)
    return InferRequest(feeds, outputs, classification, None if request_id is None else str(request_id), raw)


def _text(array: np.ndarray, name: str) -> np.ndarray:
    """A BYTES tensor for a string input with its bytes as UTF-8 text: onnxruntime would feed
    a bytes value's repr ("b'hi'") to the model."""
    if array.dtype != object or not any(isinstance(v, bytes) for v in array.flat):
        return array
    try:
        return np.array([v.decode() if isinstance(v, bytes) else v for v in array.flat], dtype=object).reshape(
            array.shape
        )
    except UnicodeDecodeError as e:
        raise RequestError(400, f"input {name!r}: BYTES values for a string input must be UTF-8 text ({e})") from None


def decode_request(body: bytes, model: Model, header_length: str | None = None) -> InferRequest:
    """Parse and check an infer request body against the model; RequestError(400) if bad.

    `header_length` is the request's Inference-Header-Content-Length header: the body is
    then that many bytes of JSON followed by the raw input tensors.
    """
    header, raw = _split_body(body, header_length)
    try:
        payload = jsonio.parse(header)
    except ValueError as e:
        hint = f"; {_NO_HEADER_LENGTH}" if header_length is None and b'"binary_data_size"' in body else ""
        raise RequestError(400, f"malformed JSON in the request body: {e}{hint}") from None
    suspect = _may_hide_other_kinds(header, payload)
    if not raw and (plain := _plain_request(payload, model, suspect)) is not None:
        return plain
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise RequestError(400, _not_v2(payload, model))
    specs = input_specs(model)
    inputs, offset = [], 0
    for tensor in payload["inputs"]:
        if not isinstance(tensor, dict) or not {"name", "shape", "datatype"} <= tensor.keys():
            raise RequestError(400, _INPUT_FIELDS)
        name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
        check_input(name, datatype, shape, specs, model.name, inputs)
        size = _parameters(tensor, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise RequestError(400, f"input {name!r}: binary_data_size must be a whole number of bytes, "
                                        f"got {size!r}")
            if tensor.get("data") is not None:  # the binary values were taken, these dropped without a word
                raise RequestError(400, f"input {name!r}: give its values in \"data\" or as binary data "
                                        "(binary_data_size), not both")
            if header_length is None:  # was "... does not fit the 0 bytes left after the <header> ...", unsent
                raise RequestError(400, f"input {name!r} has a binary_data_size, but {_NO_HEADER_LENGTH}")
            if offset + size > len(raw):
                raise RequestError(
                    400,
                    f"input {name!r}: binary_data_size {size!r} does not fit the {len(raw) - offset} bytes "
                    f"left after the {HEADER_LENGTH} ({len(header)}) bytes of JSON",
                )
            inputs.append((name, binary.to_array(raw[offset : offset + size], datatype, shape, name)))
            offset += size
        elif "data" in tensor:
            inputs.append((name, array_from_values(tensor["data"], datatype, shape, name)))
            if suspect:
                refuse_other_kinds(tensor["data"], datatype, name)
        else:
            raise RequestError(400, _INPUT_FIELDS)
    if offset != len(raw):
        raise RequestError(400, f"{len(raw) - offset} bytes after the binary inputs belong to no input")
    requested = payload.get("outputs")
    if requested is not None:
        if not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
            raise RequestError(400, '"outputs" must be a list of objects with a "name"')
        requested = [(o["name"], _parameters(o, f"output {o['name']!r}")) for o in requested]
    parameters = _parameters(payload, "the request")
    refuse_sequences(parameters)
    binary_outputs = parameters.get("binary_data_output", False)
    if not isinstance(binary_outputs, bool):
        raise RequestError(400, "binary_data_output must be true or false")
    request_id = payload.get("id")
    if isinstance(request_id, float) and request_id.is_integer():
        request_id = int(request_id)  # 7.0 echoes as "7"
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | None):
        shown = request_id if isinstance(request_id, int | float) else type(request_id).__name__
        raise RequestError(400, f'"id" must be a string (or a whole number), got {shown}')
    if isinstance(request_id, int) and abs(request_id) >= 2**53:  # read as a float: it came back changed
        raise RequestError(400, '"id" is a number past 2**53, which JSON numbers do not keep exactly; send it as '
                                'a string')
    return build_request(model, inputs, requested, binary_outputs=binary_outputs, request_id=request_id)


@dataclass(frozen=True)
class _PlainInput:
    """A model's one numeric input, as a plain request must give it."""

    name: str
    datatype: str
    dtype: np.dtype
    dims: tuple[int | None, ...]  # fixed sizes; None for a free dimension
    outputs: tuple[str, ...]


_plain_inputs: weakref.WeakKeyDictionary[Model, _PlainInput | None] = weakref.WeakKeyDictionary()


def _plain_input(model: Model) -> _PlainInput | None:
    """The model's input if the short path can take it: one input, numeric, no free dimension named twice, no
    values to check (token ids, `Model.value_checks`)."""
    plain = _plain_inputs.get(model, False)
    if plain is not False:
        return plain
    plain = None
    if len(model.inputs) == 1 and not model.value_checks:
        spec = model.inputs[0]
        named = [d for d in spec.shape if isinstance(d, str)]
        if spec.dtype is not None and spec.dtype.kind in "iuf" and len(set(named)) == len(named):
            dims = tuple(d if isinstance(d, int) else None for d in spec.shape)
            outputs = tuple(s.name for s in model.outputs)
            plain = _PlainInput(spec.name, v2_datatype(spec), spec.dtype, dims, outputs)
    _plain_inputs[model] = plain
    return plain


def _not_v2(payload: Any, model: Model) -> str:
    """What is wrong with a body that has no "inputs" list, with the V2 body this model takes: a KServe v1 or TF
    Serving client's {"instances": [...]} (or {"inputs": {...}}) was told only that "inputs" must be a list."""
    if isinstance(payload, dict) and ("instances" in payload or isinstance(payload.get("inputs"), dict)):
        what = '"instances" is' if "instances" in payload else '"inputs" as an object is'
        return f"{what} KServe v1 / TF Serving's format; this server speaks V2, send {v2_example(model)}"
    return f'the request body must be a JSON object with an "inputs" list: {v2_example(model)}'


def v2_example(model: Model) -> str:
    """A one-row V2 request body for `model`, its values elided: the text alone for a model that takes text."""
    specs = input_specs(model)
    tensors = []
    for spec in [TEXT_SPEC] if TEXT_INPUT in specs and specs[TEXT_INPUT] is TEXT_SPEC else model.inputs:
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        count, kind = math.prod(shape), "text" if v2_datatype(spec) == "BYTES" else "value"
        tensors.append(f'{{"name": "{spec.name}", "shape": {shape}, "datatype": "{v2_datatype(spec)}", '
                       f'"data": [{count} {kind}{"s" if count != 1 else ""}]}}')  # fmt: skip
    return f'{{"inputs": [{", ".join(tensors)}]}} (data flat, row-major)'


def _plain_request(payload: Any, model: Model, suspect: bool = True) -> InferRequest | None:
    """The common request in a few steps: {"inputs": [{"name", "shape", "datatype", "data"}]} for a
    model's one numeric input, with values of its type and a shape it takes; None for anything else
    (the general path then decodes it, and names what is wrong). Takes exactly what the general
    path takes, with the same result: its checks, then `Model.prepare`'s, which hold here."""
    plain = _plain_input(model)
    if plain is None or type(payload) is not dict or len(payload) != 1:
        return None
    inputs = payload.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(tensor := inputs[0]) is not dict or len(tensor) != 4:
        return None
    shape = tensor.get("shape")
    if tensor.get("name") != plain.name or tensor.get("datatype") != plain.datatype or "data" not in tensor:
        return None
    if type(shape) is not list or len(shape) != len(plain.dims):
        return None
    for size, want in zip(shape, plain.dims, strict=True):
        if type(size) is not int or size < 0 or (want is not None and size != want):
            return None
    array = array_from_values(tensor["data"], plain.datatype, shape, plain.name)  # its 400s are the general path's
    if suspect:  # true, false or a string in the data (`_may_hide_other_kinds`)
        refuse_other_kinds(tensor["data"], plain.datatype, plain.name)
    if array.dtype != plain.dtype:  # ints given to a float input are already cast; others need prepare's rules
        return None
    return InferRequest({plain.name: array}, list(plain.outputs), {}, None, set())


def output_tensors(
    model: Model, request: InferRequest, outputs: dict[str, np.ndarray]
) -> list[tuple[str, str, np.ndarray]]:
    """(name, V2 datatype, array) of each output the request asked for, classified where asked."""
    tensors, spec_of = [], {spec.name: spec for spec in model.outputs}
    for name in request.outputs:
        if name in request.classification:
            array = _classify(model, outputs, request.classification[name], request.feeds)
        elif spec_of[name].type in _MAPS:  # a sequence of {class: probability} maps: [rows, classes]
            array = np.asarray(model.prediction_of({name: outputs[name]})[name], np.float32)
        elif spec_of[name].type.startswith("seq(tensor("):
            array = _stacked(name, outputs[name], binary.NUMPY_BY_V2.get(v2_datatype(spec_of[name]), object))
        else:
            array = np.asarray(outputs[name])
        datatype = _V2_BY_KIND.get(array.dtype.kind) or _V2_BY_DTYPE[array.dtype]
        tensors.append((name, datatype, array))
    return tensors


def _stacked(name: str, tensors: list[np.ndarray], dtype: Any) -> np.ndarray:
    """A sequence of tensors as one tensor of `dtype`, stacked on a new first axis; a 500 when their shapes
    differ."""
    shapes = {np.shape(t) for t in tensors}
    if len(shapes) > 1:
        raise RequestError(500, f"output {name!r} is a sequence of tensors of different shapes "
                                f"({', '.join(map(str, sorted(shapes)))}), which one V2 tensor cannot hold")
    return np.stack(tensors) if tensors else np.empty(0, dtype)


def encode_response(model: Model, request: InferRequest, outputs: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The V2 infer reply body, and the length of its JSON header when raw outputs follow it.

    Non-finite floats in JSON data are the strings "NaN", "Infinity" and "-Infinity" (`jsonio`).
    """
    tensors, blobs = [], []
    for name, datatype, array in output_tensors(model, request, outputs):
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if name in request.binary:
            blobs.append(binary.to_bytes(array, datatype))
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = jsonio.tensor_data(array)
        tensors.append(tensor)
    reply: dict[str, Any] = {"model_name": model.name, "model_version": MODEL_VERSION}
    if request.id is not None:
        reply["id"] = request.id
    reply["outputs"] = tensors
    header = jsonio.dumps(reply)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):  # not '²'
        raise RequestError(
            400, f"{HEADER_LENGTH} {header_length!r} must be a byte count within the {len(body)}-byte body"
        )
    return body[: int(header_length)], body[int(header_length) :]


def _parameters(obj: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = obj.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(400, f'"parameters" of {what} must be an object')
    refuse_shared_memory(parameters, what)
    return parameters


def refuse_sequences(parameters: Mapping[str, Any]) -> None:
    """RequestError(400) for a request of a sequence (a sequence_id, sequence_start or sequence_end, as
    tritonclient sends for a stateful model): Triton keeps state between such requests; this server keeps none, and
    answered each alone without a word (Triton refuses them too, for a model without sequence batching)."""
    if any(parameters.get(key) for key in ("sequence_id", "sequence_start", "sequence_end")):
        raise RequestError(400, "this server keeps no state between requests (no sequence batching); send them "
                                "without sequence_id, sequence_start and sequence_end")


def refuse_shared_memory(parameters: Mapping[str, Any], what: str) -> None:
    """RequestError(400) for a tensor in a shared-memory region (tritonclient's set_shared_memory): an output
    asked for there came back in the answer instead, and a client reading the region read stale bytes."""
    if "shared_memory_region" in parameters:
        raise RequestError(400, f"{what}: shared memory is not supported (region "
                                f"{parameters['shared_memory_region']!r}); send the data in the request, as binary "
                                "data for speed")


def array_from_values(data: Any, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """A tensor from its values (JSON data, flat or nested, or gRPC's typed contents); 400 if they do not fit,
    or if numpy reads them as another kind than the datatype's (text for INT32, numbers for BOOL). Strings and
    true / false that numpy takes for numbers ("5.1" and true for FP32) are `refuse_other_kinds`'s to find."""
    count = math.prod(shape)
    if datatype == "BYTES" and type(data) is list and data and type(data[0]) is not list and len(data) != count:
        # a flat list of the wrong length, refused before numpy makes an object of each (10,000,000 "" under [1]: 2.7 s)
        raise RequestError(400, f"input {name!r}: shape {shape} holds {count} values, but data has {len(data)}")
    try:
        array = _float_array(data, datatype) if datatype in _FLOATS else None
        if array is None:
            array = np.asarray(data, dtype=object if datatype == "BYTES" else None)
    except (ValueError, TypeError, OverflowError) as e:
        raise RequestError(400, f"input {name!r}: data is not a regular array of values ({e})") from e
    if array.dtype.kind in "OUS" or datatype == "BOOL" and array.dtype.kind != "b" and array.size:
        refuse_other_kinds(data, datatype, name)  # an object array of whole numbers past int64 passes
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        _check_non_finite(data, array, datatype, name)
    if array.size != math.prod(shape):
        raise RequestError(
            400, f"input {name!r}: shape {shape} holds {math.prod(shape)} values, but data has {array.size}"
        )
    want = binary.NUMPY_BY_V2.get(datatype)
    if want is not None and want.kind in "iu" and array.dtype.kind == "f" and array.size:
        # numpy reads whole numbers past INT64 beside smaller ones (UINT64's upper half) as float64: keep them exact
        exact = np.asarray(data, dtype=object)
        if _integers(exact):
            array = exact
    if want is not None and array.dtype != want:
        array = _typed(array, want, datatype, name)
    try:
        return array.reshape(shape)
    except ValueError as e:  # a dimension past what numpy can index, with another one 0
        raise RequestError(400, f"input {name!r}: shape {shape} is too large ({e})") from None


def _typed(array: np.ndarray, want: np.dtype, datatype: str, name: str) -> np.ndarray:
    """`array` for a tensor of numpy type `want`: an empty one in that type; whole numbers in an integer type
    (JSON's int64 for UINT8, which `Model.prepare` refuses as another kind, and 2.0), RequestError(400) for a
    fraction or a whole number that type cannot hold; any other as it is, for `Model.prepare` to cast or refuse."""
    if array.size == 0:  # [] reads as float64
        return array.astype(want)
    limits = np.iinfo(want) if want.kind in "iu" else None
    if limits is not None and array.dtype.kind == "f" and (fraction := array[array != np.round(array)]).size:
        raise RequestError(400, f"input {name!r}: data holds {fraction[0]:g}; {datatype} takes integers")
    if limits is not None and (value := _out_of_range(array, limits)) is not None:
        digits = str(value)
        shown = digits if len(digits) <= 30 else f"a {len(digits.lstrip('-'))}-digit number"
        raise RequestError(400, f"input {name!r}: {shown} does not fit {datatype} ({limits.min} to {limits.max})")
    if limits is not None and (array.dtype.kind in "iuf" or array.dtype.kind == "O" and _integers(array)):
        return array.astype(want)  # whole numbers that fit (2.0 too): exact in the datatype
    return array


def _out_of_range(array: np.ndarray, limits: np.iinfo) -> int | None:
    """The smallest or largest value of `array` if it is a whole number outside `limits`."""
    if array.dtype.kind in "iuf":
        ends = [array.min().item(), array.max().item()]
    elif array.dtype.kind == "O" and _integers(array):  # past float64's range
        ends = [min(array.flat), max(array.flat)]
    else:
        return None
    for value in ends:  # Python compares int with int or float exactly
        if (type(value) is int or value.is_integer()) and not limits.min <= value <= limits.max:
            return int(value)
    return None


def _integers(array: np.ndarray) -> bool:
    """True if an object array holds Python ints only (whole numbers past int64, held exactly)."""
    return all(type(v) is int for v in array.flat)


_NUMBER_TEXT = b"0123456789+-.eE,[] \t\r\n"  # what JSON numbers, the lists holding them and blanks are written with


def _fits(value: Any, datatype: str) -> bool:
    """Whether one JSON value is of the datatype's kind: a string for BYTES (bytes from gRPC), true / false for
    BOOL, else a number; for a floating-point type also the strings for NaN and the infinities, and null
    (`_check_non_finite`'s)."""
    if datatype == "BYTES":
        return type(value) in (str, bytes)
    if datatype == "BOOL":
        return type(value) is bool
    if datatype not in _FLOATS:
        return type(value) in (int, float)
    return type(value) in (int, float) or value is None or type(value) is str and value in jsonio.NON_FINITE_TEXT


def _float_array(data: Any, datatype: str) -> np.ndarray | None:
    """Floating-point data straight in the tensor's type (strings such as "NaN" too); None if not numbers."""
    try:
        with np.errstate(over="ignore"):  # a number past the type's range: refused by `_check_non_finite`
            return np.asarray(data, dtype=_FLOATS[datatype])
    except (ValueError, TypeError, OverflowError):
        return None  # not numbers, or ragged: the generic path names the problem


def refuse_other_kinds(data: Any, datatype: str, name: str) -> None:
    """RequestError(400) naming the first value of JSON `data` (nested lists) that is not of the datatype's kind.
    A walk over every value: run where numpy's conversion may have hidden one (`_may_hide_other_kinds`), and on
    BYTES data (whose numbers, nulls and objects the model was fed as Python's str() of them)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if type(value) is list:
            stack.extend(reversed(value))
        elif type(value) is not np.ndarray and not _fits(value, datatype):  # an array: a long run of numbers
            try:
                shown = jsonio.dumps(value).decode()
            except TypeError:  # not a JSON value: gRPC contents
                shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            kind = ("strings" if datatype == "BYTES" else "true or false" if datatype == "BOOL" else
                    'numbers ("NaN", "Infinity", "-Infinity" for those)' if datatype in _FLOATS else "integers")
            raise RequestError(400, f"input {name!r}: data holds {shown}; {datatype} takes {kind}")


def _may_hide_other_kinds(header: bytes, payload: Any) -> bool:
    """False when every input's JSON data is numbers only, so that numpy's conversion (which reads true and
    "5.1" as numbers) hid nothing: the request's text less the characters of numbers is then the same as that
    of the request with each data emptied. Two C passes over the text instead of a walk over every value (which
    took a 64-row request's decoding from 145 to 190 us)."""
    inputs = payload.get("inputs") if type(payload) is dict else None
    if type(inputs) is not list:
        return True
    emptied = [{**t, "data": []} if type(t) is dict and "data" in t else t for t in inputs]
    try:
        skeleton = jsonio.dumps({**payload, "inputs": emptied})
    except TypeError:  # a whole number past 64 bits outside the data: look at every value
        return True
    return header.translate(None, _NUMBER_TEXT) != skeleton.translate(None, _NUMBER_TEXT)


def _check_non_finite(data: Any, array: np.ndarray, datatype: str, name: str) -> None:
    """RequestError(400) if a NaN or infinity in `array` was not in `data`: a null (numpy reads it as NaN),
    or a finite number past the datatype's range (the cast makes it infinite)."""
    if np.isnan(array).any() and _holds_null(data):
        raise RequestError(400, f'input {name!r}: data holds null; send numbers ("NaN" for a value that is not one)')
    wide = np.asarray(data, dtype=np.float64).reshape(array.shape)  # "Infinity" reads as infinite here too
    past = wide[np.isinf(array) & np.isfinite(wide)]
    if past.size:
        largest = float(np.finfo(array.dtype).max)
        raise RequestError(
            400, f"input {name!r}: {past[0]:g} does not fit {datatype} (largest {largest:g}); it would be infinite"
        )


def _holds_null(data: Any) -> bool:
    """True if JSON `data` (nested lists) holds a null."""
    if type(data) is list:
        return any(_holds_null(value) for value in data)
    return data is None


def _requested_outputs(
    requested: list[tuple[Any, Mapping[str, Any]]] | None, model: Model, binary_outputs: bool
) -> tuple[list[str], dict[str, int], set[str]]:
    names = [spec.name for spec in model.outputs]
    if not requested:  # none or an empty list: every output (Triton's rule, and gRPC's empty repeated field)
        return names, {}, set(names) if binary_outputs else set()
    chosen, classification, raw = [], {}, set()
    for name, parameters in requested:
        refuse_shared_memory(parameters, f"output {name!r}")
        if name not in names:
            hint = f"{suggest(str(name), names)} Its outputs: {', '.join(names)}"
            raise RequestError(400, f"model {model.name!r} has no output {name!r}.{hint}")
        if name in chosen:  # each copy would be encoded again: 100 KB asking for 3,000 copies got a 192 MB answer
            raise RequestError(400, f"output {name!r} is requested twice")
        k = parameters.get("classification")
        if k is not None:
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise RequestError(400, f"output {name!r}: classification must be a positive integer")
            scores = model.scores_output or names[0]  # the output training fit, a scikit-learn classifier's, the first
            if name != scores:
                raise RequestError(400, f"classification is available for the scores output, {scores!r}")
            classification[name] = k
        as_binary = parameters.get("binary_data", binary_outputs)
        if not isinstance(as_binary, bool):
            raise RequestError(400, f"output {name!r}: binary_data must be true or false")
        if as_binary:
            raw.add(name)
        chosen.append(name)
    return chosen, classification, raw


def _classify(model: Model, outputs: dict[str, np.ndarray], k: int, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The k best classes of each row as Triton writes them ("score:index:name"); a row the model scored NaN
    from finite inputs is the model's fault (500), from NaN or infinite ones the request's (400)."""
    prediction = model.prediction_of(outputs)
    try:
        if np.isnan(prediction.class_scores()).any():
            given = next((name for name, v in feeds.items() if v.dtype.kind == "f" and not np.isfinite(v).all()),
                         None)
            if given is None:
                raise RequestError(500, f"model {model.name!r} scored NaN on finite inputs, so no class is best; "
                                        "ask for the output without classification to read its scores")
            try:
                prediction.top_k_indices(k)
            except OnnxkitError as e:  # the rows scored NaN
                raise RequestError(400, f"model {model.name!r}: {e} (input {given!r} holds NaN or infinity)") from e
        indices, scores = prediction.top_k_indices(k)
    except OnnxkitError as e:
        raise RequestError(400, f"model {model.name!r}: {e}") from e
    names = prediction.class_names  # the model's, or a ZipMap's keys
    return np.array(
        [
            [f"{s:g}:{i}" + (f":{names[i]}" if names else "") for i, s in zip(row_i, row_s, strict=True)]
            for row_i, row_s in zip(indices.tolist(), scores.tolist(), strict=True)
        ],
        dtype=object,
    ).reshape(indices.shape)
