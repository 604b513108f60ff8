"""Each DSL layer: symbolic output shape, parameter names and counts, and numerics
(ONNX Runtime against an independent numpy reference, within 1e-5)."""

from __future__ import annotations

import inspect
import json
import math
import os
import re

import numpy as np
import onnx
import pytest
from conftest import ort_run

from onnxkit import nn
from onnxkit.errors import OnnxkitError

RNG = np.random.default_rng(42)
erf = np.vectorize(math.erf)


def build_one(layer: nn.Module, **inputs: nn.Input) -> onnx.ModelProto:
    model = nn.build(layer, inputs, output_names=["y"])
    onnx.checker.check_model(model, full_check=True)  # the final model, weights included
    return model


def out_shape(model: onnx.ModelProto) -> list[int | str]:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def params(layer: nn.Module) -> dict[str, tuple[int, ...]]:
    layer.assign_names()
    return {n: p.shape for n, p in layer.named_arrays()}


def randomize(layer: nn.Module) -> None:
    for _, p in layer.named_arrays():
        p.value = RNG.normal(0, 0.5, p.shape).astype(np.float32)


def close(a: np.ndarray, b: np.ndarray, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# -- numpy references ----------------------------------------------------------------------
def ref_conv(x, w, b, stride, pads, dilation, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (x.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (x.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, o, oh, ow), np.float64)
    per = o // groups
    for oc in range(o):
        g = oc // per
        for i in range(oh):
            for j in range(ow):
                patch = x[:, g * cg:(g + 1) * cg,
                          i * stride[0]:i * stride[0] + dilation[0] * (kh - 1) + 1:dilation[0],
                          j * stride[1]:j * stride[1] + dilation[1] * (kw - 1) + 1:dilation[1]]
                y[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return y + (b[None, :, None, None] if b is not None else 0)


def ref_pool(x, k, s, reduce):
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    y = np.zeros((n, c, oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = reduce(x[:, :, i * s:i * s + k, j * s:j * s + k], axis=(2, 3))
    return y


def ref_layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def ref_gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def ref_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def ref_attention(x, mask, layer: nn.MultiHeadAttention, context=None):
    b, s, d = x.shape
    h, hd = layer.num_heads, layer.head_dim
    source = x if context is None else context

    def lin(m, t):
        return t @ m.weight.value + m.bias.value

    def heads(t):
        return t.reshape(b, t.shape[1], h, hd).transpose(0, 2, 1, 3)

    q, k, v = heads(lin(layer.q, x)), heads(lin(layer.k, source)), heads(lin(layer.v, source))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    if mask is not None:
        scores = scores + (1 - mask[:, None, None, :]) * -1e4
    ctx = (ref_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, s, d)
    return lin(layer.out, ctx)


# -- tests ----------------------------------------------------------------------------------
def test_linear_shape_names_numerics():
    layer = nn.Linear(6, 3)
    assert params(layer) == {"weight": (6, 3), "bias": (3,)}
    assert layer.num_parameters() == 21
    randomize(layer)
    model = build_one(layer, x=nn.Input(["batch", 6]))
    assert out_shape(model) == ["batch", 3]
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    x = RNG.normal(size=(5, 6)).astype(np.float32)
    close(ort_run(model, {"x": x})[0], x @ layer.weight.value + layer.bias.value)


def test_linear_on_sequences_keeps_symbolic_dims():
    model = build_one(nn.Linear(4, 2, bias=False), x=nn.Input(["batch", "seq", 4]))
    assert out_shape(model) == ["batch", "seq", 2]


@pytest.mark.parametrize(
    "kwargs, hw, expect_hw",
    [
        ({"kernel_size": 3, "padding": "same"}, (8, 8), (8, 8)),
        ({"kernel_size": 3, "stride": 2, "padding": 1}, (9, 9), (5, 5)),
        ({"kernel_size": 3, "dilation": 2, "padding": "same"}, (7, 7), (7, 7)),
        ({"kernel_size": (2, 3), "groups": 2}, (6, 5), (5, 3)),
    ],
)
def test_conv2d(kwargs, hw, expect_hw):
    layer = nn.Conv2d(4, 6, **kwargs)
    k = kwargs["kernel_size"]
    kh, kw = (k, k) if isinstance(k, int) else k
    assert params(layer) == {"weight": (6, 4 // layer.groups, kh, kw), "bias": (6,)}
    randomize(layer)
    model = build_one(layer, image=nn.Input(["batch", 4, *hw]))
    assert out_shape(model) == ["batch", 6, *expect_hw]
    x = RNG.normal(size=(2, 4, *hw)).astype(np.float32)
    ref = ref_conv(x, layer.weight.value, layer.bias.value, layer.stride, layer.pads, layer.dilation, layer.groups)
    close(ort_run(model, {"image": x})[0], ref)


def _torch_pool(x: np.ndarray, k: int, s: int, p: int, d: int, reduce, include_pad: bool = True) -> np.ndarray:
    """Pooling by PyTorch's documented rules, one window at a time: ceil_mode's output size, less a last window
    that would start past the input; an average over the window clipped to the padded input (include_pad) or
    to the input; padding never wins a max."""
    size = x.shape[-1]
    out = -(-(size + 2 * p - d * (k - 1) - 1) // s) + 1
    if (out - 1) * s >= size + p:
        out -= 1
    result = np.zeros(x.shape[:2] + (out, out), np.float64)
    for i in range(out):
        for j in range(out):
            rows = [i * s - p + a * d for a in range(k)]
            cols = [j * s - p + b * d for b in range(k)]
            inside = [(r, c) for r in rows for c in cols if 0 <= r < size and 0 <= c < size]
            values = np.stack([x[:, :, r, c] for r, c in inside], axis=-1)
            if reduce == "max":
                result[:, :, i, j] = values.max(-1)
            else:
                clipped = [min(axis[-1] + 1, size + p) - max(axis[0], -p) for axis in (rows, cols)]
                span = clipped[0] * clipped[1]
                result[:, :, i, j] = values.sum(-1) / (span if include_pad else len(inside))
    return result


@pytest.mark.parametrize(("layer", "size", "reference"), [
    (nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True), 10, (3, 2, 1, 2, "max")),
    (nn.MaxPool2d(2, ceil_mode=True), 7, (2, 2, 0, 1, "max")),
    (nn.MaxPool2d(3, 2, 1, ceil_mode=True), 8, (3, 2, 1, 1, "max")),
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True), 7, (3, 2, 1, 1, "mean")),
    (nn.MaxPool2d(3, 2, ceil_mode=True), 2, (3, 2, 0, 1, "max")),  # one window, larger than the input
    (nn.AvgPool2d(3, 2, ceil_mode=True), 2, (3, 2, 0, 1, "mean")),
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), 8, (3, 2, 1, 1, "mean", False)),
    (nn.AvgPool2d(2, ceil_mode=True), 7, (2, 2, 0, 1, "mean")),
])
def test_pools_take_pytorchs_dilation_and_ceil_mode(layer: nn.Module, size: int, reference: tuple) -> None:
    x = RNG.normal(size=(2, 3, size, size)).astype(np.float32)
    want = _torch_pool(x, *reference)
    model = build_one(layer, x=nn.Input(["batch", 3, size, size]))
    assert out_shape(model) == ["batch", 3, *want.shape[2:]]
    close(ort_run(model, {"x": x})[0], want.astype(np.float32))


def test_pool_options_onnx_cannot_keep_are_refused() -> None:
    with pytest.raises(OnnxkitError, match="MaxPool2d with ceil_mode on 5 cells .* would start its last window past "
                                           "the input"):
        build_one(nn.MaxPool2d(3, 3, 1, ceil_mode=True), x=nn.Input(["batch", 1, 5, 5]))
    with pytest.raises(OnnxkitError, match="AvgPool2d with ceil_mode on 8 cells .* would reach past the padding with "
                                           "its last window, whose cells ONNX Runtime 1.20 counts and later ones do "
                                           "not; .* or use count_include_pad=False"):
        build_one(nn.AvgPool2d(3, 2, 1, ceil_mode=True), x=nn.Input(["batch", 1, 8, 8]))
    with pytest.raises(OnnxkitError, match="MaxPool2d's window spans 5 cells on axis 2, more than the input's 1 .* "
                                           "the output would be empty"):  # a whole stride past it: PyTorch raises too
        build_one(nn.MaxPool2d(3, 2, dilation=2, ceil_mode=True), x=nn.Input(["batch", 1, 1, 8]))
    with pytest.raises(OnnxkitError, match="MaxPool2d: return_indices=True is not supported"):
        nn.MaxPool2d(2, return_indices=True)


def test_batchnorm_without_affine_normalises_and_updates_its_statistics(tmp_path) -> None:
    """affine=False, as PyTorch's: scale 1 and shift 0 stay fixed (buffers), the running statistics still train
    (they stayed at 0 and 1: the layer counted as frozen, so it normalised nothing)."""
    from onnxkit.train import fit

    class Net(nn.Module):
        def __init__(self):
            self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False), \
                nn.Linear(4 * 8 * 8, 10)

        def forward(self, image):
            return self.fc(nn.ops.flatten(nn.ops.relu(self.bn(self.conv(image)))))

    nn.manual_seed(0)
    model = nn.build(Net(), {"image": nn.Input(["batch", 1, 8, 8])}, output_names="logits")
    result = fit(model, "digits-images", tmp_path / "run", epochs=2, quiet=True, backend="onnx")
    trained = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(result.model_path).graph.initializer}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["trainable"] == \
        ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]
    np.testing.assert_array_equal(trained["bn.weight"], np.ones(4, np.float32))
    np.testing.assert_array_equal(trained["bn.bias"], np.zeros(4, np.float32))
    assert np.abs(trained["bn.running_mean"]).min() > 1e-3 and np.abs(trained["bn.running_var"] - 1).min() > 1e-3


