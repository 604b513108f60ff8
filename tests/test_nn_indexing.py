"""`tensor[key]` in the DSL is numpy's basic indexing (checked against numpy on ONNX Runtime's run, shapes
included, symbolic dims kept), `.view` is reshape, gradients pass it, and what it cannot take is one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from onnxkit import nn
from onnxkit.errors import OnnxkitError

X = np.arange(2 * 5 * 6 * 4, dtype=np.float32).reshape(2, 5, 6, 4)
KEYS = [
    (slice(None), -1), (0,), (Ellipsis, 1), (slice(None), slice(1, None, 2), None, 3),
    (slice(None), slice(None, None, -1)), (slice(None), slice(-3, -1), Ellipsis, slice(None, 2)), (None, Ellipsis),
    (slice(None), 2, slice(4, 1, -2)), (1, 4, 5, 3), (slice(None), slice(2, 99)),
    (slice(None), slice(-7, None, -1)), (slice(None), slice(-9, 0, -1)), (slice(None), slice(3, 1)),
]  # fmt: skip  # the last three are empty, as numpy's (ONNX's Slice clamps a negative step's start to a cell)


def _indexed(key, shape=("batch", 5, 6, 4)):  # noqa: ANN001, ANN202
    class Net(nn.Module):
        def forward(self, x):
            return x[key] * 1.0

    return nn.build(Net(), {"x": nn.Input(list(shape))})


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_indexing_is_numpys(key: tuple) -> None:
    model = _indexed(key)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": X})[0]
    want = X[key]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    dims = [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in model.graph.output[0].type.tensor_type.shape.dim]
    first = key[0]  # where the symbolic batch axis goes: dropped, after a new axis, or first
    if isinstance(first, int):
        assert dims == list(want.shape)
    elif first is None:
        assert dims == [1, "batch", *want.shape[2:]]
    else:
        assert dims == ["batch", *want.shape[1:]]


@pytest.mark.parametrize(("shape", "want"), [((0, -1), (2, -1)), ((-1,), (-1,)), (([2, -1],), (2, -1))])
def test_view_is_reshape(shape: tuple, want: tuple) -> None:
    class Net(nn.Module):
        def forward(self, x):
            return x.view(*shape) * 1.0

    model = nn.build(Net(), {"x": nn.Input(["batch", 5, 6, 4])})
    np.testing.assert_array_equal(ort.InferenceSession(model.SerializeToString()).run(None, {"x": X})[0],
                                  X.reshape(*want))


def test_the_last_step_of_an_lstm_trains(tmp_path) -> None:
    """out[:, -1], as a PyTorch port writes it: the gradient reaches the LSTM through the Slice and Squeeze."""
    from onnxkit.train import fit

    class RowReader(nn.Module):
        def __init__(self):
            self.rnn, self.fc = nn.LSTM(8, 32, batch_first=True), nn.Linear(32, 10)

        def forward(self, image):
            out, _ = self.rnn(image.view(0, 8, 8))
            return self.fc(out[:, -1])

    nn.manual_seed(0)
    model = nn.build(RowReader(), {"image": nn.Input(["batch", 1, 8, 8])}, output_names="logits")
    result = fit(model, "digits-images", tmp_path / "run", epochs=10, quiet=True, backend="onnx")
    assert result.metrics["test"]["accuracy"] > 0.7


@pytest.mark.parametrize(("key", "message"), [
    ((slice(None), np.array([0, 1])), r"indexing takes whole numbers, slices, \.\.\. and None, got ndarray; to "
                                      "pick rows by a tensor of ids, use ops.gather"),
    ((0, 0, 0, 0, 0), r"too many indices \(5\) for a 4-d tensor"),
    ((slice(None), 5), "index 5 is out of range for axis 1 of size 5"),
    ((slice(None, None, 0),), "a slice step cannot be zero"),
    ((Ellipsis, 0, Ellipsis), r"an index can have only one \.\.\."),
    ((slice(None), True), r"indexing takes whole numbers, slices, \.\.\. and None, got bool"),
    ((slice(None, None, -1),), r"a negative step over axis 0, whose size is known only at run time \(PyTorch refuses "
                               r"negative steps\)"),
])  # fmt: skip
def test_what_indexing_cannot_take_is_one_line(key: tuple, message: str) -> None:
    with pytest.raises(OnnxkitError, match=message):
        _indexed(key)


def test_chunk_and_split_are_pytorchs() -> None:
    """`x.chunk(n, dim)` and `x.split(size_or_sizes, dim)`, as PyTorch's (the last piece smaller, and chunk's count
    from ceil(size / n): 5 in 3 chunks is 2, 2, 1; 6 in 4 is 2, 2, 2), one Split each; they were AttributeErrors."""
    class Pieces(nn.Module):
        def forward(self, x):
            return (*x.chunk(3, dim=1), *x.chunk(4, 2), *x.split(3, dim=-1), *x.split([1, 4], 1), *x.split(4, 0))

    model = nn.build(Pieces(), {"x": nn.Input([2, 5, 6, 4])})
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": X})
    want = [*np.split(X, [2, 4], 1), *np.split(X, [2, 4], 2), *np.split(X, [3], 3), *np.split(X, [1], 1), X]
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    assert [n.op_type for n in model.graph.node].count("Split") == 5

    def build(fn):  # noqa: ANN001, ANN202
        class Net(nn.Module):
            def forward(self, x):
                return fn(x)[0]

        return nn.build(Net(), {"x": nn.Input(["batch", 5, 6, 4])})

    with pytest.raises(OnnxkitError, match=r"split sizes \[1, 3\] do not add up to dim 1's 5"):
        build(lambda x: x.split([1, 3], 1))
    with pytest.raises(OnnxkitError, match=r"chunk\(2, dim=0\) of \['batch', 5, 6, 4\] needs .* known before run"):
        build(lambda x: x.chunk(2, 0))
    assert build(lambda x: x.split([1, 1], 0)).graph.output[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_attention_heads_reshape_as_pytorch_code_writes_it() -> None:
    """`b, t, d = x.shape; x.view(b, t, h, -1).transpose(1, 2)` ... `.transpose(1, 2).contiguous().view(b, t, d)`,
    as PyTorch attention code: `.contiguous()` is nothing in a graph (it was an AttributeError) and the symbolic
    b and t are read at run time."""
    class Heads(nn.Module):
        def forward(self, x):
            b, t, d = x.shape
            heads = x.view(b, t, 2, -1).transpose(1, 2)  # [b, 2, t, d / 2]
            return heads.transpose(1, 2).contiguous().view(b, t, d), heads.contiguous().view(b, 2, -1)

    model = nn.build(Heads(), {"x": nn.Input(["batch", "seq", 6])})
    x = X[:, :, :, 0].copy()  # [2, 5, 6]
    back, flat = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(flat, x.reshape(2, 5, 2, 3).transpose(0, 2, 1, 3).reshape(2, 2, -1))


def test_squeeze_mean_and_sum_without_dims_are_pytorchs() -> None:
    """`x.squeeze()` drops every dim known to be 1 (a named one, the batch, stays), `x.mean()` and `x.sum()` reduce
    every dim, as PyTorch's; each was "missing 1 required positional argument: 'axes'"."""
    class NoDims(nn.Module):
        def forward(self, x):
            one = x[:, :1, None, :, 2:3]  # [batch, 1, 1, 6, 1]
            return one.squeeze(), x.mean(), x.sum(), x.mean(keepdims=True), x[:, 0].squeeze(), nn.ops.squeeze(x, 0)

    model = nn.build(NoDims(), {"x": nn.Input(["batch", 5, 6, 4])})
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": X[:1]})
    want = [X[:1, 0, :, 2], X[:1].mean(), X[:1].sum(), X[:1].mean(keepdims=True), X[:1, 0], X[0]]
    assert [g.shape for g in got] == [w.shape for w in want]  # (1, 6): the named batch of 1 kept
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_pytorchs_one_op_tensor_methods() -> None:
    """x.relu(), x.sigmoid(), x.softmax(dim), x.clamp(min, max), x.pow(2), 2 ** x, x.float(), ... as PyTorch's
    Tensor methods, one op each; they were AttributeErrors ('Tensor' object has no attribute 'relu')."""
    class Methods(nn.Module):
        def forward(self, x):
            return (x.relu(), x.sigmoid().tanh(), x.exp().log(), x.pow(2).sqrt(), x.neg(),
                    x.add(1).sub(2).mul(3).div(4), x.matmul(x.transpose(-1, -2)), x.softmax(-1),
                    x.log_softmax(dim=1), x.clamp(min=-1),
                    x.clamp(-1, 1), 2 ** x, x.float())

    x = np.linspace(-2, 2, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    got = ort.InferenceSession(nn.build(Methods(), {"x": nn.Input(["batch", 3, 4])}).SerializeToString()).run(
        None, {"x": x})
    e = np.exp(x)
    want = [np.maximum(x, 0), np.tanh(1 / (1 + np.exp(-x))), x, np.abs(x), -x, (x + 1 - 2) * 3 / 4,
            x @ x.transpose(0, 2, 1), e / e.sum(-1, keepdims=True), np.log(e / e.sum(1, keepdims=True)),
            np.maximum(x, -1), np.clip(x, -1, 1), 2**x, x]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_in_place_writes_say_what_to_write_instead() -> None:
    """`x.add_(1)`, `x.relu_()` and `x[:, 0] = 0` cannot change a traced tensor: each is one error saying what to
    write (they were "no attribute 'add_'" and "does not support item assignment"); `x += y` rebinds, as it works."""
    def build(fn):  # noqa: ANN001, ANN202
        class Net(nn.Module):
            def forward(self, x):
                return fn(x)

        return nn.build(Net(), {"x": nn.Input(["batch", 3])})

    with pytest.raises(AttributeError, match=r"in-place add_\(\) cannot change a traced tensor; write x = x.add\("):
        build(lambda x: x.add_(1))
    with pytest.raises(AttributeError, match=r"in-place unsqueeze_\(\) .*; write x = x.unsqueeze\(...\)"):
        build(lambda x: x.unsqueeze_(0))
    with pytest.raises(TypeError, match=r"cannot be assigned into \(x\[...\] = v"):
        build(lambda x: x.__setitem__((slice(None), 0), 0.0))
    with pytest.raises(AttributeError, match=r"^'Tensor' object has no attribute 'nothing'$"):
        build(lambda x: x.nothing)
    typo = "import numpy as np; from onnxkit import nn; nn.Tensor('x', np.dtype('float32'), (2,)).reshap"
    typo = subprocess.run([sys.executable, "-c", typo], capture_output=True, text=True)
    assert typo.stderr.strip().endswith("has no attribute 'reshap'. Did you mean: 'reshape'?")  # Python's own kept

    def added(x):  # noqa: ANN001, ANN202
        y = x
        y += 1.0
        return x, y

    model = build(added)
    x = np.ones((2, 3), np.float32)
    a, b = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(b, x + 1)
