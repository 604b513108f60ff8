"""nn.Buffer values are recorded in the model's metadata and never trained, on every backend."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxkit import nn
from onnxkit.metadata import metadata, set_metadata
from onnxkit.nn.build import BUFFERS_KEY
from onnxkit.train import fit
from onnxkit.train.training_form import find_parameters

pytestmark = pytest.mark.training


class Rescaled(nn.Module):
    """Fixed feature scaling (Buffers), a BatchNorm (running statistics are Buffers too) and a head."""

    def __init__(self) -> None:
        self.mean = nn.Buffer(np.array([5.8, 3.0, 3.8, 1.2], np.float32))
        self.std = nn.Buffer(np.array([0.8, 0.4, 1.8, 0.8], np.float32))
        self.fc = nn.Linear(4, 8)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(nn.ops.relu(self.norm(self.fc((x - self.mean) / self.std))))


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.fixture
def model() -> onnx.ModelProto:
    nn.manual_seed(0)
    return nn.build(Rescaled(), {"x": nn.Input(["batch", 4])}, output_names=["logits"])


def test_the_dsl_records_buffers_in_metadata(model):
    assert json.loads(metadata(model)[BUFFERS_KEY]) == ["mean", "std", "norm.running_mean", "norm.running_var"]
    params = find_parameters(model)
    assert "mean" not in params.names and "std" not in params.names
    assert params.buffers == ["norm.running_mean", "norm.running_var"]  # updated by BatchNorm, not by gradients
    set_metadata(model, {BUFFERS_KEY: []})  # without the record, a used float tensor looks like a weight
    assert {"mean", "std"} <= set(find_parameters(model).parameters)


def test_training_leaves_buffers_bit_identical(model, tmp_path):
    before = weights(model)
    result = fit(model, "iris", tmp_path / "run", lr=0.05, steps=6, batch_size=16, evaluate_test=False,
                 standardize=False)  # it scales its inputs itself (buffers mean, std)
    after = weights(onnx.load(result.model_path))
    assert "mean" not in result.trainable and "std" not in result.trainable
    for name in ("mean", "std"):
        assert after[name].tobytes() == before[name].tobytes()
    assert not np.array_equal(after["fc.weight"], before["fc.weight"])  # the rest trained
    assert not np.array_equal(after["norm.running_mean"], before["norm.running_mean"])  # statistics updated
    assert json.loads(metadata(onnx.load(result.model_path))[BUFFERS_KEY]) == json.loads(metadata(model)[BUFFERS_KEY])


def _marked(model: onnx.ModelProto, marks: dict[str, tuple[str, str]]) -> onnx.ModelProto:
    """`model` with the value_info marks PyTorch's dynamo exporter writes for initializers."""
    for name, (key, value) in marks.items():
        info = onnx.helper.make_empty_tensor_value_info(name)
        info.metadata_props.add(key=key, value=value)
        model.graph.value_info.append(info)
    return model


def test_buffers_and_folded_constants_of_a_pytorch_export_are_not_trained(model):
    # a dynamo export's buffers (a scaler's mean) and constants it computed (a causal mask) were
    # trained as weights, where PyTorch trains neither
    set_metadata(model, {BUFFERS_KEY: []})
    kind, folded = "pkg.torch.export.graph_signature.InputSpec.kind", "pkg.onnxscript.optimizer.folded_from"
    _marked(model, {"mean": (kind, "BUFFER"), "std": (folded, "['full', 'triu']"), "fc.weight": (kind, "PARAMETER"),
                    "norm.running_mean": (kind, "BUFFER"), "norm.running_var": (kind, "BUFFER")})
    params = find_parameters(model)
    assert "mean" not in params.names and "std" not in params.names
    assert "fc.weight" in params.parameters and "head.bias" in params.parameters  # unmarked: as before
    assert params.buffers == ["norm.running_mean", "norm.running_var"]  # BatchNorm still updates its statistics


def test_a_weight_the_exporter_folded_still_trains(model):
    # onnxscript's optimizer folds Transpose(weight) of every Linear on 3-D inputs (MatMul(x, W^T)) into a
    # new initializer, marked folded_from the parameter: such weights were kept fixed, so a PyTorch
    # transformer fine-tuned only its biases and norms. The graph's signature names the parameters.
    set_metadata(model, {BUFFERS_KEY: []})
    kind, folded = "pkg.torch.export.graph_signature.InputSpec.kind", "pkg.onnxscript.optimizer.folded_from"
    model.graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value=(
        "\n# inputs\np_fc_weight: PARAMETER target='fc.weight'\np_fc_bias: PARAMETER target='fc.bias'\n"
        "p_head_kernel: PARAMETER target='head.kernel'\nb_mean: BUFFER target='mean' persistent=True\n"
        "x: USER_INPUT\n\n# outputs\nlogits: USER_OUTPUT\n"))
    _marked(model, {"head.weight": (folded, "['head.kernel']"),  # the transposed parameter head.kernel
                    "std": (folded, "['full', 'triu']"),  # computed at export from no parameter
                    "mean": (kind, "BUFFER"), "head.bias": (folded, "['mean']")})  # folded from a buffer only
    params = find_parameters(model)
    assert "head.weight" in params.parameters
    assert "std" not in params.names and "mean" not in params.names and "head.bias" not in params.names