def test_pools_and_flatten():
    x = RNG.normal(size=(3, 2, 6, 6)).astype(np.float32)
    for layer, reduce in ((nn.MaxPool2d(2), np.max), (nn.AvgPool2d(3, stride=3), np.mean)):
        model = build_one(layer, x=nn.Input(["batch", 2, 6, 6]))
        k = layer.kernel[0]
        assert out_shape(model) == ["batch", 2, 6 // k, 6 // k]
        close(ort_run(model, {"x": x})[0], ref_pool(x, k, layer.stride[0], reduce))
    # padded: cells of the padding count as zeros unless count_include_pad=False, as in PyTorch (they never did)
    ones = np.ones((1, 1, 4, 4), np.float32)
    for include, corner in ((True, 4 / 9), (False, 1.0)):
        model = build_one(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=include), x=nn.Input([1, 1, 4, 4]))
        out = ort_run(model, {"x": ones})[0]
        close(out[0, 0, [0, 1, 1], [0, 0, 1]], np.array([corner, 6 / 9 if include else 1.0, 1.0], np.float32))
    model = build_one(nn.Sequential([nn.GlobalAvgPool2d(), nn.Flatten()]), x=nn.Input(["batch", 2, 6, 6]))
    assert out_shape(model) == ["batch", 2]
    close(ort_run(model, {"x": x})[0], x.mean(axis=(2, 3)))


@pytest.mark.parametrize(("args", "want"), [
    ((), (2, 60)), ((2,), (2, 3, 20)), ((1, 2), (2, 12, 5)), ((0,), (120,)), ((0, -2), (24, 5)),
    ((-2,), (2, 3, 20)), ((3,), (2, 3, 4, 5)),
])  # fmt: skip
@pytest.mark.parametrize("dims", [["batch", 3, 4, 5], ["batch", "c", "h", 5], ["batch", 3, 4, "w"]])
def test_flatten_takes_pytorchs_start_and_end_dim(args, want, dims):
    # torch.nn.Flatten(*args) keeps the dims outside start_dim..end_dim: Flatten(2) of [2, 3, 4, 5] is [2, 3, 20].
    # nn.Flatten took ONNX's axis and made that [6, 20], silently; the default was and is one Flatten node.
    x = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    model = build_one(nn.Flatten(*args), x=nn.Input(dims))
    out = ort_run(model, {"x": x})[0]
    assert out.shape == want
    np.testing.assert_array_equal(out, x.reshape(want))
    if args[:1] != (0,):
        assert out_shape(model)[0] == "batch"  # the symbolic batch dim kept
    if not args:
        assert [n.op_type for n in model.graph.node] == ["Flatten"]


def test_tensor_flatten_takes_pytorchs_dims():
    # x.flatten(2).transpose(1, 2), a ViT's patch embedding in PyTorch: flatten(2) was ONNX's axis, [N·C, H·W], and the
    # transpose failed ('a 2-d tensor has dims 0..1'); x.flatten() stays [N, rest] (PyTorch's is one dim)
    class Patches(nn.Module):
        def forward(self, x):
            return x.flatten(2).transpose(1, 2), x.flatten(), x.flatten(0, 1), x.flatten(start_dim=-2)

    x = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    model = nn.build(Patches(), {"x": nn.Input(["batch", 3, 4, 5])})
    outs = ort_run(model, {"x": x})
    for out, want in zip(outs, (x.reshape(2, 3, 20).transpose(0, 2, 1), x.reshape(2, 60), x.reshape(6, 4, 5),
                                x.reshape(2, 3, 20)), strict=True):
        np.testing.assert_array_equal(out, want)


def test_flatten_outside_the_input_is_one_error():
    with pytest.raises(OnnxkitError, match=r"flatten\(start_dim=4, end_dim=-1\) does not fit a 4-d input"):
        build_one(nn.Flatten(4), x=nn.Input([2, 3, 4, 5]))



@pytest.mark.parametrize(("cls", "shape"), [(nn.BatchNorm1d, [2, 4]), (nn.BatchNorm1d, ["batch", 4, 7]),
                                            (nn.BatchNorm2d, ["batch", 4, 6, 6])])
def test_batchnorm_of_the_wrong_channel_count_says_so(cls, shape):
    # was ONNX's "BatchNormalization(float32[2, 4, 6, 6], float32[3], ...): Dimension mismatch in unification"
    with pytest.raises(OnnxkitError, match=rf"{cls.__name__}\(3\) expects 3 channels on axis 1, got shape "):
        build_one(cls(3), x=nn.Input(shape))

@pytest.mark.parametrize(
    "cls, shape", [(nn.BatchNorm1d, (5, 3)), (nn.BatchNorm1d, (5, 3, 4)), (nn.BatchNorm2d, (5, 3, 4, 4))]
)
def test_batchnorm_uses_running_stats(cls, shape):
    layer = cls(3)
    assert params(layer) == {n: (3,) for n in ("weight", "bias", "running_mean", "running_var")}
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in layer.named_buffers()] == ["running_mean", "running_var"]
    randomize(layer)
    layer.running_var.value = np.abs(layer.running_var.value) + 0.5
    model = build_one(layer, x=nn.Input(["batch", *shape[1:]]))
    assert out_shape(model) == ["batch", *shape[1:]]
    x = RNG.normal(size=shape).astype(np.float32)
    c = (1, 3) + (1,) * (len(shape) - 2)
    ref = (x - layer.running_mean.value.reshape(c)) / np.sqrt(layer.running_var.value.reshape(c) + 1e-5)
    close(ort_run(model, {"x": x})[0], ref * layer.weight.value.reshape(c) + layer.bias.value.reshape(c))


def test_layernorm():
    layer = nn.LayerNorm(8, eps=1e-6)
    randomize(layer)
    model = build_one(layer, x=nn.Input(["batch", "seq", 8]))
    assert out_shape(model) == ["batch", "seq", 8]
    x = RNG.normal(size=(2, 5, 8)).astype(np.float32)
    close(ort_run(model, {"x": x})[0], ref_layernorm(x, layer.weight.value, layer.bias.value, 1e-6))



@pytest.mark.parametrize(("shape", "options", "arrays"), [
    ((4, 8), {}, {"weight": (4, 8), "bias": (4, 8)}),
    ([8], {"elementwise_affine": False}, {}),
    (8, {"bias": False}, {"weight": (8,)}),
    ((5, 4, 8), {"bias": False}, {"weight": (5, 4, 8)}),
])  # fmt: skip
def test_layernorm_takes_pytorchs_normalized_shape_elementwise_affine_and_bias(shape, options, arrays):
    # torch.nn.LayerNorm(normalized_shape, eps, elementwise_affine, bias): LayerNorm((8,)) and elementwise_affine=False
    # were errors ('dim must be a positive integer, got (8,)'); the weights are PyTorch's, by name and shape
    layer = nn.LayerNorm(shape, eps=1e-6, **options)
    randomize(layer)
    assert params(layer) == arrays
    model = build_one(layer, x=nn.Input(["batch", 5, 4, 8]))
    x = RNG.normal(size=(2, 5, 4, 8)).astype(np.float32)
    axes = tuple(range(-len(np.atleast_1d(shape)), 0))
    xhat = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + 1e-6)
    w = layer.weight.value if layer.weight is not None else 1.0
    close(ort_run(model, {"x": x})[0], xhat * w + (layer.bias.value if layer.bias is not None else 0.0))
    with pytest.raises(OnnxkitError, match=r"LayerNorm\(.*\) got input with last dims \[5, 4, 7\]"):
        build_one(nn.LayerNorm((5, 4, 8)), x=nn.Input(["batch", 5, 4, 7]))

