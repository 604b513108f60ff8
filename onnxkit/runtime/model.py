"""`load` an ONNX model and `predict` with it: the embedding API."""

from __future__ import annotations

import functools
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxkit.batch_axis import seq_first, swapped, transposed
from onnxkit.categories import by_column, encode, encodes_categories
from onnxkit.errors import OnnxkitError
from onnxkit.label_columns import (
    feature_names,
    features_label_column,
    in_trained_order,
    label_header,
    trained_columns,
)
from onnxkit.metadata_keys import LABELS_KEY, OUTPUT_KEY, QUANTIZATION_KEY, SCORES_KEY, TASK_KEY
from onnxkit.runtime.prediction import Prediction
from onnxkit.runtime.rows import rows_independent
from onnxkit.runtime.session import (
    check_started,
    create_session,
    error_reason,
    ort,
    parse_device,
    providers_for,
    run_failure_hint,
    session_options,
)
from onnxkit.runtime.signature import TensorSpec, batchable, example_feeds, prepare_inputs
from onnxkit.runtime.values import ValueChecks

if TYPE_CHECKING:
    import onnx  # for the type hint only: the runtime never imports onnx


def _cell(value: Any) -> str:
    """A DataFrame's value as a CSV cell: a missing one (None, NaN, pandas' NA) empty."""
    missing = value is None or isinstance(value, float) and value != value or str(value) == "<NA>"
    return "" if missing else str(value)


