"""The DSL's LSTM and GRU compute PyTorch's equations (a numpy reference written from PyTorch's documented
formulas, on ONNX Runtime's run of the built model), return what PyTorch's return, train through `fit`, and
refuse wrong inputs in one line; nodes whose values forward drops are left out of the model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxkit import nn
from onnxkit.errors import OnnxkitError

TORCH_GATES = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2]}  # PyTorch's gate k (LSTM i f g o, GRU r z n) is ONNX's [k]
SEQ, BATCH, SIZE, HIDDEN, LAYERS = 5, 3, 4, 6, 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _torch_order(kind: str, w: np.ndarray) -> list[np.ndarray]:
    """A [gates * hidden, ...] ONNX block as PyTorch's gates, in PyTorch's order."""
    blocks = np.split(w.astype(np.float64), len(TORCH_GATES[kind]), axis=0)
    return [blocks[k] for k in TORCH_GATES[kind]]


def _cell(kind: str, x: np.ndarray, h: np.ndarray, c: np.ndarray, w: np.ndarray, r: np.ndarray,
          b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of PyTorch's LSTM / GRU equations (torch.nn.LSTM and torch.nn.GRU docs)."""
    half = b.shape[0] // 2
    wi, wh, bi, bh = (_torch_order(kind, a) for a in (w, r, b[:half], b[half:]))
    pre = [x @ wi[k].T + bi[k] for k in range(len(wi))]
    hid = [h @ wh[k].T + bh[k] for k in range(len(wh))]
    if kind == "LSTM":
        i, f, g, o = _sigmoid(pre[0] + hid[0]), _sigmoid(pre[1] + hid[1]), np.tanh(pre[2] + hid[2]), \
            _sigmoid(pre[3] + hid[3])
        c = f * c + i * g
        return o * np.tanh(c), c
    rg, z = _sigmoid(pre[0] + hid[0]), _sigmoid(pre[1] + hid[1])
    n = np.tanh(pre[2] + rg * hid[2])
    return (1 - z) * n + z * h, c


def _reference(kind: str, layer: nn.Module, x: np.ndarray, h0: np.ndarray, c0: np.ndarray) -> list[np.ndarray]:
    """PyTorch's stacked, bidirectional recurrence over x [seq, batch, size]: output, h_n (and c_n)."""
    hs, cs = [], []
    for k in range(LAYERS):
        runs = []
        for d in range(2):
            w, r, b = (getattr(layer, f"{name}_l{k}").value[d] for name in ("weight_ih", "weight_hh", "bias"))
            h, c = h0[2 * k + d].astype(np.float64), c0[2 * k + d].astype(np.float64)
            steps = range(len(x)) if d == 0 else reversed(range(len(x)))
            ys = [None] * len(x)
            for t in steps:
                h, c = _cell(kind, x[t], h, c, w, r, b)
                ys[t] = h
            runs.append(np.stack(ys))
            hs.append(h)
            cs.append(c)
        x = np.concatenate(runs, axis=-1)
    return [x, np.stack(hs), np.stack(cs)][:3 if kind == "LSTM" else 2]


class _Stack(nn.Module):
    def __init__(self, kind: str, batch_first: bool):
        self.kind = kind
        self.rnn = getattr(nn, kind)(SIZE, HIDDEN, num_layers=LAYERS, batch_first=batch_first, bidirectional=True)

    def forward(self, x, h0, c0):
        if self.kind == "LSTM":
            out, (h, c) = self.rnn(x, (h0, c0))
            return out, h, c
        out, h = self.rnn(x, h0)
        return out, h, c0


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_stacked_bidirectional_layers_compute_pytorchs_equations(kind: str, batch_first: bool) -> None:
    nn.manual_seed(1)
    stack = _Stack(kind, batch_first)
    x_shape = ["batch", SEQ, SIZE] if batch_first else [SEQ, "batch", SIZE]
    state = nn.Input([2 * LAYERS, "batch", HIDDEN])
    model = nn.build(stack, {"x": nn.Input(x_shape), "h0": state, "c0": state}, output_names=["out", "h", "c"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SEQ, BATCH, SIZE)).astype(np.float32)
    h0, c0 = (rng.standard_normal((2 * LAYERS, BATCH, HIDDEN)).astype(np.float32) for _ in range(2))
    feeds = {"x": x.transpose(1, 0, 2) if batch_first else x, "h0": h0, "c0": c0}
    got = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    want = _reference(kind, stack.rnn, x, h0, c0)
    if batch_first:
        want[0] = want[0].transpose(1, 0, 2)
    for g, w in zip(got, want, strict=False):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-6)
    assert [n.op_type for n in model.graph.node].count(kind) == LAYERS


def test_states_are_optional_and_an_unused_one_leaves_no_node() -> None:
    class Last(nn.Module):
        def __init__(self):
            self.rnn = nn.LSTM(8, 16, num_layers=2)

        def forward(self, x):
            out, _ = self.rnn(x)  # h_n and c_n dropped: their Concats are left out
            return out

    model = nn.build(Last(), {"x": nn.Input([7, "batch", 8])})
    assert [n.op_type for n in model.graph.node if n.op_type not in ("Constant",)] == \
        ["LSTM", "Transpose", "Reshape", "LSTM", "Transpose", "Reshape"]
    out = ort.InferenceSession(model.SerializeToString()).run(None, {"x": np.ones((7, 2, 8), np.float32)})[0]
    assert out.shape == (7, 2, 16)