def test_embedding():
    layer = nn.Embedding(11, 4)
    assert params(layer) == {"weight": (11, 4)}
    # PyTorch's third positional argument is padding_idx (here it was the init's std: 0 made an all-zero table)
    padded = nn.Embedding(11, 4, 0)
    assert padded.padding_idx == 0 and not padded.weight.value[0].any() and padded.weight.value[1:].all()
    model = build_one(layer, ids=nn.Input(["batch", "seq"], "int64"))
    assert out_shape(model) == ["batch", "seq", 4]
    ids = RNG.integers(0, 11, size=(3, 7))
    close(ort_run(model, {"ids": ids})[0], layer.weight.value[ids])


def test_embedding_rejects_float_ids():
    with pytest.raises(OnnxkitError, match="integers"):
        nn.build(nn.Embedding(11, 4), {"ids": nn.Input(["batch"], "float32")})


@pytest.mark.parametrize(
    "layer, ref",
    [
        (nn.ReLU(), lambda x: np.maximum(x, 0)),
        (nn.GELU(), ref_gelu),
        (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
        (nn.Tanh(), np.tanh),
        (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
        (nn.Softmax(), ref_softmax),
        (nn.Dropout(0.5), lambda x: x),  # inference form: identity
        (nn.ReLU(inplace=True), lambda x: np.maximum(x, 0)),  # PyTorch's memory option: nothing to do
        # these options were dropped without a word: the exact GELU, beta 1 and threshold 20 were built
        (nn.GELU(approximate="tanh"),
         lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))),
        (nn.Softplus(beta=2), lambda x: np.where(2 * x > 20, x, np.log1p(np.exp(2 * x)) / 2)),
        (nn.Softplus(threshold=1), lambda x: np.where(x > 1, x, np.log1p(np.exp(x)))),
        (nn.SiLU(), lambda x: x / (1 + np.exp(-x))),  # PyTorch's names, for a port of a module
        (nn.Identity(54, unused=True), lambda x: x),
    ],
)
def test_activations_and_dropout(layer, ref):
    model = build_one(layer, x=nn.Input(["batch", 7]))
    assert out_shape(model) == ["batch", 7]
    x = RNG.normal(size=(4, 7)).astype(np.float32) * 3
    close(ort_run(model, {"x": x})[0], ref(x))


def test_dropout_is_ratio_less_with_its_ratio_in_metadata(tmp_path):
    model = build_one(nn.Sequential([nn.Linear(3, 3), nn.Dropout(0.25), nn.ReLU()]), x=nn.Input(["batch", 3]))
    (drop,) = [n for n in model.graph.node if n.op_type == "Dropout"]
    assert list(drop.input) == ["0/Add_output_0"]  # no ratio input: ORT removes it at inference
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["onnxkit.dropout"]) == {drop.name: 0.25}
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert "Dropout" not in {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}


def test_attention_refuses_a_second_tensor_in_the_masks_place():
    # attn(x, x), PyTorch's query/key habit, built (the mask's bias added to the scores) and failed when run
    class Attend(nn.Module):
        def __init__(self):
            self.attn = nn.MultiHeadAttention(32, 4)

        def forward(self, x):
            return self.attn(x, x)

    with pytest.raises(OnnxkitError, match=r"^attn: attention takes attn\(x, mask\) or attn\(x, mask, context=\.\.\.\) "
                                           r"with a mask \[batch, seq\] over the keys \(x's, or the context's\), "
                                           r"1 = token, 0 = padding \(PyTorch's key_padding_mask is the reverse\); "
                                           r"got \['batch', 4, 32\] beside keys \['batch', 4, 32\]$"):
        nn.build(Attend(), {"x": nn.Input(["batch", 4, 32])})