class Model:
    """A loaded model. `predict` may be called from many threads at once.

    Inputs pass through `prepare` (names, dtypes and shapes checked against the
    model) and then `run` (one session run). Entry points for other kinds of
    input, such as text for models that carry a tokenizer, turn their input into
    feeds and call `predict`.
    """

    def __init__(
        self,
        session: Any,
        name: str,
        *,
        batch_size: int | None = 512,
        io_binding: bool | None = None,
        device_id: int = 0,
        source: str | os.PathLike | bytes | None = None,
    ) -> None:
        """`source`: the model's file or bytes, parsed (with onnx) only where its outputs alone cannot say which
        holds the class scores, or name the classes."""
        if batch_size is not None and (not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool)
                                       or batch_size < 1):
            raise OnnxkitError(f"batch_size must be a whole number, 1 or more (or None for no splitting), got "
                               f"{batch_size!r}")
        self.session = session
        self.name = name
        self.batch_size = batch_size
        self.inputs = [TensorSpec.from_node_arg(arg) for arg in session.get_inputs()]
        self.outputs = [TensorSpec.from_node_arg(arg) for arg in session.get_outputs()]
        # a seq-first model ([seq, batch, ...]) takes and gives rows on axis 0 here; `run` transposes them
        self.seq_first = seq_first({s.name: s.shape for s in self.inputs}, {s.name: s.shape for s in self.outputs})
        if self.seq_first:
            self.inputs, self.outputs = ([replace(s, shape=swapped(s.shape)) if s.name in names else s for s in specs]
                                         for specs, names in ((self.inputs, self.seq_first.inputs),
                                                              (self.outputs, self.seq_first.outputs)))
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
        self.task = self.metadata.get(TASK_KEY)
        self.given_probabilities = self.metadata.get(SCORES_KEY) == "probabilities"
        self.target = label_header(self.metadata)  # read once: parsing it took 4 of a 16 us predict (digits-mlp)
        graph = _Graph(source)
        self.scores_output = self.metadata.get(OUTPUT_KEY)
        layout = None if self.scores_output else _label_then_scores(self.outputs, graph)
        if layout:  # a classifier whose first output is its label (skl2onnx's, or PyTorch's (argmax, logits))
            self.scores_output, self.given_probabilities = layout
            self.task = self.task or "classification"
        self.class_names = _class_names(self.metadata, self.outputs, name, self.scores_output)
        scores = next((spec for spec in self.outputs if spec.name == self.scores_output), None)
        if self.class_names is None and scores is not None and scores.type == "tensor(float)":  # no ZipMap names them
            self.class_names = graph.sklearn_classes()
        integers = any(spec.dtype is not None and spec.dtype.kind in "iu" for spec in self.inputs)
        self.value_checks = ValueChecks.of(self.inputs, graph.lookup_rows() if integers else {})
        self.batchable = batchable(self.inputs)
        firsts = {spec.shape[0] if len(spec.shape) > 1 else None for spec in self.inputs}
        # a batch size the inputs fix (each has a first dim of this size, and more dims after it): any
        # number of rows is fed, and run in batches of that size
        self.fixed_batch = firsts.pop() if len(firsts) == 1 and isinstance(next(iter(firsts)), int) else None
        self._feed_specs = self.inputs if self.fixed_batch is None else [
            replace(spec, shape=(None, *spec.shape[1:])) for spec in self.inputs]
        on_gpu = session.get_providers()[0] == "CUDAExecutionProvider"
        self.device = f"cuda:{device_id}" if on_gpu else "cpu"
        self.io_binding = on_gpu if io_binding is None else io_binding
        self._device_kind = "cuda" if on_gpu else "cpu"
        self._device_id = device_id if on_gpu else 0
        self._output_names = [spec.name for spec in self.outputs]
        self._map_outputs = {spec.name for spec in self.outputs if spec.type.startswith("seq(map(")}  # ZipMap's
        self._releasing = ort.RunOptions()
        arenas = "cpu:0" + (f";gpu:{device_id}" if on_gpu else "")
        self._releasing.add_run_config_entry("memory.enable_memory_arena_shrinkage", arenas)
        # a parsed graph, or the bytes it is parsed from, is as large as the model: neither is kept for its life
        graph.forget()
        self._graph = graph if not isinstance(source, bytes) else None

    @functools.cached_property
    def rows_out(self) -> bool:
        """Whether each output has a row per input row that depends on that row alone (`rows.rows_independent`,
        which runs the model three times the first time it is asked), so that rows may run in batches, and requests be
        merged into one run (serve)."""
        independent = rows_independent(self.inputs, self.outputs, self.run, self._quantizes_per_run)
        if independent:  # a first dimension declared 1 (the probe saw a row each) is the batch: V2 metadata says -1
            self.outputs = [replace(spec, shape=(None, *spec.shape[1:])) if spec.shape[:1] == (1,) else spec
                            for spec in self.outputs]
        return independent

    def _quantizes_per_run(self) -> bool:
        """Whether the model quantizes its activations with each run's range: onnxkit's dynamic int8 (its metadata
        says so), or a graph of such ops (read from the model's file; a model given as bytes is not kept)."""
        if json.loads(self.metadata.get(QUANTIZATION_KEY, "{}")).get("mode") == "dynamic":
            return True
        return self._graph is not None and self._graph.quantizes_per_run()

    @property
    def providers(self) -> list[str]:
        """The execution providers the session uses, in priority order."""
        return self.session.get_providers()

    def prepare(self, inputs: Any = None, /, **named: Any) -> dict[str, np.ndarray]:
        """Checked, contiguous session feeds from an array, a dict of arrays, lists or keywords."""
        if inputs is not None and named:
            names = {spec.name for spec in self.inputs}
            unknown = [k for k in named if k not in names]
            if unknown:  # predict(x, batch_size=0): an option of load(), not of predict
                raise OnnxkitError(f"model {self.name!r} has no input {unknown[0]!r} (its inputs: "
                                   f"{', '.join(sorted(names))}); options such as batch_size are load()'s")
            raise OnnxkitError("pass inputs either as one value/dict or as keywords, not both")
        if not isinstance(inputs, np.ndarray | Mapping):
            _refuse_data_objects(inputs)
            if _pillow_images(inputs):  # decoded as `onnxkit predict` decodes image files (onnxkit.data.images)
                from onnxkit.data.images import image_input, pillow_images

                layout = image_input(self.inputs)
                inputs = {layout.name: pillow_images(inputs if isinstance(inputs, list | tuple) else [inputs], layout)}
            if isinstance(inputs, list | tuple) and inputs and isinstance(inputs[0], Mapping):
                raise OnnxkitError("predict takes rows as arrays or lists, not a list of dicts: pass "
                                   "pandas.DataFrame(rows), read by its column names, or one dict of arrays by input "
                                   f"name ({', '.join(spec.name for spec in self.inputs)})")
        if isinstance(inputs, Mapping):
            values = dict(inputs)
        elif inputs is not None:
            if len(self.inputs) != 1:
                names = ", ".join(spec.name for spec in self.inputs)
                raise OnnxkitError(
                    f"model {self.name!r} has {len(self.inputs)} inputs ({names}); pass a dict or keywords naming each"
                )
            values = {self.inputs[0].name: self._in_trained_columns(inputs) if hasattr(inputs, "columns") else inputs}
        else:
            values = named
        feeds = prepare_inputs(self._feed_specs, values)
        if self.value_checks:
            self.value_checks.check(feeds)
        return feeds

    def _in_trained_columns(self, frame: Any) -> Any:
        """A pandas DataFrame's columns as the model trained on them (`onnxkit.columns`): by name, its label column
        left out, as predict reads a CSV (matched by position, reversed columns answered wrongly: versicolor for
        setosa)."""
        trained = trained_columns(self.metadata)
        if trained is None:  # a model that names no columns: the frame is its values, as before
            return frame
        names = [str(c) for c in frame.columns]
        label = features_label_column(names, trained, "the DataFrame", self.target)
        if encodes_categories(trained, feature_names(names, label)):  # its category columns, encoded by name
            kept = [j for j in range(len(names)) if j != label]
            columns = [[_cell(v) for v in frame.iloc[:, j].tolist()] for j in kept]
            cells = by_column("the DataFrame", [names[j] for j in kept], list(zip(*columns, strict=True)))
            return encode(cells, trained, "the DataFrame").warn_unseen("the DataFrame", stacklevel=3)
        order = in_trained_order(feature_names(names, label), trained, "the DataFrame")
        if order is None and label is None:
            return frame
        kept = [c for j, c in enumerate(frame.columns) if j != label]
        return frame[kept if order is None else [kept[i] for i in order]]

    def run(self, feeds: Mapping[str, np.ndarray], *, release_memory: bool = False) -> dict[str, np.ndarray]:
        """One session run on prepared feeds (see `prepare`); outputs by name. `release_memory`: give
        back what ONNX Runtime's memory arena grew by for this run once it ends (it keeps the most
        any run took: one 52,000-row run of digits-cnn left a process at 707 MB, 110 MB released)."""
        options = self._releasing if release_memory else None
        if self.seq_first:
            feeds = {k: transposed(v) if k in self.seq_first.inputs else v for k, v in feeds.items()}
        if self.io_binding:
            outputs = self._run_bound(feeds, options)
        else:
            outputs = dict(zip(self._output_names, self.session.run(self._output_names, dict(feeds), options),
                               strict=True))
        if self.seq_first:
            outputs = {k: transposed(v) if k in self.seq_first.outputs else v for k, v in outputs.items()}
        return outputs

    def predict(self, inputs: Any = None, /, **named: Any) -> Prediction:
        """Run the model and return a `Prediction` (outputs by name; classes, labels, top_k, probabilities).

        `inputs`: one array (or nested lists, a pandas DataFrame, Pillow images: decoded, resized and scaled as
        `onnxkit predict` reads image files) for a model of one input, or a dict of
        them by input name; or pass them as keywords (`named`), `predict(x=...)`. The first axis is the rows: one
        example needs one (`x[None]`). Values are cast where none is lost in kind (float64 -> float32,
        int -> float), never float -> int; wrong names, dtypes or shapes are one OnnxkitError each.
        Texts (a str, or a list of them) for a model that reads text are `predict_text`'s.
        Inputs with more rows than `batch_size` run in batches. A failure inside the
        model (a token id past its vocabulary, sizes its nodes cannot combine) is an OnnxkitError."""
        if not named and _texts(inputs):
            from onnxkit.runtime.text import reads_text

            if reads_text(self):
                return self.predict_text(inputs)
        feeds = self.prepare(inputs, **named)
        if self.fixed_batch is not None:
            return self.prediction_of(self._run_fixed_batches(feeds, self.fixed_batch))
        rows = len(next(iter(feeds.values()))) if self.batchable else 0
        if self.batch_size is None or rows <= self.batch_size or not self.rows_out:
            outputs = self._checked_run(feeds)
        else:
            starts = range(0, rows, self.batch_size)
            parts = [self._checked_run({k: v[i : i + self.batch_size] for k, v in feeds.items()}) for i in starts]
            outputs = self._concat_rows(parts, rows)
        return self.prediction_of(outputs)

    def __call__(self, inputs: Any = None, /, **named: Any) -> Prediction:
        """`model(x)` is `model.predict(x)`."""
        return self.predict(inputs, **named)

    def _run_fixed_batches(self, feeds: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
        """Outputs for `feeds` of a model whose inputs fix the batch size (a PyTorch export traced
        with one example): run in batches of that size, the last one padded with copies of its last
        row, whose outputs are dropped (as `onnxkit eval` runs such a model)."""
        rows = len(next(iter(feeds.values())))
        if rows == size:
            return self._checked_run(feeds)
        if rows == 0:
            raise OnnxkitError(f"model {self.name!r}: the input has no rows; give at least one example")
        parts = []
        for start in range(0, rows, size):
            batch = {name: a[start : start + size] for name, a in feeds.items()}
            short = size - len(next(iter(batch.values())))
            if short:
                batch = {name: np.concatenate([a, np.repeat(a[-1:], short, axis=0)]) for name, a in batch.items()}
            parts.append(self._checked_run(batch))
        outputs = {}
        for name in self._output_names:
            axis = _batch_axis([part[name] for part in parts], size)
            if axis is None:
                outputs |= {name: value[:rows] for name, value in self._concat_rows(
                    [{name: part[name]} for part in parts], len(parts) * size, size).items()}
            else:  # time-major (a CRNN's [steps, batch, classes] for CTC): its rows lie along that axis
                whole = np.concatenate([part[name] for part in parts], axis=axis)
                outputs[name] = np.take(whole, np.arange(rows), axis=axis)
        return outputs

    def _checked_run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self.run(feeds)
        except Exception as e:  # onnxruntime raises its own exception types, without a common base
            hint = run_failure_hint(e)  # an id past a vocabulary, a size an export fixed, or neither
            raise OnnxkitError(f"model {self.name!r} failed on this input ({error_reason(e)}); {hint}") from e

    def prediction_of(self, outputs: dict[str, np.ndarray]) -> Prediction:
        """`outputs` of this model (by name) read with its class names, task and kind of scores; a
        sequence of {class: probability} maps (skl2onnx's ZipMap) becomes a [rows, classes] array."""
        names = self.class_names
        outputs = dict(outputs)
        for name, value in outputs.items():
            if isinstance(value, np.ndarray) and value.dtype != object:  # the common case: no maps
                continue
            if getattr(value, "ndim", 1) and len(value) and isinstance(value[0], dict):  # not a 0-d output
                keys = list(value[0])
                outputs[name] = np.array([[row[k] for k in keys] for row in value], np.float32)
                if name == self.scores_output and names is None and keys != list(range(len(keys))):
                    names = tuple(str(k) for k in keys)
            elif isinstance(value, list) and not value and name in self._map_outputs:  # no rows: [0, classes]
                outputs[name] = np.empty((0, len(self.class_names or self._graph.sklearn_classes() or ())), np.float32)
        scores = np.asarray(outputs.get(self.scores_output, next(iter(outputs.values()), ())))
        multi_label = self.task == "binary" and scores.ndim > 1 and scores.size > len(scores)  # len(): not 0-d
        return Prediction(outputs, names, self.task, self.given_probabilities, self.scores_output, multi_label,
                          self.target)

    def predict_text(self, texts: str | Sequence[str]) -> Prediction:
        """Tokenize `texts` with the tokenizer the model carries (metadata) and predict."""
        from onnxkit.runtime.text import predict_text

        return predict_text(self, texts)

    def warmup(self) -> None:
        """Run once on zeros, so the first real call does not pay for allocation (a failure is an OnnxkitError:
        an input declared without a shape gets a zero-dimensional example)."""
        self._checked_run(example_feeds(self.inputs))

    def _run_bound(self, feeds: Mapping[str, np.ndarray], options: Any = None) -> dict[str, np.ndarray]:
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in self._output_names:
            binding.bind_output(name, self._device_kind, self._device_id)
        self.session.run_with_iobinding(binding, options)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

    def _concat_rows(self, parts: list[dict[str, np.ndarray]], rows: int,
                     fixed: int | None = None) -> dict[str, np.ndarray]:
        """The parts' outputs joined along their first axis; OnnxkitError where it does not hold a row each. With
        `fixed`, the batch size the model's inputs fix, which no batch_size changes."""
        outputs = {}
        for name in parts[0]:
            pieces = [part[name] for part in parts]
            if sum(len(np.atleast_1d(p)) for p in pieces) != rows:
                fix = (f"give it {fixed} row{'s' * (fixed > 1)} at a time, as its inputs fix" if fixed else
                       f"run its {rows} rows at once: batch_size={rows}")
                raise OnnxkitError(f"output {name!r} of model {self.name!r} does not have one row per input row, "
                                   f"so the input cannot be split into batches; {fix}",
                                   params=[] if fixed else ["batch_size"])
            outputs[name] = np.concatenate(pieces)
        return outputs

    def describe(self) -> str:
        """'(x float32 [batch, 64]) -> (logits float32 [batch, 10])'."""
        ins = ", ".join(spec.describe() for spec in self.inputs)
        outs = ", ".join(spec.describe() for spec in self.outputs)
        return f"({ins}) -> ({outs})"

    def __repr__(self) -> str:
        return f"<onnxkit Model {self.name!r} {self.describe()} on {self.device}>"


def _pillow_images(inputs: Any) -> bool:
    """Whether `inputs` is a Pillow image or a list (tuple) of them (told apart without importing Pillow)."""
    first = inputs[0] if isinstance(inputs, list | tuple) and inputs else inputs
    return type(first).__module__.startswith("PIL.") and hasattr(first, "getexif")


def _texts(inputs: Any) -> bool:
    """Whether `inputs` is a text or a list (tuple) of texts."""
    return isinstance(inputs, str) or isinstance(inputs, list | tuple) and bool(inputs) and \
        all(isinstance(text, str) for text in inputs)


def _refuse_data_objects(inputs: Any) -> None:
    """An `onnxkit.data` Split or Dataset (known by its attributes: the runtime does not import onnxkit.data) given
    to predict is one error saying which arrays to pass; it was "input 'x' expects float32 values, got object"."""
    kind, name = type(inputs).__name__, getattr(inputs, "name", "")
    if hasattr(inputs, "inputs") and hasattr(inputs, "labels"):
        raise OnnxkitError(f"predict takes arrays, not the {kind} {name!r} (inputs and labels): pass its inputs, "
                           "model.predict(split.inputs)")
    if all(hasattr(inputs, s) for s in ("train", "validation", "test")):
        raise OnnxkitError(f"predict takes arrays, not the {kind} {name!r}: pass a split's inputs, "
                           "model.predict(dataset.test.inputs)")


def ends_in_probabilities(model: str | os.PathLike | bytes) -> bool:
    """Whether the model's first output is a Softmax over its last axis or a Sigmoid, i.e. class
    probabilities already (for models without onnxkit's metadata saying so; onnx is imported
    only here, when asked: the runtime otherwise runs without it)."""
    import onnx

    from onnxkit.graph_walks import opset, probability_logits

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model, load_external_data=False)
    first = proto.graph.output[0]
    rank = len(first.type.tensor_type.shape.dim)
    return probability_logits(proto.graph, first.name, rank, opset(proto)) is not None


