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


def write_csv(path, header: list[str] | None, columns: list[list]):
    """A CSV of `columns` (each a list of cells) under `header` (none: no header row); returns `path`."""
    rows = [",".join(map(str, row)) for row in zip(*columns, strict=True)]
    path.write_text("\n".join(([",".join(header)] if header else []) + rows) + "\n")
    return path


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


def sklearn_style_classifier(classes: list[int] | list[str], *, zipmap: bool = True) -> onnx.ModelProto:
    """A linear classifier over 2 features laid out as skl2onnx converts scikit-learn's: ai.onnx.ml's
    LinearClassifier (class `k` scores `x @ coefficients[k]`), an L1 Normalizer to probabilities and,
    with `zipmap`, a ZipMap to one {class: probability} map per row; outputs the label ([N] int64 or
    string) and the probabilities. Class 0 wins for x = (1, 0), class 1 for (0, 1), class 2 for (-1, -1)."""
    from onnx import TensorProto, helper

    named = isinstance(classes[0], str)
    labels = {"classlabels_strings" if named else "classlabels_ints": classes}
    key = label_type = TensorProto.STRING if named else TensorProto.INT64
    nodes = [
        helper.make_node("LinearClassifier", ["X"], ["label", "scores"], domain="ai.onnx.ml",
                         coefficients=[4.0, 0.0, 0.0, 4.0, -4.0, -4.0], intercepts=[0.0, 0.0, 0.0],
                         post_transform="SOFTMAX", **labels),
        helper.make_node("Normalizer", ["scores"], ["probabilities"], domain="ai.onnx.ml", norm="L1"),
    ]
    probabilities = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(classes)])
    if zipmap:
        nodes.append(helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml",
                                      **{"classlabels_strings" if named else "classlabels_int64s": classes}))
        maps = helper.make_sequence_type_proto(
            helper.make_map_type_proto(key, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
        probabilities = helper.make_value_info("output_probability", maps)
    features = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph(nodes, "sklearn-style", [features],
                              [helper.make_tensor_value_info("label", label_type, [None]), probabilities])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    return model