def test_cross_attention_reads_keys_and_values_from_the_context():
    class Cross(nn.Module):
        def __init__(self):
            self.attn = nn.MultiHeadAttention(8, 2)

        def forward(self, x, memory, memory_mask):
            return self.attn(x, memory_mask, context=memory)

    net = Cross()
    randomize(net.attn)
    model = nn.build(net, {"x": nn.Input(["batch", "seq", 8]), "memory": nn.Input(["batch", "memory_seq", 8]),
                           "memory_mask": nn.Input(["batch", "memory_seq"], "int64")})
    assert out_shape(model) == ["batch", "seq", 8]
    x, memory = RNG.normal(size=(2, 3, 8)).astype(np.float32), RNG.normal(size=(2, 5, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.int64)
    feeds = {"x": x, "memory": memory, "memory_mask": mask}
    close(ort_run(model, feeds)[0], ref_attention(x, mask, net.attn, memory))
    with pytest.raises(OnnxkitError, match="attention's context has batch 1, x has 2; give one context per row of x"):
        nn.build(net, {"x": nn.Input([2, 3, 8]), "memory": nn.Input([1, 5, 8]),
                       "memory_mask": nn.Input([1, 5], "int64")})
    with pytest.raises(OnnxkitError, match=r"attention expects context \[batch, seq, 8\], got \['batch', 5, 4\]"):
        nn.build(net, {"x": nn.Input(["batch", 3, 8]), "memory": nn.Input(["batch", 5, 4]),
                       "memory_mask": nn.Input(["batch", 5], "int64")})


def test_inputs_named_as_forwards_parameters_reach_them_by_name():
    # by position, {"scale": ..., "x": ...} fed the scale to forward(self, x, scale) and x to scale, unsaid
    class Scaled(nn.Module):
        def forward(self, x, scale):
            return nn.ops.div(x, scale)

    model = nn.build(Scaled(), {"scale": nn.Input(["batch", 1]), "x": nn.Input(["batch", 3])})
    assert [i.name for i in model.graph.input] == ["scale", "x"]  # the graph keeps the order given
    x, scale = RNG.normal(size=(2, 3)).astype(np.float32), np.array([[2.0], [3.0]], np.float32)
    close(ort_run(model, {"x": x, "scale": scale})[0], x / scale)
    assert out_shape(model) == ["batch", 3]


def test_view_by_a_symbolic_dim_reads_its_size_at_run_time():
    """x.view(x.size(0), -1), PyTorch's idiom, was refused ('reshape takes whole numbers, got 'batch''; `.size` did not
    exist): a dim of x in its own place is ONNX's 0, one moved is read by Shape; a name x lacks is still refused."""
    class Views(nn.Module):
        def forward(self, x):
            return x.view(x.size(0), -1), x.reshape(x.size(-1), x.shape[0], 3), x.view(x.size())

    model = nn.build(Views(), {"x": nn.Input(["batch", 3, "w"])})
    x = RNG.normal(size=(2, 3, 5)).astype(np.float32)
    flat, moved, same = ort_run(model, {"x": x})
    close(flat, x.reshape(2, -1))
    close(moved, x.reshape(5, 2, 3))
    close(same, x)
    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    assert dims[0][0] == "batch" and dims[1:] == [["w", "batch", 3], ["batch", 3, "w"]]

    class Foreign(nn.Module):
        def forward(self, x):
            return x.reshape("seq", -1)

    with pytest.raises(OnnxkitError, match=r"reshape takes whole numbers or x's own symbolic dims, got 'seq', not a "
                                           r"dim of \['batch', 3, 'w'\]; give 0 to copy"):
        nn.build(Foreign(), {"x": nn.Input(["batch", 3, "w"])})


def test_adaptive_average_pooling_to_one_is_the_global_average():
    model = build_one(nn.AdaptiveAvgPool2d(1), x=nn.Input(["batch", 3, 5, 7]))
    x = RNG.normal(size=(2, 3, 5, 7)).astype(np.float32)
    close(ort_run(model, {"x": x})[0], x.mean(axis=(2, 3), keepdims=True))
    with pytest.raises(OnnxkitError, match=r"^AdaptiveAvgPool2d: output_size \(2, 2\) is not supported, only 1"):
        nn.AdaptiveAvgPool2d((2, 2))


def test_an_unknown_layer_keyword_says_the_one_meant_and_what_the_layer_takes():
    # nn.Softmax(axis=1) from an older DSL file was Python's bare "got an unexpected keyword argument 'axis'"
    cases = {
        lambda: nn.Softmax(axis=1): "Softmax() got an unexpected keyword argument 'axis'. Did you mean: dim? "
                                    "(PyTorch's name for axis: Softmax(dim=1)) Softmax takes (dim=-1)",
        lambda: nn.Dropout(rate=0.1): "Dropout() got an unexpected keyword argument 'rate'. Did you mean: p? "
                                      "(PyTorch's name for rate: Dropout(p=0.1)) Dropout takes (p=0.5, inplace=False)",
        lambda: nn.Linear(4, 3, bais=False): "Linear() got an unexpected keyword argument 'bais'. Did you mean: bias? "
                                             "Linear takes (in_features, out_features, bias=True, "
                                             "init_fn='pytorch_uniform')",
        lambda: nn.Linear(4): "Linear() missing a required argument: 'out_features'; Linear takes (in_features, "
                              "out_features, bias=True, init_fn='pytorch_uniform')",
        lambda: nn.GELU(approximate="tanh", zebra=1): "GELU() got an unexpected keyword argument 'zebra'. GELU takes "
                                                      "(approximate='none')",
    }
    for make, message in cases.items():
        with pytest.raises(TypeError) as e:
            make()
        assert str(e.value) == message

    class Net(nn.Module):  # the user's own modules too
        def __init__(self, hidden: int = 8):
            self.fc = nn.Linear(4, hidden)

    with pytest.raises(TypeError, match=r"^Net\(\) got an unexpected keyword argument 'hiden'. Did you mean: "
                                        r"hidden\? Net takes \(hidden=8\)$"):
        Net(hiden=16)


def test_pytorchs_keyword_to_an_op_in_forward_names_the_ops_own_in_python():
    # x.mean(dim=1) and nn.ops.softmax(x, dim=1) in forward were Python's bare "got an unexpected keyword argument
    # 'dim'" under nn.build (only `onnxkit build FILE.py` added the hint)
    cases = {
        lambda x: nn.ops.softmax(x, dim=1): "softmax() got an unexpected keyword argument 'dim'. Did you mean: "
                                            "axis? (PyTorch's dim)",
        lambda x: x.mean(dim=1): "mean() got an unexpected keyword argument 'dim'. Did you mean: axes? (PyTorch's dim)",
        lambda x: x.sum(1, keepdim=True): "sum() got an unexpected keyword argument 'keepdim'. Did you mean: "
                                          "keepdims? (PyTorch's keepdim)",
    }
    for body, message in cases.items():
        class Net(nn.Module):
            def forward(self, x, body=body):
                return body(x)

        with pytest.raises(TypeError) as e:
            nn.build(Net(), {"x": nn.Input(["batch", 4])})
        assert str(e.value) == message


def test_help_on_a_layer_shows_what_it_takes_and_computes():
    # help(nn.Tanh) showed Tanh(*args, **kwargs) -> Module (Module.__new__'s signature) and no description
    import inspect

    for layer in (nn.Tanh, nn.Sigmoid, nn.MeanPool, nn.GlobalAvgPool2d):
        assert inspect.signature(layer) == inspect.Signature(), layer
    assert list(inspect.signature(nn.Linear).parameters)[:2] == ["in_features", "out_features"]

    class Scaled(nn.Tanh):  # a subclass with options of its own shows them
        def __init__(self, scale: float = 2.0):
            self.scale = scale

    assert str(inspect.signature(Scaled)) == "(scale: 'float' = 2.0)"
    layers = [v for v in vars(nn).values() if isinstance(v, type) and issubclass(v, nn.Module) and v is not nn.Module]
    assert [c.__name__ for c in layers if not c.__dict__.get("__doc__")] == []


def test_a_layer_of_no_options_refuses_one():
    # nn.Tanh(3) and nn.Sigmoid(inplace=True) were accepted, the argument dropped (Module overrides __new__)
    with pytest.raises(TypeError, match=r"^Tanh\(\) takes no arguments, got 3$"):
        nn.Tanh(3)
    with pytest.raises(TypeError, match=r"^Sigmoid\(\) takes no arguments, got inplace=True$"):
        nn.Sigmoid(inplace=True)
    # every layer PyTorch gives inplace= takes it (a memory option), as ReLU(inplace=True) ports verbatim
    for layer in (nn.ReLU, nn.SiLU, nn.SELU, nn.Mish, nn.HardSigmoid, nn.HardSwish, nn.LeakyReLU, nn.ELU, nn.CELU,
                  nn.Dropout):
        layer(inplace=True)

    class Counted:  # a mixin of the user's: super().__init__() reaches it through Module (it did not)
        def __init__(self) -> None:
            self.counted = True
            super().__init__()

    class Net(nn.Module, Counted):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

    assert Net().counted


def test_gelu_uses_gelu_op_from_opset_20():
    model = nn.build(nn.GELU(), {"x": nn.Input(["batch", 3])}, opset=20)
    assert [n.op_type for n in model.graph.node] == ["Gelu"]
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    close(ort_run(model, {"x": x})[0], ref_gelu(x))
    tanh = nn.build(nn.GELU(approximate="tanh"), {"x": nn.Input(["batch", 3])}, opset=20)
    assert [(n.op_type, [a.s for a in n.attribute]) for n in tanh.graph.node] == [("Gelu", [b"tanh"])]


class MaskedAttention(nn.Module):
    def __init__(self, attn):
        self.attn = attn

    def forward(self, x, mask):
        return self.attn(x, mask)


def test_multihead_attention_with_padding_mask():
    attn = nn.MultiHeadAttention(8, 2)
    randomize(attn)
    wrapper = MaskedAttention(attn)
    names = params(wrapper)
    assert set(names) == {f"attn.{p}.{w}" for p in ("q", "k", "v", "out") for w in ("weight", "bias")}
    assert wrapper.num_parameters() == 4 * (8 * 8 + 8)
    model = build_one(wrapper, x=nn.Input(["batch", "seq", 8]), mask=nn.Input(["batch", "seq"], "int64"))
    assert out_shape(model) == ["batch", "seq", 8]
    x = RNG.normal(size=(2, 5, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64)
    close(ort_run(model, {"x": x, "mask": mask})[0], ref_attention(x, mask, attn))
    # padding really is ignored: changing a padded token leaves the real tokens' outputs unchanged
    x2 = x.copy()
    x2[1, 4] += 10
    y1, y2 = ort_run(model, {"x": x, "mask": mask})[0], ort_run(model, {"x": x2, "mask": mask})[0]
    close(y1[1, :3], y2[1, :3])


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer(norm_first):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation="gelu", layer_norm_eps=1e-6,
                                   batch_first=True, norm_first=norm_first)
    randomize(layer)
    wrapper = MaskedAttention(layer)
    assert wrapper.num_parameters() == 4 * 72 + (8 * 16 + 16) + (16 * 8 + 8) + 2 * 16
    model = build_one(wrapper, x=nn.Input(["batch", "seq", 8]), mask=nn.Input(["batch", "seq"], "int64"))
    x = RNG.normal(size=(2, 4, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int64)

    def ln(m, t):
        return ref_layernorm(t, m.weight.value, m.bias.value, 1e-6)

    def ff(t):
        h = ref_gelu(t @ layer.ff.fc1.weight.value + layer.ff.fc1.bias.value)
        return h @ layer.ff.fc2.weight.value + layer.ff.fc2.bias.value

    if norm_first:
        h = x + ref_attention(ln(layer.norm1, x), mask, layer.attn)
        ref = h + ff(ln(layer.norm2, h))
    else:
        h = ln(layer.norm1, x + ref_attention(x, mask, layer.attn))
        ref = ln(layer.norm2, h + ff(h))
    close(ort_run(model, {"x": x, "mask": mask})[0], ref)


def test_transformer_encoder_layer_takes_pytorchs_arguments_in_its_order_with_its_defaults():
    # the sixth positional argument is PyTorch's layer_norm_eps (it was norm_first here: 1e-6 made a pre-norm layer),
    # the activation ReLU unless named (it was GELU), dim_feedforward 2048 unless given (it had no default)
    layer = nn.TransformerEncoderLayer(8, 2, 16, 0.0, "relu", 1e-6, True)
    assert (layer.norm_first, layer.norm1.eps, type(layer.ff.act)) == (False, 1e-6, nn.ReLU)
    default = nn.TransformerEncoderLayer(8, 2, batch_first=True)
    assert (default.ff.fc1.weight.shape, type(default.ff.act), default.norm1.eps) == ((8, 2048), nn.ReLU, 1e-5)
    randomize(layer)
    model = build_one(MaskedAttention(layer), x=nn.Input(["batch", "seq", 8]),
                      mask=nn.Input(["batch", "seq"], "int64"))
    x = RNG.normal(size=(2, 4, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.int64)

    def ln(m, t):
        return ref_layernorm(t, m.weight.value, m.bias.value, 1e-6)

    h = ln(layer.norm1, x + ref_attention(x, mask, layer.attn))
    ff = np.maximum(h @ layer.ff.fc1.weight.value + layer.ff.fc1.bias.value, 0)
    close(ort_run(model, {"x": x, "mask": mask})[0], ln(layer.norm2, h + ff @ layer.ff.fc2.weight.value
                                                         + layer.ff.fc2.bias.value))
    # PyTorch's default batch_first=False reads [seq, batch, d_model]: refused, not read as batch-first
    with pytest.raises(OnnxkitError, match=r"^TransformerEncoderLayer: give batch_first=True \(onnxkit's attention "
                                           r"reads \[batch, seq, d_model\]; PyTorch's default, False, is "
                                           r"sequence-first\)$"):
        nn.TransformerEncoderLayer(8, 2)


def test_mean_pool_counts_only_unmasked_tokens():
    pool = MaskedAttention(nn.MeanPool())
    pool.attn = nn.MeanPool()
    model = build_one(pool, x=nn.Input(["batch", "seq", 3]), mask=nn.Input(["batch", "seq"], "int64"))
    assert out_shape(model) == ["batch", 3]
    x = RNG.normal(size=(2, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 0, 0, 0]], np.int64)
    close(ort_run(model, {"x": x, "mask": mask})[0], np.stack([x[0].mean(0), x[1, 0]]))


def test_sequential_names_and_state_dict_roundtrip(tmp_path):
    nn.manual_seed(1)
    mlp = nn.Sequential([nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)])
    assert params(mlp) == {"0.weight": (4, 5), "0.bias": (5,), "2.weight": (5, 2), "2.bias": (2,)}
    for suffix in (".safetensors", ".npz"):
        mlp.save(tmp_path / f"w{suffix}")
        nn.manual_seed(2)
        other = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))  # as PyTorch writes it
        other.load(tmp_path / f"w{suffix}")
        for (_, a), (_, b) in zip(mlp.named_arrays(), other.named_arrays(), strict=True):
            np.testing.assert_array_equal(a.value, b.value)
    with pytest.raises(OnnxkitError, match=r"w\.pt: save writes \.safetensors or \.npz files; name it .*w\.safetensors "
                                           r"\(PyTorch reads it with safetensors\.torch\.load_file\)$"):
        mlp.save(tmp_path / "w.pt")  # it wrote safetensors under the name, which torch.load cannot read
    assert not (tmp_path / "w.pt").exists()