_PER_RUN_QUANTIZATION = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
                                   "QAttention"})


class _Graph:
    """A model's graph, parsed with onnx on first use: the runtime imports onnx only for what its session cannot
    tell, about classifiers whose first output is their label."""

    def __init__(self, source: str | os.PathLike | bytes | None) -> None:
        self.source = source
        self._stamp = _file_stamp(source)

    @functools.cached_property
    def proto(self) -> onnx.ModelProto | None:
        """The graph; None without a source, or when the file is no longer the one loaded (replaced or removed since:
        a later read parsed the new file, or failed on a half-written one with protobuf's DecodeError)."""
        if self.source is None or _file_stamp(self.source) != self._stamp:
            return None
        import onnx

        if isinstance(self.source, bytes):
            return onnx.load_from_string(self.source)
        return onnx.load(self.source, load_external_data=False)

    def label_then_scores(self) -> tuple[str, bool] | None:
        """`graph_walks.label_then_scores`; None without a graph."""
        from onnxkit.graph_walks import label_then_scores

        return None if self.proto is None else label_then_scores(self.proto)

    def lookup_rows(self) -> dict[str, int]:
        """`graph_walks.lookup_rows`: the integer inputs that pick rows of a table (token ids), and its rows; {}
        without a graph."""
        from onnxkit.graph_walks import lookup_rows

        return {} if self.proto is None else lookup_rows(self.proto)

    def quantizes_per_run(self) -> bool:
        """Whether the model quantizes activations with each run's range (dynamic int8: DynamicQuantizeLinear,
        QAttention, ...); False without a graph."""
        found = self.proto is not None and any(node.op_type in _PER_RUN_QUANTIZATION for node in self.proto.graph.node)
        self.forget()
        return found

    def forget(self) -> None:
        """Drop the parsed graph; it is parsed again if asked for."""
        self.__dict__.pop("proto", None)

    def sklearn_classes(self) -> tuple[str, ...] | None:
        """A scikit-learn classifier's classes, as text, in its probabilities' column order (its nodes name them)."""
        from onnxkit.graph_walks import sklearn_classes

        classes = None if self.proto is None else sklearn_classes(self.proto)
        return None if classes is None else tuple(str(c) for c in classes)


