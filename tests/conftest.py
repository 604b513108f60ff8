"""Shared test helpers: run the CLI in-process, run a model in ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Call `onnxkit ARGS...` in-process; returns exit code, stdout and stderr."""
    from onnxkit.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def has_ort_training() -> bool:
    """Whether this environment has onnxruntime-training (the ort-training backend's package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("onnxruntime")
    return bool(spec and spec.origin and (Path(spec.origin).parent / "training" / "onnxblock").is_dir())


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of `model` in a plain onnxruntime CPU session."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)