@pytest.mark.parametrize("name,data", [("w.npz", b""), ("w.npz", b"PK\x03\x04 cut"), ("w.safetensors", b"garbage")])
def test_a_damaged_weights_file_is_one_error(tmp_path, name, data):
    # an empty .npz raised EOFError, which the CLI took for a Ctrl-C; the others their libraries' own errors
    (tmp_path / name).write_bytes(data)
    with pytest.raises(OnnxkitError, match=f"w.{name.split('.')[1]}: not a readable weights file"):
        nn.Linear(2, 3).load(tmp_path / name)


def test_load_state_dict_errors():
    mlp = nn.Sequential([nn.Linear(4, 5)])
    with pytest.raises(OnnxkitError, match="Did you mean: 0.weight"):
        mlp.load_state_dict({"0.weigth": np.zeros((4, 5))})
    with pytest.raises(OnnxkitError, match=r"shape \[5, 4\].*expects \[4, 5\]; it is the transpose: a PyTorch "
                                           r"Linear's weight is \[out, in\] where the DSL's Linear keeps \[in, out\]; "
                                           r"pass its \.T$"):  # a torch state_dict's; it said to check the options
        mlp.load_state_dict({"0.weight": np.zeros((5, 4))})
    with pytest.raises(OnnxkitError, match=r"shape \[3, 5\].*expects \[4, 5\]; check that the checkpoint matches"):
        mlp.load_state_dict({"0.weight": np.zeros((3, 5))})
    with pytest.raises(OnnxkitError, match="missing"):
        mlp.load_state_dict({"0.weight": np.zeros((4, 5))})


def test_load_state_dict_takes_pytorch_batchnorm_step_count():
    """Every PyTorch BatchNorm's state dict holds `num_batches_tracked`; a strict load called it an unknown weight
    ('Did you mean: 1.bias?'). It is dropped, nested too; another unknown name is still refused."""
    net = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.BatchNorm1d(4)))
    state = {name: np.full_like(value, 0.5) for name, value in net.state_dict().items()}
    net.load_state_dict({**state, "1.0.num_batches_tracked": np.asarray(7, np.int64)})
    assert all((v == 0.5).all() for v in net.state_dict().values()) and "1.0.num_batches_tracked" not in \
        net.state_dict()
    with pytest.raises(OnnxkitError, match="unknown weight '0.num_batches_tracked'"):  # a Linear has none
        net.load_state_dict({**state, "0.num_batches_tracked": np.asarray(7, np.int64)})

def test_transformer_encoder_stacks_copies_of_its_layer_as_pytorchs():
    """nn.TransformerEncoder(layer, num_layers, norm=...), as PyTorch's (it was missing: a port's AttributeError):
    num_layers independent copies of the layer named layers.0, ... as PyTorch's state dict, the mask to each, then
    the norm; checked against the layers run one by one."""
    layer = nn.TransformerEncoderLayer(8, 2, 16, 0.0, batch_first=True)
    randomize(layer)
    encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8), enable_nested_tensor=False)
    randomize(encoder.layers[1])
    randomize(encoder.norm)
    names = [n for n, _ in encoder.named_arrays()]
    assert names[0] == "layers.0.attn.q.weight" and names[-1] == "norm.bias" and len(names) == 2 * 16 + 2
    np.testing.assert_array_equal(encoder.layers[0].attn.q.weight.value, layer.attn.q.weight.value)
    inputs = {"x": nn.Input(["batch", "seq", 8]), "mask": nn.Input(["batch", "seq"], "int64")}
    model = build_one(MaskedAttention(encoder), **inputs)
    x = RNG.normal(size=(2, 4, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int64)
    want = x
    for each in encoder.layers:
        one = build_one(MaskedAttention(each), **inputs)
        want = ort_run(one, {"x": want, "mask": mask})[0]
    want = ref_layernorm(want, encoder.norm.weight.value, encoder.norm.bias.value, 1e-5)
    close(ort_run(model, {"x": x, "mask": mask})[0], want)
    with pytest.raises(OnnxkitError, match="TransformerEncoder takes a TransformerEncoderLayer, got Linear"):
        nn.TransformerEncoder(nn.Linear(8, 8), 2)

def test_load_state_dict_takes_pytorchs_transformer_encoder_layer_names():
    """A PyTorch TransformerEncoderLayer's state_dict (self_attn.in_proj_weight [3d, d] and in_proj_bias,
    self_attn.out_proj, linear1, linear2, all [out, in]) loads strictly, nested; its names were unknown weights.
    linear1 given transposed (as other Linears' are) is refused rather than out_proj, square, taken wrongly."""
    def net():  # noqa: ANN202
        return nn.Sequential(nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, batch_first=True))

    nn.manual_seed(3)
    source = net()
    layer = source[0]
    own = {name: value.value for name, value in source.named_arrays()}
    torch_state = {
        "0.self_attn.in_proj_weight": np.concatenate([own[f"0.attn.{p}.weight"].T for p in "qkv"]),
        "0.self_attn.in_proj_bias": np.concatenate([own[f"0.attn.{p}.bias"] for p in "qkv"]),
        "0.self_attn.out_proj.weight": own["0.attn.out.weight"].T, "0.self_attn.out_proj.bias": own["0.attn.out.bias"],
        "0.linear1.weight": own["0.ff.fc1.weight"].T, "0.linear1.bias": own["0.ff.fc1.bias"],
        "0.linear2.weight": own["0.ff.fc2.weight"].T, "0.linear2.bias": own["0.ff.fc2.bias"],
        **{name: value for name, value in own.items() if ".norm" in name},
    }
    assert len(torch_state) == 12 and layer.attn.q.weight.shape == (8, 8)
    nn.manual_seed(4)
    target = net()
    target.load_state_dict(torch_state)
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], value)
    with pytest.raises(OnnxkitError, match=r"^0: weight 'linear1.weight' has shape \[8, 12\], PyTorch's is "
                                           r"\[12, 8\]: give PyTorch's TransformerEncoderLayer entries"):
        target.load_state_dict({**torch_state, "0.linear1.weight": own["0.ff.fc1.weight"]})