def _file_stamp(source: str | os.PathLike | bytes | None) -> tuple[int, int, int] | None:
    """(inode, size, modification time) of a model file, to tell the file loaded from one put in its place; None for
    bytes, and for a file that is gone."""
    if source is None or isinstance(source, bytes):
        return None
    try:
        found = os.stat(source)
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def load(
    model: str | os.PathLike | bytes | bytearray | onnx.ModelProto,
    device: str = "auto",
    threads: int | None = None,
    *,
    batch_size: int | None = 512,
    warmup: bool = False,
    optimization: str = "all",
    optimized_model_path: str | os.PathLike | None = None,
    io_binding: bool | None = None,
    spin: bool = True,
    name: str | None = None,
) -> Model:
    """Load an ONNX model (a path, its bytes or an onnx.ModelProto, e.g. from `onnxkit.nn.build`) for prediction.

    device: "auto" (CUDA when this onnxruntime has it, else CPU), "cpu", "cuda" or "cuda:N".
    threads: intra-op threads (default: onnxruntime's choice, one per core).
    batch_size: inputs with more rows run in batches of this size (None: never split; nor are the rows of a model
        whose outputs are not one a row, each of its own row alone: `Model.rows_out`).
    warmup: run once on zeros before returning.
    optimization: graph optimisation level, "disabled" | "basic" | "extended" | "all".
    optimized_model_path: also save the optimised graph there (written atomically).
    io_binding: bind inputs and outputs to the device (default: on for CUDA).
    spin: let idle intra-op threads spin-wait (fastest alone; off when sharing cores).
    name: the model's name (default: the file's stem; a ModelProto's graph name).
    """
    if isinstance(model, bytearray | memoryview):
        model = bytes(model)
    if not isinstance(model, str | os.PathLike | bytes):
        if not hasattr(model, "SerializeToString"):  # an onnx.ModelProto, told apart without importing onnx
            raise TypeError(f"model must be a .onnx path, its bytes or an onnx.ModelProto, not {type(model).__name__}")
        name = name or getattr(model.graph, "name", "") or None
        model = model.SerializeToString()
    for option, value in (("warmup", warmup), ("spin", spin)):
        if not isinstance(value, bool):  # spin="no" was read as true
            raise TypeError(f"{option} must be True or False, not {value!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string, not {name!r}")
    kind, device_id = parse_device(device)
    options = session_options(threads, optimization, spin)
    session = create_session(model, options, providers_for(kind, device_id), optimized_model_path)
    check_started(session, kind, device)
    if name is None:
        name = "model" if isinstance(model, bytes) else Path(model).name.removesuffix(".onnx")
    loaded = Model(session, name, batch_size=batch_size, io_binding=io_binding, device_id=device_id, source=model)
    if warmup:
        loaded.warmup()
    return loaded