def test_a_dropped_layer_result_leaves_its_weights_out() -> None:
    class Dropped(nn.Module):
        def __init__(self):
            self.used, self.unused = nn.Linear(4, 2), nn.Linear(4, 3)

        def forward(self, x):
            self.unused(x)
            return self.used(x)

    with pytest.warns(nn.UnusedLayers, match=r"^layers whose results forward drops are left out of the model: "
                                             r"unused \(15 weights\)$"):
        model = nn.build(Dropped(), {"x": nn.Input(["batch", 4])})
    assert sorted(t.name for t in model.graph.initializer) == ["used.bias", "used.weight"]
    onnx.checker.check_model(model, full_check=True)

    class DroppedInput(nn.Module):
        def forward(self, x, y):
            nn.ops.relu(y)
            return nn.ops.relu(x)

    with pytest.raises(OnnxkitError, match="input 'y' feeds no output: forward computes with it but returns nothing "
                                           "that depends on it"):
        nn.build(DroppedInput(), {"x": nn.Input(["batch", 4]), "y": nn.Input(["batch", 4])})


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_row_reader_trains_on_digits(kind: str, tmp_path) -> None:
    """Each digit's 8 rows as 8 steps (batch_first): 10 epochs train it from 10% to about 80%."""
    from onnxkit.train import fit

    class RowReader(nn.Module):
        def __init__(self):
            self.rnn = getattr(nn, kind)(8, 32, batch_first=True)
            self.fc = nn.Linear(32, 10)

        def forward(self, image):
            out, _ = self.rnn(nn.ops.reshape(image, [0, 8, 8]))
            return self.fc(nn.ops.reshape(nn.ops.slice(out, [-1], [8], [1]), [0, -1]))

    nn.manual_seed(0)
    model = nn.build(RowReader(), {"image": nn.Input(["batch", 1, 8, 8])}, output_names="logits")
    result = fit(model, "digits-images", tmp_path / "run", epochs=10, quiet=True, backend="onnx")
    assert result.metrics["test"]["accuracy"] > 0.7
    assert [n.op_type for n in onnx.load(result.model_path).graph.node].count(kind) == 1  # ORT's kernel at inference


def test_wrong_inputs_are_one_line_errors() -> None:
    def build(forward, shape):
        class Net(nn.Module):
            def __init__(self):
                self.rnn = nn.LSTM(8, 4, batch_first=True)

        Net.forward = forward
        return nn.build(Net(), {"x": nn.Input(shape)})

    with pytest.raises(OnnxkitError, match=r"LSTM expects \[batch, seq, input_size\] with input_size 8, got shape "
                                           r"\['batch', 5, 3\]"):
        build(lambda self, x: self.rnn(x)[0], ["batch", 5, 3])
    with pytest.raises(OnnxkitError, match=r"LSTM takes its initial states as a pair \(h0, c0\), got Tensor"):
        build(lambda self, x: self.rnn(x, nn.ops.transpose(x, [1, 0, 2]))[0], ["batch", 5, 8])
    with pytest.raises(TypeError, match="LSTM.*proj_size"):
        nn.LSTM(8, 4, proj_size=2)
    with pytest.raises(OnnxkitError, match="GRU: hidden_size must be a positive integer, got 0"):
        nn.GRU(8, 0)
    for states, wrong in ((1, 4), (2, 5)):  # one layer's states for two; another hidden size
        class Stacked(nn.Module):
            def __init__(self):
                self.rnn = nn.GRU(8, 4, num_layers=2)

            def forward(self, x, h0):
                return self.rnn(x, h0)[0]

        with pytest.raises(OnnxkitError, match=r"GRU's h0 is \[num_layers \* num_directions, batch, hidden_size\] = "
                                               rf"\[2, 3, 4\], got \[{states}, 3, {wrong}\]"):
            nn.build(Stacked(), {"x": nn.Input([5, 3, 8]), "h0": nn.Input([states, 3, wrong])})


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_pytorch_state_dict_loads_in_its_layout(kind: str) -> None:
    """PyTorch's state dict of a stacked bidirectional LSTM/GRU (`weight_ih_l0` [gates × hidden, in], `_reverse`,
    `bias_ih_l0`, `bias_hh_l0`, PyTorch's gate order) loads strictly into the DSL's layer, to the weights that make
    PyTorch's equations above; the same names with PyTorch's shapes were refused ('check ... the model options')."""
    nn.manual_seed(1)
    source = _Stack(kind, batch_first=True).rnn
    torch_state = {}
    for k in range(LAYERS):
        for d, suffix in enumerate(["", "_reverse"]):
            for name in ("weight_ih", "weight_hh"):
                torch_state[f"{name}_l{k}{suffix}"] = np.concatenate(
                    _torch_order(kind, getattr(source, f"{name}_l{k}").value[d])).astype(np.float32)
            bias = getattr(source, f"bias_l{k}").value[d]
            for half, name in enumerate(("bias_ih", "bias_hh")):
                part = np.split(bias, 2)[half]
                torch_state[f"{name}_l{k}{suffix}"] = np.concatenate(_torch_order(kind, part)).astype(np.float32)
    nn.manual_seed(2)
    target = _Stack(kind, batch_first=True)
    target.load_state_dict({f"rnn.{name}": value for name, value in torch_state.items()})
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(target.rnn.state_dict()[name], value)
    target.rnn.load_state_dict(source.state_dict())  # its own layout still loads as it is