def test_pytorchs_functional_names_say_what_to_call():
    """nn.ops.cat / interpolate / dropout (torch.cat, F.interpolate, ...) were Python's bare 'module has no
    attribute'; each names the DSL's own, and an unknown name is still a plain AttributeError."""
    with pytest.raises(AttributeError, match=r"^nn.ops has no cat \(PyTorch's cat\): use "
                                             r"nn.ops.concat\(\[a, b\], axis=1\)$"):
        nn.ops.cat  # noqa: B018
    with pytest.raises(AttributeError, match=r"has no interpolate .*: use nn.ops.upsample"):
        nn.ops.interpolate  # noqa: B018
    with pytest.raises(AttributeError, match=r"^module 'onnxkit.nn.ops' has no attribute 'nothing'$"):
        nn.ops.nothing  # noqa: B018
    assert getattr(nn.ops, "dropout", None) is None and nn.ops.concat is not None

def test_a_parameter_computes_in_forward_as_a_tensor():
    """self.pos[:, :t], self.w * 2, 1 / self.w, self.w.view(...) in forward, as PyTorch's Parameter and buffers take
    them: "'Buffer' object is not subscriptable", "unsupported operand type(s) for *"; one initializer each."""
    class Net(nn.Module):
        def __init__(self):
            self.pos = nn.Buffer(np.arange(20, dtype=np.float32).reshape(1, 5, 4))
            self.w = nn.Parameter(np.full((4,), 2, np.float32))

        def forward(self, x):
            halves = np.full(4, 0.5, np.float32) * self.w  # numpy first: the Parameter's operator, as a Tensor's
            return x + self.pos[:, :3] + self.w * 2 + 1 / self.w + self.w.view(1, 1, 4).mean(-1, keepdims=True) + halves

    model = build_one(Net(), x=nn.Input(["batch", 3, 4]))
    assert sorted(i.name for i in model.graph.initializer) == ["pos", "w"]
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    close(ort_run(model, {"x": x})[0], x + np.arange(20, dtype=np.float32).reshape(1, 5, 4)[:, :3] + 4 + 0.5 + 2 + 1)

def test_register_buffer_as_pytorchs():
    """self.register_buffer("pe", table) (a positional encoding's usual home) is a Buffer in the state dict and the
    model; persistent=False a constant of the graph, out of the state dict as PyTorch's. It was an AttributeError."""
    class Positions(nn.Module):
        def __init__(self):
            self.register_buffer("pe", np.arange(20, dtype=np.float32).reshape(1, 5, 4))
            self.register_buffer("scale", np.float32(2), persistent=False)

        def forward(self, x):
            return (x + self.pe[:, :3]) * self.scale

    net = Positions()
    assert list(net.state_dict()) == ["pe"] and not net.pe.trainable and net.num_parameters() == 0
    model = build_one(net, x=nn.Input(["batch", 3, 4]))
    assert [i.name for i in model.graph.initializer] == ["pe"]
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    close(ort_run(model, {"x": x})[0], (x + np.arange(12, dtype=np.float32).reshape(1, 3, 4)) * 2)

def test_eval_and_training_as_pytorch_code_uses_them():
    """model.eval() returns the model and `self.training` is False in forward (the inference form build writes, as
    a PyTorch export traces it); train() says how training works here. All three were AttributeErrors."""
    class Noisy(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x + 100.0 if self.training else x)

    net = Noisy()
    assert net.eval() is net and net.train(False) is net and net.fc.training is False
    model = build_one(net, x=nn.Input(["batch", 3]))
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    close(ort_run(model, {"x": x})[0], x @ net.fc.weight.value + net.fc.bias.value)
    with pytest.raises(OnnxkitError, match=r"^Noisy.train\(\): nn.build writes the inference form .* derive the "
                                           r"training form"):
        net.train()

def test_pytorchs_tree_iterators():
    """model.parameters(), buffers(), modules(), children() and p.numel(), as PyTorch code counts and walks a model
    (`sum(p.numel() for p in model.parameters())`); they were AttributeErrors."""
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))
    assert sum(p.numel() for p in net.parameters()) == net.num_parameters() == 16 + 8 + 10
    assert [b.name or b.shape for b in net.buffers()] == [(4,), (4,)]
    assert [type(m).__name__ for m in net.modules()] == ["Sequential", "Linear", "BatchNorm1d", "Sequential", "ReLU",
                                                         "Linear"]
    assert [type(m).__name__ for m in net.children()] == ["Linear", "BatchNorm1d", "Sequential"]
    assert (net[0].weight.size(), net[0].weight.size(-1)) == ((3, 4), 4)

def test_a_slice_of_a_sequential_is_one_of_the_same_layers():
    """model[:-1] (a feature extractor), as PyTorch's: a Sequential of the same layers keeping their names, a
    ModuleList's numbered afresh; it was "'<=' not supported between instances of 'int' and 'slice'"."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    features = model[:-1]
    assert type(features) is nn.Sequential and [n for n, _ in features.named_children()] == ["0", "1"]
    assert features[0] is model[0] and [n for n, _ in model[::2].named_children()] == ["0", "2"]
    assert features._created_at[0] == __file__
    listed = nn.ModuleList([nn.ReLU(), nn.Tanh(), nn.Sigmoid()])[1:]
    assert type(listed) is nn.ModuleList and [(n, type(m)) for n, m in listed.named_children()] == \
        [("0", nn.Tanh), ("1", nn.Sigmoid)]
    built = build_one(features, x=nn.Input(["batch", 3]))
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    close(ort_run(built, {"x": x})[0], np.maximum(x @ model[0].weight.value + model[0].bias.value, 0))

def test_log_softmax_layer():
    """nn.LogSoftmax(dim=1), PyTorch's (before NLLLoss), one LogSoftmax node; it was missing."""
    model = build_one(nn.LogSoftmax(dim=1), x=nn.Input(["batch", 3, 4]))
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    close(ort_run(model, {"x": x})[0], x - np.log(np.exp(x).sum(1, keepdims=True)))
    assert [n.op_type for n in model.graph.node] == ["LogSoftmax"] and repr(nn.LogSoftmax()) == "LogSoftmax(dim=-1)"

def test_module_dict_as_pytorchs():
    """nn.ModuleDict({"cls": ..., "reg": ...}), PyTorch's multi-head container (it was missing): indexed by name,
    its names naming the weights (`heads.cls.weight`), as PyTorch's state dict."""
    class Heads(nn.Module):
        def __init__(self):
            self.body = nn.Linear(3, 4)
            self.heads = nn.ModuleDict({"cls": nn.Linear(4, 2)})
            self.heads["reg"] = nn.Linear(4, 1)

        def forward(self, x):
            h = self.body(x).relu()
            return tuple(self.heads[name](h) for name in self.heads)

    net = Heads()
    assert list(net.heads) == list(net.heads.keys()) == ["cls", "reg"] and "reg" in net.heads and len(net.heads) == 2
    assert [n for n, _ in net.named_parameters()][2:] == ["heads.cls.weight", "heads.cls.bias", "heads.reg.weight",
                                                          "heads.reg.bias"]
    model = nn.build(net, {"x": nn.Input(["batch", 3])}, output_names=["cls", "reg"])
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    h = np.maximum(x @ net.body.weight.value + net.body.bias.value, 0)
    for got, head in zip(ort_run(model, {"x": x}), net.heads.values(), strict=True):
        close(got, h @ head.weight.value + head.bias.value)
    with pytest.raises(KeyError, match="'box': the ModuleDict holds \\['cls', 'reg'\\]"):
        net.heads["box"]
    with pytest.raises(OnnxkitError, match="key 'items' must be"):
        net.heads["items"] = nn.ReLU()

def test_load_state_dict_takes_pytorchs_multihead_attention_names():
    """PyTorch's nn.MultiheadAttention state dict (in_proj_weight [3d, d], in_proj_bias, out_proj [out, in]) loads
    strictly into MultiHeadAttention, to the weights that make its q, k, v and out; its names were unknown weights.
    in_proj_weight transposed by hand is refused."""
    nn.manual_seed(5)
    source = nn.MultiHeadAttention(8, 2)
    own = source.state_dict()
    torch_state = {"in_proj_weight": np.concatenate([own[f"{p}.weight"].T for p in "qkv"]),
                   "in_proj_bias": np.concatenate([own[f"{p}.bias"] for p in "qkv"]),
                   "out_proj.weight": own["out.weight"].T, "out_proj.bias": own["out.bias"]}
    nn.manual_seed(6)
    target = nn.MultiHeadAttention(8, 2)
    target.load_state_dict(torch_state)
    for name, value in own.items():
        np.testing.assert_array_equal(target.state_dict()[name], value)
    with pytest.raises(OnnxkitError, match=r"^weight 'in_proj_weight' has shape \[8, 24\], PyTorch's is \[24, 8\]: "
                                           r"give PyTorch's MultiheadAttention entries"):
        target.load_state_dict({**torch_state, "in_proj_weight": torch_state["in_proj_weight"].T})