def _label_then_scores(outputs: list[TensorSpec], graph: _Graph) -> tuple[str, bool] | None:
    """`graph_walks.label_then_scores`, as `onnxkit eval` reads it, asking the graph only when the outputs could be
    such a layout: first an [N] label (integers or strings), then [N, classes] float scores. A sequence of
    {class: probability} maps in their place is ZipMap's (scikit-learn's probabilities) by its type alone."""
    if len(outputs) < 2 or outputs[0].type not in ("tensor(int64)", "tensor(string)") or len(outputs[0].shape) != 1:
        return None
    if outputs[1].type.startswith("seq(map("):
        return outputs[1].name, True
    return graph.label_then_scores() if any(s.type == "tensor(float)" and len(s.shape) == 2 for s in outputs) else None


def _class_names(
    metadata: dict[str, str], outputs: list[TensorSpec], model_name: str, scores_output: str | None
) -> tuple[str, ...] | None:
    raw = metadata.get(LABELS_KEY)
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise OnnxkitError(
            f"model {model_name!r}: metadata {LABELS_KEY!r} must be a JSON list of class names, "
            f"got {raw[:60]!r}; rewrite that metadata entry"
        )
    scores = next((o for o in outputs if o.name == scores_output), outputs[0] if outputs else None)
    width = scores.shape[-1] if scores and scores.shape else None
    if scores and len(scores.shape) > 2 and len(names) in scores.shape[1:]:
        width = len(names)  # scores per position ([batch, C, H, W] or [batch, T, C]): the classes on that axis
    if isinstance(width, int) and width != len(names) and not (width == 1 and len(names) == 2):
        raise OnnxkitError(
            f"model {model_name!r}: metadata {LABELS_KEY!r} names {len(names)} classes but output "
            f"{scores.name!r} has {width} scores per row; rewrite that metadata entry"
        )
    return tuple(names)


def _batch_axis(pieces: list[np.ndarray], size: int) -> int | None:
    """The one axis past the first along which every piece holds `size` rows, where the first does not: a
    time-major output's batch axis; None where the first axis does or no single other one does."""
    if any(np.ndim(p) == 0 for p in pieces) or all(len(p) == size for p in pieces):
        return None
    axes = [a for a in range(1, np.ndim(pieces[0])) if all(np.shape(p)[a] == size for p in pieces)]
    return axes[0] if len(axes) == 1 else None
