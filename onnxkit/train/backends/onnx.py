"""The `onnx` backend: onnxkit's own gradient and optimizer graphs, run as ordinary
InferenceSessions on any ONNX Runtime build and execution provider.

Artifacts: `training.onnx` (objective + gradients: batch and state in; loss, updated
buffers and gradients out), `optimizer.onnx` (state, gradients, lr, step in; new state
out), `eval.onnx` (the inference form, weights fed from the state) and the initial state
as safetensors.

State lives in OrtValues on the training device between steps, in two buffer sets swapped
after each update (an OrtValue is never bound as both input and output of one run). Every
binding is made once; a step binds only the batch, and only the loss comes back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxkit.autodiff import add_gradients, gradient_name, missing_rules
from onnxkit.errors import OnnxkitError
from onnxkit.files import atomic_path, save_model, write_text
from onnxkit.graph_walks import opset
from onnxkit.runtime.session import create_session, gpu_count, ort, parse_device, providers_for, session_options
from onnxkit.train.backend import Backend, TrainingProblem, TrainingSession
from onnxkit.train.optim import initial_state, state_names, update_model
from onnxkit.train.training_form import eval_form

TRAINING, OPTIMIZER, EVAL, INITIAL, SIGNATURE = (
    "training.onnx", "optimizer.onnx", "eval.onnx", "initial.safetensors", "signature.json"
)
OPTIMIZER_KEY = "optimizer/"  # prefix of optimizer state in checkpoints, apart from the model's tensors
STEP = OPTIMIZER_KEY + "step"
ACCUMULATED = ".accumulated"  # suffix of the gradient-accumulator inputs


def _inputs_from_initializers(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    """Turn the initializers `names` into graph inputs (fed from the state); returns their values."""
    wanted, values, kept = set(names), {}, []
    for t in model.graph.initializer:
        if t.name in wanted:
            values[t.name] = numpy_helper.to_array(t)
            model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            kept.append(t)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return values


def _training_graph(problem: TrainingProblem) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    model = onnx.ModelProto()
    model.CopyFrom(problem.objective.model)
    values = _inputs_from_initializers(model, [*problem.trainable, *problem.buffers])
    model.graph.output.extend(
        helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, list(values[name].shape))
        for name, out in problem.buffers.items()
    )
    graph = add_gradients(model, problem.trainable, problem.objective.total)
    keep = {problem.objective.loss, *problem.buffers.values(), *(gradient_name(p) for p in problem.trainable)}
    outputs = [o for o in graph.graph.output if o.name in keep]
    del graph.graph.output[:]
    graph.graph.output.extend(outputs)
    if problem.grad_accumulation > 1:  # gradient = this batch's + the running sum fed back in
        for p in problem.trainable:
            g = gradient_name(p)
            for node in graph.graph.node:
                node.output[:] = [f"{g}.batch" if o == g else o for o in node.output]
            graph.graph.node.append(helper.make_node("Add", [f"{g}.batch", g + ACCUMULATED], [g]))
            graph.graph.input.append(helper.make_tensor_value_info(g + ACCUMULATED, onnx.TensorProto.FLOAT,
                                                                   list(values[p].shape)))
    return graph, values


class OnnxBackend(Backend):
    name = "onnx"

    def unsupported(self, model: onnx.ModelProto, trainable, loss: str) -> list[tuple[str, str]]:
        return missing_rules(model, list(trainable), loss)

    def resolve_device(self, device: str) -> str:
        kind, _, index = device.lower().partition(":")
        if kind == "cuda":
            problem = _cuda_problem(int(index) if index.isdigit() else 0)
            if problem:
                raise OnnxkitError(f"cannot train on {device}: {problem}; or use --device cpu")
        kind, number = parse_device(device)
        return f"cuda:{number}" if kind == "cuda" else "cpu"

    def build(self, problem: TrainingProblem, directory: Path) -> None:
        graph, values = _training_graph(problem)
        save_model(graph, directory / TRAINING)
        del graph
        shapes = [(p, tuple(values[p].shape)) for p in problem.trainable]
        optimizer = update_model(problem.optimizer, shapes, clip_grad_norm=problem.clip_grad_norm,
                                 opset=min(max(opset(problem.eval_model), 13), 21))
        save_model(optimizer, directory / OPTIMIZER)
        state_vars = [*problem.trainable, *problem.buffers]
        save_model(eval_form(problem.eval_model, problem.output, state_vars), directory / EVAL)
        state = dict(values)
        for p in problem.trainable:
            state.update({OPTIMIZER_KEY + k: v for k, v in initial_state(problem.optimizer, p, values[p]).items()})
        state[STEP] = np.zeros((), np.int64)
        _save_state(directory / INITIAL, state)
        signature = {
            "labels": problem.labels_name,
            "loss": problem.objective.loss,
            "trainable": problem.trainable,
            "buffers": problem.buffers,
            "slots": {p: state_names(problem.optimizer, p) for p in problem.trainable},
            "accumulation": problem.grad_accumulation,
        }
        write_text(directory / SIGNATURE, json.dumps(signature, indent=1))

    def open(
        self, directory: Path, *, device: str = "cpu", checkpoint: Path | None = None, threads: int | None = None
    ) -> TrainingSession:
        return OnnxSession(directory, device, checkpoint, threads)

    def checkpoint_parameters(self, path: Path) -> dict[str, np.ndarray]:
        return {k: v for k, v in _load_state(path).items() if not k.startswith(OPTIMIZER_KEY)}

    def inference(
        self, model: onnx.ModelProto, *, device: str = "cpu", threads: int | None = None
    ) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
        session = create_session(model.SerializeToString(), session_options(threads, "all"), providers_for(
            *parse_device(device)))
        return lambda feeds: session.run(None, dict(feeds))


def _cuda_problem(index: int) -> str | None:
    """Why the CUDA execution provider cannot run on GPU `index` here, or None."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} here has no CUDA execution provider; install "
                "onnxkit[gpu] (onnxruntime-gpu) in place of onnxruntime")
    count = gpu_count()
    if count <= index:
        return f"only {count} NVIDIA GPU(s) are visible" if count else "no NVIDIA GPU or driver is visible"
    return None


