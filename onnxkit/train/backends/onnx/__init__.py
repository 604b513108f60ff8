"""The `onnx` backend: onnxkit's own gradient and optimizer graphs (`onnxkit.autodiff`,
`onnxkit.train.optim`), run as ordinary InferenceSessions on any ONNX Runtime build and
execution provider. `artifacts` builds the graphs, `session` runs them, `checkpoint`
stores the state as safetensors."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from onnxkit.autodiff import missing_rules
from onnxkit.errors import OnnxkitError
from onnxkit.runtime.session import (
    GPU_INSTALL,
    create_session,
    device_spec,
    gpu_count,
    ort,
    parse_device,
    providers_for,
    session_options,
)
from onnxkit.train.backend import Backend, TrainingProblem, TrainingSession
from onnxkit.train.backends.onnx.artifacts import write_artifacts
from onnxkit.train.backends.onnx.checkpoint import load_state, model_tensors
from onnxkit.train.backends.onnx.session import OnnxSession


class OnnxBackend(Backend):
    name = "onnx"
    sets_gradients = True
    keeps_padding_rows = True
    unbiased_running_var = True

    def unsupported(self, model: onnx.ModelProto, trainable: Sequence[str], loss: str) -> list[tuple[str, str]]:
        return missing_rules(model, list(trainable), loss)

    def resolve_device(self, device: str) -> str:
        kind, index = device_spec(device)  # the form first: 'cuda:x' is not a missing GPU
        if kind == "cuda":
            problem = _cuda_problem(index)
            if problem:
                raise OnnxkitError(f"cannot train on {device}: {problem}; or use device=cpu")
        kind, number = parse_device(device)
        return f"cuda:{number}" if kind == "cuda" else "cpu"

    def build(self, problem: TrainingProblem, directory: Path) -> None:
        write_artifacts(problem, directory)

    def open(
        self, directory: Path, *, device: str = "cpu", checkpoint: Path | None = None, threads: int | None = None
    ) -> TrainingSession:
        return OnnxSession(directory, device, checkpoint, threads)

    def checkpoint_parameters(self, path: Path) -> dict[str, np.ndarray]:
        return model_tensors(load_state(path))

    def inference(
        self, model: onnx.ModelProto, *, device: str = "cpu", threads: int | None = None
    ) -> Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]:
        options, providers = session_options(threads, "all"), providers_for(*parse_device(device))
        session = create_session(model.SerializeToString(), options, providers)
        return lambda feeds: session.run(None, dict(feeds))


def _cuda_problem(index: int) -> str | None:
    """Why the CUDA execution provider cannot run on GPU `index` here, or None."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} here has no CUDA execution provider; install "
                f"onnxruntime-gpu in place of onnxruntime ({GPU_INSTALL})")
    count = gpu_count()
    if count <= index:
        return f"only {count} NVIDIA GPU(s) are visible" if count else "no NVIDIA GPU or driver is visible"
    return None


BACKEND = OnnxBackend()