def test_seeded_initialisers_are_reproducible_and_scaled():
    nn.manual_seed(7)
    a = nn.init.kaiming_uniform((256, 128))
    nn.manual_seed(7)
    b = nn.init.kaiming_uniform((256, 128))
    np.testing.assert_array_equal(a, b)
    assert abs(a.max()) <= math.sqrt(6 / 256) and a.std() == pytest.approx(math.sqrt(2 / 256), rel=0.05)
    assert nn.init.xavier_normal((300, 200)).std() == pytest.approx(math.sqrt(2 / 500), rel=0.05)
    assert nn.init.kaiming_normal((64, 3, 3, 3)).std() == pytest.approx(math.sqrt(2 / 27), rel=0.05)
    assert (nn.init.xavier_uniform((10, 30)) ** 2).mean() == pytest.approx(2 / 40, rel=0.1)
    with pytest.raises(OnnxkitError, match="Did you mean: xavier_uniform"):
        nn.init.get("xavier_unifrom")


def test_linear_starts_as_torch_nn_linear_does():
    """Weight and bias U(±1/√in), as torch.nn.Linear's (He's U(±√(6/in)), 2.4 times wider, was the
    default); another init_fn draws the weight and leaves the bias at zero."""
    nn.manual_seed(0)
    layer = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    for values in (layer.weight.value, layer.bias.value):
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.95 * bound
        assert values.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    he = nn.Linear(400, 300, init_fn="kaiming_uniform")
    assert np.abs(he.weight.value).max() > 2 * bound and not he.bias.value.any()
    assert nn.init.get("pytorch_uniform") is nn.init.pytorch_uniform


class Broken(nn.Module):
    def __init__(self):
        self.encoder = nn.ModuleList([nn.Sequential([nn.Linear(4, 8), nn.Linear(6, 2)])])

    def forward(self, x):
        return self.encoder[0](x)


def test_shape_error_names_the_layer_path():
    with pytest.raises(OnnxkitError) as e:
        nn.build(Broken(), {"x": nn.Input(["batch", 4])})
    msg = str(e.value)
    assert msg.startswith("encoder.0.1: MatMul(float32[batch, 8], float32[6, 2])")
    assert "Incompatible dimensions" in msg and "\n" not in msg


def test_dtype_error_is_raised_at_the_call():
    class AddInt(nn.Module):
        def forward(self, x, n):
            return x + n

    with pytest.raises(OnnxkitError, match=r"Add\(float32\[batch, 3\], int64\[batch, 3\]\)"):
        nn.build(AddInt(), {"x": nn.Input(["batch", 3]), "n": nn.Input(["batch", 3], "int64")})


def test_ops_outside_build_are_a_clear_error():
    with pytest.raises(OnnxkitError, match="only while tracing"):
        nn.ops.relu(np.zeros(3))


def test_tensor_methods_take_pytorchs_arguments():
    # x.transpose(0, 1) was numpy's permutation: a matrix came back as it was (PyTorch swaps the two dims); an int
    # dim for sum, mean, squeeze or unsqueeze built a model ONNX Runtime refused ('axes must be a vector')
    class Methods(nn.Module):
        def forward(self, x, y):
            return (x.transpose(0, 1), y.transpose(1, -1), y.permute(2, 0, 1), y.transpose(0, 2, 1),
                    x.sum(-1), y.mean(1, keepdims=True), y.unsqueeze(0).squeeze(0), x.unsqueeze(1))

    x, y = RNG.normal(size=(3, 4)).astype(np.float32), RNG.normal(size=(2, 3, 5)).astype(np.float32)
    for opset in (17, 18):
        model = nn.build(Methods(), {"x": nn.Input(["batch", 4]), "y": nn.Input([2, 3, 5])},
                         output_names=[f"o{i}" for i in range(8)], opset=opset)
        got = ort_run(model, {"x": x, "y": y})
        want = [x.T, y.transpose(0, 2, 1), y.transpose(2, 0, 1), y.transpose(0, 2, 1), x.sum(-1),
                y.mean(1, keepdims=True), y, x[:, None]]
        for a, b in zip(got, want, strict=True):
            close(a, b)
    with pytest.raises(OnnxkitError, match=r"transpose\(0, 2\): a 2-d tensor has dims 0\.\.1"):
        nn.build(type("Bad", (nn.Module,), {"forward": lambda self, x: x.transpose(0, 2)})(),
                 {"x": nn.Input(["batch", 4])})


@pytest.mark.parametrize("returns, names, message", [
    (lambda x: None, None, r"^Returns.forward \(test_nn_layers.py:\d+\) must return Tensors .*, got None$"),
    (lambda x: 3.0, None, r"must return Tensors \(or a tuple/dict of them\), got float 3.0$"),
    (lambda x: (x + 1, x * 2), ["logits"], r"returns 2 outputs, and 1 output names are given \(logits\); name each"),
    (lambda x: x + 1, ["x"], r"^output name 'x' is already an input's or a weight's name; choose another$"),
])  # fmt: skip
def test_what_forward_returns_is_refused_saying_where_and_what(returns, names, message):
    # "forward must return Tensors" named neither the forward nor what it returned; an output named as the input
    # failed the ONNX checker ("not in single static assignment (SSA) form")
    class Returns(nn.Module):
        def forward(self, x):
            return returns(x)

    with pytest.raises(OnnxkitError, match=message):
        nn.build(Returns(), {"x": nn.Input(["batch", 4])}, output_names=names)


def test_layers_kept_in_a_plain_list_are_named_in_the_error_with_what_to_use():
    # "a Parameter used in forward is not an attribute of any module" named no layer and no fix
    class Net(nn.Module):
        def __init__(self):
            self.layers = [nn.Linear(4, 8), nn.Linear(8, 2)]

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    with pytest.raises(OnnxkitError, match=r"^a Parameter\[4, 8\] of Linear\(4 -> 8, bias=True\), used in forward, is "
                                           r"not an attribute of any module; .* keep layers in nn.ModuleList or "
                                           r"nn.Sequential, not a plain list or dict, so it gets a name$"):
        nn.build(Net(), {"x": nn.Input(["batch", 4])})


def test_one_output_name_may_be_a_string():
    # output_names="logits" was read letter by letter: "6 output names are given (l, o, g, i, t, s)"
    model = nn.build(nn.Linear(4, 2), {"x": nn.Input(["batch", 4])}, output_names="logits")
    assert [o.name for o in model.graph.output] == ["logits"]


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_manual_seed_refuses_what_is_not_a_seed(seed):
    # -1 was numpy's "expected non-negative integer", naming no seed (a recipe's --set seed=-1)
    with pytest.raises(OnnxkitError, match=f"^manual_seed takes a whole number >= 0, got {re.escape(repr(seed))}$"):
        nn.manual_seed(seed)


def test_layers_forward_never_calls_are_warned_of(tmp_path, run_cli):
    # a layer made in __init__ and left out of forward: its weights vanished from the model without a word
    class Partly(nn.Module):
        def __init__(self):
            self.fc, self.extra, self.bn = nn.Linear(4, 2), nn.Linear(4, 100), nn.BatchNorm1d(2)

        def forward(self, x):
            return self.fc(x)

    with pytest.warns(nn.UnusedLayers, match=r"^layers that forward never calls are left out of the model: extra, bn "
                                          r"\(508 weights\)$"):
        model = nn.build(Partly(), {"x": nn.Input(["batch", 4])})
    assert {t.name for t in model.graph.initializer} == {"fc.weight", "fc.bias"}
    (tmp_path / "partly.py").write_text(
        "from onnxkit import nn\nfrom onnxkit.zoo import Recipe\n\n"
        "class Partly(nn.Module):\n    def __init__(self):\n"
        "        self.fc, self.extra = nn.Linear(4, 2), nn.Linear(4, 3)\n"
        "\n    def forward(self, x):\n        return self.fc(x)\n\n"
        "def recipe():\n    return Recipe(Partly(), {'x': nn.Input(['batch', 4])})\n")
    built = run_cli("build", tmp_path / "partly.py", "-o", tmp_path / "m.onnx")
    assert built.code == 0 and built.err == ("warning: layers that forward never calls are left out of the model: "
                                             "extra (15 weights)\n")


