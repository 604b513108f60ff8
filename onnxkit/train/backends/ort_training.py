"""The `ort-training` backend: ONNX Runtime's training API (onnxruntime-training 1.19.2, the
last release; its own environment, `make venv-ort`). The only module that touches
`onnxruntime.training`.

- `import onnxruntime.training` runs a package `__init__` that imports torch; the
  `onnxblock` and `api` submodules do not need it, so we register an empty
  package module with the right `__path__` and import those directly. We build
  artifacts with `onnxblock` ourselves: `onnxruntime.training.artifacts` imports
  `onnxruntime.tools`, which imports torch whenever it is installed.
- Gradient-graph building logs at INFO through session options it creates
  itself; we make those options quiet.
- ONNX Runtime's generated eval model is invalid for BatchNorm in training mode,
  so we replace it with our own: the inference form computing the chosen
  output, its weights fed from the training state by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxkit.errors import OnnxkitError
from onnxkit.files import atomic_path, save_model, write_text
from onnxkit.runtime.session import error_reason, gpu_count
from onnxkit.train.backend import Backend, TrainingProblem, TrainingSession, step_failure
from onnxkit.train.backends._ort_legalize import legalize, unsupported_ops
from onnxkit.train.optim import Optimizer
from onnxkit.train.training_form import eval_form

TRAINING_MODEL = "training_model.onnx"
EVAL_MODEL = "eval_model.onnx"
OPTIMIZER_MODEL = "optimizer_model.onnx"
INITIAL_CHECKPOINT = "checkpoint"
SIGNATURE = "signature.json"
QUIET = 3  # ORT severity: errors only
# onnxkit without its own onnxruntime and onnx, the legacy build and the onnx it loads in their place
ORT_INSTALL = ("pip install --no-deps onnxkit, then pip install onnxruntime-training-cpu==1.19.2 'onnx==1.17.*' "
               "and onnxkit's other dependencies")


def _import_training() -> tuple[types.ModuleType, types.ModuleType]:
    """`onnxruntime.training.{onnxblock, api}` without the package `__init__` (it imports torch).

    We also skip `onnxruntime.training.artifacts`: it imports `onnxruntime.tools`,
    whose `__init__` imports torch whenever torch is installed.
    """
    name = "onnxruntime.training"
    if name not in sys.modules:
        spec = importlib.util.find_spec("onnxruntime")
        root = Path(spec.origin).parent / "training" if spec and spec.origin else None
        if root is None or not (root / "onnxblock").is_dir():
            raise OnnxkitError(
                "the ort-training backend needs onnxruntime-training 1.19.2, which this environment lacks; install "
                f"it in a Python 3.11 environment of its own ({ORT_INSTALL}; or `make venv-ort` in a checkout: "
                ".venv-ort/bin/onnxkit), or use the default backend (backend=onnx)"
            )
        package = types.ModuleType(name)
        package.__path__ = [str(root)]
        package.__package__ = name
        sys.modules[name] = package
    api = importlib.import_module(f"{name}.api")
    graph_utils = importlib.import_module(f"{name}.onnxblock._training_graph_utils")
    graph_utils.SessionOptions = _quiet_session_options  # its gradient-graph builder logs at INFO otherwise
    ort.set_default_logger_severity(QUIET)
    return importlib.import_module(f"{name}.onnxblock"), api


def _quiet_session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = QUIET
    return options


onnxblock, api = _import_training()
MAX_IR_VERSION = 10  # the newest ONNX Runtime 1.19.2 loads


def _cuda_problem() -> str | None:
    """Why CUDA training cannot run here, or None when it can."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (
            "this environment has the CPU-only training package (onnxruntime-training-cpu); "
            "GPU training needs onnxruntime-training (CUDA 11.8, Python 3.11) instead of it"
        )
    if gpu_count() == 0:
        return "no NVIDIA GPU is visible (no CUDA driver or no device)"
    return None


class _TrainingBlock(onnxblock.TrainingBlock):
    """The objective is already in the graph: ORT builds the gradient graph from `total`
    and also outputs the data loss."""

    def __init__(self, problem: TrainingProblem) -> None:
        super().__init__()
        self.objective = problem.objective

    def build(self, *graph_outputs: str) -> str | tuple[str, str]:
        o = self.objective
        return o.total if o.total == o.loss else (o.total, o.loss)