def _save_state(path: Path, state: Mapping[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp), metadata={"format": "onnxkit"})


def _load_state(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if not path.is_file():
        raise OnnxkitError(f"{path}: no such checkpoint; is this a training run directory?")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise OnnxkitError(f"{path}: not a readable checkpoint ({e}); resume from another run") from e


class OnnxSession(TrainingSession):
    def __init__(self, directory: Path, device: str, checkpoint: Path | None, threads: int | None) -> None:
        sig = json.loads((directory / SIGNATURE).read_text())
        self._labels, self._loss = sig["labels"], sig["loss"]
        self._trainable: list[str] = sig["trainable"]
        self._buffers: dict[str, str] = sig["buffers"]
        self._slots: dict[str, list[str]] = sig["slots"]
        self._accumulate = sig["accumulation"] > 1
        saved = _load_state(checkpoint or directory / INITIAL)
        initial = _load_state(directory / INITIAL) if checkpoint else saved
        kind, self._device_id = parse_device(device)
        self._device = "cuda" if kind == "cuda" else "cpu"
        options = session_options(threads, "all")
        providers = providers_for(kind, self._device_id)
        self._train = create_session(str(directory / TRAINING), options, providers)
        self._optim = create_session(str(directory / OPTIMIZER), options, providers)
        self._eval = create_session(str(directory / EVAL), options, providers)
        slots = [s for p in self._trainable for s in self._slots[p]]
        found = {**{n: saved.get(n) for n in [*self._trainable, *self._buffers]},
                 **{n: saved.get(OPTIMIZER_KEY + n, initial.get(OPTIMIZER_KEY + n)) for n in slots}}
        missing = [n for n, v in found.items() if v is None]
        if missing:
            raise OnnxkitError(f"checkpoint lacks {', '.join(missing[:3])}; it belongs to another run or model")
        # Two sets of each kind of state: updates write the other set, then the sets swap.
        names = [*self._trainable, *slots]
        self._state = [{n: self._value(found[n]) for n in names}, {n: self._empty(found[n]) for n in names}]
        self._buffer_set = [{n: self._value(found[n]) for n in self._buffers},
                            {n: self._empty(found[n]) for n in self._buffers}]
        grads = {p: self._empty(found[p]) for p in self._trainable}
        self._grads = [grads, {p: self._empty(found[p]) for p in self._trainable}] if self._accumulate else [grads]
        self._zeros = {p: self._value(np.zeros_like(found[p])) for p in self._trainable} if self._accumulate else {}
        self._steps = int(saved.get(STEP, initial[STEP]).reshape(-1)[0])
        self._lr = ort.OrtValue.ortvalue_from_numpy(np.zeros((), np.float32))
        self._step_value = ort.OrtValue.ortvalue_from_numpy(np.zeros((), np.int64))
        self._loss_value = ort.OrtValue.ortvalue_from_numpy(np.zeros((), np.float32))
        self._batches = 0  # micro-batches since the last optimizer step
        self._train_inputs = [i.name for i in self._train.get_inputs()]
        self._eval_inputs = [i.name for i in self._eval.get_inputs()]
        self._bindings: dict[tuple, ort.IOBinding] = {}
        self._current = 0  # which state set is current
        self._buffers_current = 0

    def _value(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self._device, self._device_id)

    def _empty(self, like: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_shape_and_type(like.shape, like.dtype, self._device, self._device_id)

    # -- bindings: made once per combination of swapped sets ---------------------------------

    def _train_binding(self) -> ort.IOBinding:
        acc = -1 if not self._accumulate or self._batches == 0 else (self._batches - 1) % 2
        out = self._batches % 2 if self._accumulate else 0
        key = ("train", self._current, self._buffers_current, acc, out)
        if key not in self._bindings:
            b = self._train.io_binding()
            state = self._state[self._current]
            for p in self._trainable:
                b.bind_ortvalue_input(p, state[p])
                b.bind_ortvalue_output(gradient_name(p), self._grads[out][p])
                if self._accumulate:
                    b.bind_ortvalue_input(gradient_name(p) + ACCUMULATED,
                                          self._zeros[p] if acc < 0 else self._grads[acc][p])
            for name, produced in self._buffers.items():
                b.bind_ortvalue_input(name, self._buffer_set[self._buffers_current][name])
                b.bind_ortvalue_output(produced, self._buffer_set[1 - self._buffers_current][name])
            b.bind_ortvalue_output(self._loss, self._loss_value)
            self._bindings[key] = b
        return self._bindings[key]

    def train_step(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
        binding = self._train_binding()
        for name in self._train_inputs:
            if name == self._labels:
                binding.bind_cpu_input(name, labels)
            elif name in feeds:
                binding.bind_cpu_input(name, feeds[name])
        self._train.run_with_iobinding(binding)
        if self._buffers:
            self._buffers_current = 1 - self._buffers_current
        self._batches += 1
        return float(self._loss_value.numpy())

    def optimizer_step(self, lr: float) -> None:
        if self._batches == 0:
            raise OnnxkitError("optimizer_step before any train_step: there are no gradients to apply")
        self._steps += 1
        self._lr.update_inplace(np.asarray(lr, np.float32))
        self._step_value.update_inplace(np.asarray(self._steps, np.int64))
        grads = self._grads[(self._batches - 1) % 2 if self._accumulate else 0]
        key = ("optim", self._current, id(grads))
        if key not in self._bindings:
            b = self._optim.io_binding()
            now, then = self._state[self._current], self._state[1 - self._current]
            b.bind_ortvalue_input("lr", self._lr)
            b.bind_ortvalue_input("step", self._step_value)
            for p in self._trainable:
                b.bind_ortvalue_input(gradient_name(p), grads[p])
                for name in (p, *self._slots[p]):
                    b.bind_ortvalue_input(name, now[name])
                    b.bind_ortvalue_output(f"{name}.updated", then[name])
            self._bindings[key] = b
        self._optim.run_with_iobinding(self._bindings[key])
        self._current = 1 - self._current
        self._batches = 0

    def eval_step(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        b = self._eval.io_binding()
        state = self._current_values()
        for name in self._eval_inputs:
            if name in state:
                b.bind_ortvalue_input(name, state[name])
            else:
                b.bind_cpu_input(name, feeds[name])
        b.bind_output(self._eval.get_outputs()[0].name, "cpu")
        self._eval.run_with_iobinding(b)
        return b.get_outputs()[0].numpy()

    def _current_values(self) -> dict[str, ort.OrtValue]:
        values = {p: self._state[self._current][p] for p in self._trainable}
        values.update({n: self._buffer_set[self._buffers_current][n] for n in self._buffers})
        return values

    def parameters(self) -> dict[str, np.ndarray]:
        return {name: value.numpy().copy() for name, value in self._current_values().items()}

    def gradients(self) -> dict[str, np.ndarray]:
        grads = self._grads[(self._batches - 1) % 2 if self._accumulate else 0]
        return {p: grads[p].numpy().copy() for p in self._trainable}

    def set_gradients(self, gradients: Mapping[str, np.ndarray]) -> None:
        grads = self._grads[(self._batches - 1) % 2 if self._accumulate else 0]
        for p in self._trainable:
            grads[p].update_inplace(np.ascontiguousarray(gradients[p], dtype=np.float32))

    @property
    def steps(self) -> int:
        return self._steps

    def save_checkpoint(self, path: Path, *, optimizer_state: bool = True) -> None:
        state = self.parameters()
        if optimizer_state:
            current = self._state[self._current]
            state.update({OPTIMIZER_KEY + n: current[n].numpy() for p in self._trainable for n in self._slots[p]})
            state[STEP] = np.asarray(self._steps, np.int64)
        _save_state(path, state)


BACKEND = OnnxBackend()