def test_an_input_forward_never_uses_is_refused():
    # a numpy array given to a layer became a constant: the model ignored its input and answered alike for all
    class Ignores(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(np.ones((3, 4), np.float32))

    # the message named no line of the user's: it now names the call, as the CLI prints its other errors
    line = inspect.getsourcelines(Ignores.forward)[1] + 1
    where = re.escape(f"{os.path.relpath(__file__)}:{line}: fc (Linear) is called on a numpy array, a constant, ")
    with pytest.raises(OnnxkitError, match=f"^{where}so input 'x' feeds nothing; call it on the tensors forward"):
        nn.build(Ignores(), {"x": nn.Input(["batch", 4])})

    class Idle(nn.Module):
        def forward(self, x):
            return nn.ops.add(np.ones((3, 4), np.float32), 1.0)

    with pytest.raises(OnnxkitError, match=r"^input 'x' feeds nothing: forward never computes with it \(a numpy "):
        nn.build(Idle(), {"x": nn.Input(["batch", 4])})


def test_build_refuses_a_class_or_inputs_of_the_wrong_kind_in_one_line():
    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x)

    x = nn.Input(["batch", 4])
    cases = [  # were: assign_names() missing 'self', 'list' object has no attribute 'items', ... 'dtype'
        (lambda: nn.build(Net, {"x": x}), r"^build takes a Module: an instance such as Net\(\), not "),
        (lambda: nn.build(Net(), [x]), r"^inputs must be a dict of input name -> nn.Input\(shape, dtype\)"),
        (lambda: nn.build(Net(), {"x": ("batch", 4)}), r"^inputs must be a dict of input name -> nn.Input"),
        # a string shape was read as one symbolic dim per letter and built a rank-5 input
        (lambda: nn.Input("batch"), r"^Input shape must be a list of dims, each a size >= 1 or a name .* got 'batch'$"),
        (lambda: nn.Input(["batch", 0]), r"^Input shape must be .* got \['batch', 0\]$"),  # was built, outputs empty
        (lambda: nn.Input(["batch", 4.5]), r"^Input shape must be a list of dims"),
        (lambda: nn.Input(["batch", 4], dtype="floot"), r"^Input dtype 'floot' is not a numpy dtype"),
    ]
    for make, message in cases:
        with pytest.raises(TypeError, match=message):
            make()
    model = nn.build(Net(), {"x": nn.Input(("batch", np.int64(4)), np.float32)})
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", 4]


def test_model_level_properties():
    model = nn.build(nn.Sequential([nn.Linear(3, 2), nn.Tanh()]), {"x": nn.Input(["batch", 3])},
                     output_names=["y"], metadata={"k": [1, 2]})
    assert model.ir_version == 10 and model.opset_import[0].version == 17
    names = [n.name for n in model.graph.node]
    assert names == ["0/MatMul", "0/Add", "1/Tanh"] and len(set(names)) == len(names)
    assert model.graph.node[0].doc_string.startswith("Linear(3 -> 2")
    typed = {v.name for v in model.graph.value_info}
    assert typed == {"0/MatMul_output_0", "0/Add_output_0"}  # every intermediate is typed
    assert {p.key: p.value for p in model.metadata_props}["k"] == "[1, 2]"


class Norm(nn.Module):
    def __init__(self):
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(x)


def test_ops_newer_than_the_opset_are_one_line_naming_the_opset_they_need():
    # LayerNormalization at opset 15 was a traceback (onnx's SchemaError); Shape's end at 13 said only
    # "Unrecognized attribute: end"
    with pytest.raises(OnnxkitError, match=r"^norm: LayerNormalization needs opset 17; build with that opset or "
                                           r"later \(this one is 15\)$"):
        nn.build(Norm(), {"x": nn.Input(["batch", 4])}, opset=15)

    class Tail(nn.Module):
        def forward(self, x):
            return nn.ops.shape_of(x, 1)  # Shape's start: Shape + Slice before opset 15

    for opset in (13, 15):
        model = nn.build(Tail(), {"x": nn.Input(["batch", 3, 5])}, opset=opset)
        assert ort_run(model, {"x": np.zeros((2, 3, 5), np.float32)})[0].tolist() == [3, 5]


def test_a_conv_or_pool_the_input_cannot_feed_is_refused_when_built():
    # each built and passed onnx.checker, to fail only in onnxruntime ("Input channels C is not equal to ...")
    cases = [
        (nn.Conv2d(3, 2, 3), [1, 1, 8, 8], r"Conv2d expects input of rank 4 with 3 channels on axis 1, got shape "
                                           r"\[1, 1, 8, 8\]"),
        (nn.Conv2d(4, 4, 3, groups=2), [1, 6, 8, 8], r"with 4 channels on axis 1"),
        (nn.Conv2d(1, 2, 5), [1, 1, 3, 3], r"Conv2d's window spans 5 cells on axis 2, more than the input's 3 with "
                                           r"padding 0 \(shape \[1, 1, 3, 3\]\): the output would be empty"),
        (nn.Conv2d(1, 2, 3, dilation=3), [1, 1, 6, 6], r"window spans 7 cells"),
        (nn.MaxPool2d(4), [1, 1, 3, 3], r"MaxPool2d's window spans 4 cells"),
    ]
    for layer, shape, message in cases:
        with pytest.raises(OnnxkitError, match=message):
            nn.build(layer, {"x": nn.Input(shape)})
    assert nn.build(nn.Conv2d(1, 2, 3, padding=1), {"x": nn.Input(["n", 1, 1, 1])}).graph.node  # padding makes room


def test_sequential_and_module_list_refuse_items_that_are_not_modules():
    with pytest.raises(OnnxkitError, match=r"^Sequential: item 1 is 3, not a Module$"):
        nn.Sequential(nn.Linear(4, 2), 3, "relu")  # was a one-layer model
    with pytest.raises(OnnxkitError, match=r"item 1 is <class .*ReLU'>, not a Module \(a layer class: instantiate"):
        nn.Sequential([nn.Linear(4, 2), nn.ReLU])
    with pytest.raises(OnnxkitError, match=r"^ModuleList: item 1 is 1, not a Module$"):
        nn.ModuleList([nn.ReLU(), 1])


def test_a_misspelt_forward_is_named():
    # a PyTorch habit mistyped: the error said only 'Net must define forward()', beside the method the user wrote
    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(4, 2)

        def foward(self, x):
            return self.fc(x)

    with pytest.raises(NotImplementedError, match=r"^Net must define forward\(\) \(it has foward\(\): rename it "):
        nn.build(Net(), {"x": nn.Input(["batch", 4])})

    class Bare(nn.Module):
        pass

    with pytest.raises(NotImplementedError, match=r"^Bare must define forward\(\)$"):
        nn.build(Bare(), {"x": nn.Input(["batch", 4])})


def test_module_list_append_extend_and_sequential_of_an_ordered_dict_as_pytorchs():
    # PyTorch's idioms: layers.append(...) was an AttributeError, Sequential(OrderedDict(...)) "item 0 is 'fc', not a
    # Module"; the dict's keys name the children, so the weights take PyTorch's names (head.fc.weight)
    from collections import OrderedDict

    class Net(nn.Module):
        def __init__(self):
            self.blocks = nn.ModuleList()
            self.blocks.append(nn.Linear(4, 4))
            self.blocks.extend([nn.ReLU(), nn.Linear(4, 3)])
            self.head = nn.Sequential(OrderedDict([("act", nn.Tanh()), ("fc", nn.Linear(3, 2))]))

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    net = Net()
    assert len(net.blocks) == 3 and net.blocks[-1] is net.blocks[2] and net.head[1] is net.head.fc
    model = nn.build(net, {"x": nn.Input(["batch", 4])})
    assert [i.name for i in model.graph.initializer] == [
        "blocks.0.weight", "blocks.0.bias", "blocks.2.weight", "blocks.2.bias", "head.fc.weight", "head.fc.bias"]
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    w = {name: p.value for name, p in net.named_arrays()}
    hidden = np.maximum(x @ w["blocks.0.weight"] + w["blocks.0.bias"], 0) @ w["blocks.2.weight"] + w["blocks.2.bias"]
    close(ort_run(model, {"x": x})[0], np.tanh(hidden) @ w["head.fc.weight"] + w["head.fc.bias"])
    with pytest.raises(OnnxkitError, match=r"^ModuleList: item 0 is <class .*ReLU'>, not a Module \(a layer class"):
        nn.ModuleList().append(nn.ReLU)
    with pytest.raises(OnnxkitError, match=r"^Sequential: child name 'forward' must be a Python name, and not one "):
        nn.Sequential(OrderedDict(forward=nn.ReLU()))