def _optimizer_block(problem: TrainingProblem) -> onnxblock.ForwardBlock:
    opt = problem.optimizer
    clip = onnxblock.optim.ClipGradNorm(problem.clip_grad_norm) if problem.clip_grad_norm else None
    if opt.name == "adamw":
        return onnxblock.optim.AdamW(betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay, clip_grad=clip)
    return onnxblock.optim.SGD(clip_grad=clip)


_UNREGISTERED = re.compile(r"gradient builder has not been registered: (\S+) for node (.*?)\s*$", re.M)


def _explain(error: RuntimeError) -> OnnxkitError:
    text = str(error).strip()
    match = _UNREGISTERED.search(text)
    if match:
        return OnnxkitError(
            f"op {match.group(1)} (node {match.group(2)!r}) has no gradient in the ort-training backend; keep the "
            "parameters before it frozen (freeze / train_only), or use the default backend (backend=onnx)",
            params=["freeze", "train_only"]
        )
    return OnnxkitError(
        f"ONNX Runtime could not build the training graph: {error_reason(error)[:300]}; "
        "run with --debug for the full error, or freeze the part of the model it fails on"
    )


STEPS = "onnxkit.steps"  # checkpoint property: optimizer steps taken


class OrtSession(TrainingSession):
    def __init__(self, directory: Path, device: str, checkpoint: Path | None, threads: int | None) -> None:
        path = checkpoint or directory / INITIAL_CHECKPOINT
        if not path.is_file():
            raise OnnxkitError(f"{path}: no such checkpoint; is this a training run directory?")
        try:
            self._state = api.CheckpointState.load_checkpoint(path)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            raise OnnxkitError(f"{path}: not a readable checkpoint ({e}); resume from another run") from e
        signature = json.loads((directory / SIGNATURE).read_text())
        self._labels, self._data_loss_index = signature["labels"], signature["data_loss_index"]
        options = _quiet_session_options()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._module = api.Module(
            directory / TRAINING_MODEL, self._state, directory / EVAL_MODEL, device=device, session_options=options
        )
        self._optimizer = api.Optimizer(directory / OPTIMIZER_MODEL, self._module)
        self._train_inputs = self._module.input_names()
        self._eval_inputs = self._module.eval().input_names()
        self._module.train()
        properties = {k: v for k, v in self._state.properties}
        self._steps = int(properties.get(STEPS, 0))

    def _args(self, names: list[str], feeds: Mapping[str, np.ndarray], labels: np.ndarray) -> list[np.ndarray]:
        return [labels if n == self._labels else feeds[n] for n in names]

    def train_step(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray, weight: float = 1.0) -> float:
        if weight != 1:
            raise OnnxkitError("the ort-training backend cannot weigh a batch's gradient; use the onnx backend")
        try:
            out = self._module(*self._args(self._train_inputs, feeds, labels))
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            raise step_failure("training step", e) from e
        return float(out[self._data_loss_index] if isinstance(out, tuple) else out)

    def optimizer_step(self, lr: float) -> None:
        self._optimizer.set_learning_rate(lr)
        try:
            self._optimizer.step()
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            raise step_failure("optimizer step", e) from e
        self._module.lazy_reset_grad()
        self._steps += 1

    def eval_step(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        self._module.eval()
        try:
            return self._module(*[feeds[n] for n in self._eval_inputs])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            raise step_failure("evaluation", e) from e
        finally:
            self._module.train()

    def parameters(self) -> dict[str, np.ndarray]:
        """Copies: Parameter.data is a view of ORT's buffer, which later optimizer steps overwrite in place."""
        return {name: p.data.copy() for name, p in self._state.parameters}

    def gradients(self) -> dict[str, np.ndarray]:
        """Read-only here: ORT-training cannot take gradients back (`set_gradients`)."""
        return {name: p.grad for name, p in self._state.parameters if p.requires_grad}

    @property
    def steps(self) -> int:
        return self._steps

    def save_checkpoint(self, path: Path, *, optimizer_state: bool = True) -> None:
        self._state.properties[STEPS] = self._steps
        with atomic_path(path) as tmp:
            api.CheckpointState.save_checkpoint(self._state, tmp, include_optimizer_state=optimizer_state)


class OrtTrainingBackend(Backend):
    name = "ort-training"

    def unsupported(self, model: onnx.ModelProto, trainable, loss: str) -> list[tuple[str, str]]:
        return unsupported_ops(model, trainable, loss)

    def refuse_optimizer(self, optimizer: Optimizer, clip_grad_norm: float | None) -> None:
        name, options = optimizer.name, optimizer.options()
        plain_sgd = name == "sgd" and not (options["momentum"] or options["nesterov"])
        if not (plain_sgd or (name == "adamw" and not options["amsgrad"])):
            if name == "sgd":
                what = "sgd with momentum"
            elif name in ("adam", "adamw") and options["amsgrad"]:
                what = f"{name} with amsgrad"
            else:  # 'with these options' read as if an option given were to blame, also for a plain rmsprop
                what = "adam (adamw with weight_decay=0 is adam)" if name == "adam" else name
            raise OnnxkitError(
                f"the ort-training backend runs only adamw without amsgrad and sgd without momentum, not {what}; "
                f"use the default backend (backend=onnx)"
            )

    def l2_in_objective(self, optimizer: Optimizer) -> float:
        return optimizer.options()["weight_decay"] if optimizer.name == "sgd" else 0.0  # its SGD cannot decay

    def resolve_device(self, device: str) -> str:
        if device == "cpu":
            return "cpu"
        if device == "auto":
            return "cuda" if _cuda_problem() is None else "cpu"
        match = re.fullmatch(r"cuda(?::(\d+))?", device)
        if not match:
            raise OnnxkitError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
        problem = _cuda_problem()
        if problem:
            raise OnnxkitError(f"cannot train on {device}: {problem}; or use device=cpu")
        index = int(match.group(1) or 0)
        if index >= gpu_count():
            raise OnnxkitError(f"cannot train on {device}: only {gpu_count()} GPU(s) visible (cuda:0..)")
        return device

    def build(self, problem: TrainingProblem, directory: Path) -> None:
        block = _TrainingBlock(problem)
        for name in problem.trainable:
            block.requires_grad(name)
        for name in (*problem.buffers, *problem.frozen):
            block.requires_grad(name, False)
        model = legalize(problem.objective.model)
        try:
            with onnxblock.base(model):
                block(*[o.name for o in model.graph.output])
                training_model, _ = block.to_model_proto()
        except RuntimeError as e:
            raise _explain(e) from e
        save_model(training_model, directory / TRAINING_MODEL)
        del training_model
        onnxblock.save_checkpoint(block.parameters(), directory / INITIAL_CHECKPOINT)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        with onnxblock.empty_base(opset_version=opset):
            optimizer = _optimizer_block(problem)
            optimizer(block.parameters())
            optimizer_model = optimizer.to_model_proto()
        # onnxblock writes Hugging Face's AdamW (adam_mode 1: eps before the bias correction, decay after the step);
        # torch.optim.AdamW's is mode 0
        for node in (n for n in optimizer_model.graph.node if n.op_type == "AdamWOptimizer"):
            for attribute in (a for a in node.attribute if a.name == "adam_mode"):
                attribute.i = 0
        optimizer_model.ir_version = min(optimizer_model.ir_version, MAX_IR_VERSION)
        save_model(optimizer_model, directory / OPTIMIZER_MODEL)
        weights = [*problem.trainable, *problem.buffers, *problem.frozen]
        save_model(eval_form(problem.eval_model, problem.output, weights), directory / EVAL_MODEL)
        data_loss_index = 0 if problem.objective.total == problem.objective.loss else 1
        signature = {"labels": problem.labels_name, "data_loss_index": data_loss_index}
        write_text(directory / SIGNATURE, json.dumps(signature))

    def open(
        self, directory: Path, *, device: str = "cpu", checkpoint: Path | None = None, threads: int | None = None
    ) -> TrainingSession:
        return OrtSession(directory, device, checkpoint, threads)

    def checkpoint_parameters(self, path: Path) -> dict[str, np.ndarray]:
        state = api.CheckpointState.load_checkpoint(path)
        return {name: p.data for name, p in state.parameters}

    def inference(
        self, model: onnx.ModelProto, *, device: str = "cpu", threads: int | None = None
    ) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        kind, _, index = device.partition(":")
        providers: list = ["CPUExecutionProvider"]
        if kind == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(index or 0)}))
        session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        return lambda feeds: session.run(None, dict(feeds))


BACKEND = OrtTrainingBackend()
