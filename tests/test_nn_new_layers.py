"""The DSL layers for ops ONNX Runtime 1.19.2's training build cannot differentiate (ELU ... GroupNorm,
ConvTranspose2d, Upsample): ONNX Runtime against independent numpy references within 1e-5,
the opset fallbacks against the ops themselves, parameter names and shapes, and argument errors."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from conftest import ort_run

from onnxkit import nn
from onnxkit.errors import OnnxkitError

RNG = np.random.default_rng(7)


def build_one(layer: nn.Module, shape: list, opset: int = 17) -> onnx.ModelProto:
    model = nn.build(layer, {"x": nn.Input(shape)}, output_names=["y"], opset=opset)
    onnx.checker.check_model(model, full_check=True)  # weights included
    return model


def run(layer: nn.Module, x: np.ndarray, opset: int = 17, symbolic: tuple[int, ...] = (0,)) -> np.ndarray:
    """Build `layer` for x's shape (axes in `symbolic` named), check the declared output rank, run it."""
    shape = [f"d{i}" if i in symbolic else d for i, d in enumerate(x.shape)]
    model = build_one(layer, shape, opset)
    (y,) = ort_run(model, {"x": x})
    assert len(model.graph.output[0].type.tensor_type.shape.dim) == y.ndim
    return y


def randomize(layer: nn.Module) -> None:
    for _, p in layer.named_arrays():
        p.value = RNG.normal(0, 0.5, p.shape).astype(np.float32)


def params(layer: nn.Module) -> dict[str, tuple[int, ...]]:
    layer.assign_names()
    return {n: p.shape for n, p in layer.named_arrays()}


def close(a: np.ndarray, b: np.ndarray, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def images(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


# -- numpy references (float64) ----------------------------------------------------------
def softplus(x):
    return np.logaddexp(0.0, x)


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805

ACTIVATIONS = {
    "elu": (lambda: nn.ELU(0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x))),
    "selu": (nn.SELU, lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x))),
    "celu": (lambda: nn.CELU(0.5), lambda x: np.maximum(x, 0) + np.minimum(0, 0.5 * np.expm1(x / 0.5))),
    "softplus": (nn.Softplus, softplus),
    "mish": (nn.Mish, lambda x: x * np.tanh(softplus(x))),
    "hardsigmoid": (nn.HardSigmoid, lambda x: np.clip(x + 3, 0, 6) / 6),
    "hardswish": (nn.HardSwish, lambda x: x * np.clip(x + 3, 0, 6) / 6),
}


def ref_norm(x, groups, w=None, b=None, eps=1e-5):
    """Normalise each group of channels of [N, C, ...] (groups = C: instance norm)."""
    n, c = x.shape[:2]
    g = x.astype(np.float64).reshape(n, groups, -1)
    y = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)).reshape(x.shape)
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    return y * (1 if w is None else w.reshape(per_channel)) + (0 if b is None else b.reshape(per_channel))


def ref_conv_transpose(x, w, b, stride, pad, out_pad, groups, dilation):
    """Scatter every input pixel times the kernel into the output, then crop the padding."""
    n, cin, h, wd = x.shape
    _, opg, kh, kw = w.shape
    ipg = cin // groups
    full = [(size - 1) * s + d * (k - 1) + 1 + op
            for size, s, d, k, op in zip((h, wd), stride, dilation, (kh, kw), out_pad, strict=True)]
    y = np.zeros((n, opg * groups, *full))
    for ic in range(cin):
        g = ic // ipg
        for i in range(h):
            for j in range(wd):
                for ki in range(kh):
                    for kj in range(kw):
                        r, c = i * stride[0] + ki * dilation[0], j * stride[1] + kj * dilation[1]
                        y[:, g * opg:(g + 1) * opg, r, c] += x[:, ic, i, j, None] * w[ic, :, ki, kj]
    oh, ow = full[0] - 2 * pad[0], full[1] - 2 * pad[1]
    y = y[:, :, pad[0]:pad[0] + oh, pad[1]:pad[1] + ow]
    return y + (b[None, :, None, None] if b is not None else 0)


def ref_upsample(x, scales, mode, size=None, align_corners=False):
    """PyTorch's Upsample, one output pixel at a time: by `scales`, or to `size` (the scales then out / in)."""
    out = tuple(size) if size else tuple(math.floor(d * s) for d, s in zip(x.shape[2:], scales, strict=True))
    scales = [o / d for o, d in zip(out, x.shape[2:], strict=True)] if size else scales
    y = np.zeros(x.shape[:2] + out)
    for idx in np.ndindex(*out):
        if mode == "nearest":
            src = tuple(min(math.floor(o / s), d - 1) for o, s, d in zip(idx, scales, x.shape[2:], strict=True))
            y[(..., *idx)] = x[(..., *src)]
            continue
        (oi, oj), (h, w) = idx, x.shape[2:]
        if align_corners:  # corner pixels map onto corner pixels
            si, sj = (o * (d - 1) / (n - 1) if n > 1 else 0.0 for o, d, n in zip(idx, (h, w), out, strict=True))
        else:
            si, sj = (max((o + 0.5) / s - 0.5, 0.0) for o, s in zip(idx, scales, strict=True))
        i0, j0 = math.floor(si), math.floor(sj)
        i1, j1, di, dj = min(i0 + 1, h - 1), min(j0 + 1, w - 1), si - i0, sj - j0
        y[:, :, oi, oj] = ((1 - di) * ((1 - dj) * x[:, :, i0, j0] + dj * x[:, :, i0, j1])
                           + di * ((1 - dj) * x[:, :, i1, j0] + dj * x[:, :, i1, j1]))
    return y


# -- activations ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_match_numpy(name):
    make, ref = ACTIVATIONS[name]
    x = images(4, 3, 5) * 3
    x[0, 0, :4] = [-40.0, -6.0, 6.0, 40.0]  # the saturating tails
    close(run(make(), x), ref(x.astype(np.float64)))


@pytest.mark.parametrize("layer, opset, ops", [
    (nn.Mish(), 17, ["Softplus", "Tanh", "Mul"]), (nn.Mish(), 18, ["Mish"]),
    (nn.HardSwish(), 13, ["HardSigmoid", "Mul"]), (nn.HardSwish(), 14, ["HardSwish"]),
])  # fmt: skip
def test_activation_ops_before_their_opset_are_composed(layer, opset, ops):
    model = build_one(layer, ["batch", 6], opset)
    assert [n.op_type for n in model.graph.node] == ops
    x = images(3, 6) * 3
    ref = ACTIVATIONS[type(layer).__name__.lower()][1]
    close(ort_run(model, {"x": x})[0], ref(x.astype(np.float64)))


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 4)])
def test_prelu_per_channel_broadcasts_over_axis_1(shape):
    layer = nn.PReLU(3, init=0.1)
    assert params(layer) == {"weight": (3,)}
    np.testing.assert_array_equal(layer.weight.value, np.full(3, 0.1, np.float32))
    randomize(layer)
    x = images(*shape)
    slope = layer.weight.value.reshape((1, 3) + (1,) * (len(shape) - 2))
    close(run(layer, x), np.where(x > 0, x, slope * x))


def test_prelu_single_slope_and_functional_form():
    class Leaky(nn.Module):
        def forward(self, x):
            return nn.ops.prelu(x, np.array([0.2], np.float32))

    x = images(2, 5)
    close(run(nn.PReLU(), x), np.where(x > 0, x, 0.25 * x))
    close(run(Leaky(), x), np.where(x > 0, x, 0.2 * x))


def test_elu_and_celu_alpha_in_repr():
    assert repr(nn.ELU(0.5)) == "ELU(alpha=0.5)" and repr(nn.CELU(2.0)) == "CELU(alpha=2.0)"
    assert repr(nn.PReLU(8)) == "PReLU(num_parameters=8)"


# -- normalisation -------------------------------------------------------------------------
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm(affine):
    layer = nn.InstanceNorm2d(3, eps=1e-3, affine=affine)
    assert params(layer) == ({"weight": (3,), "bias": (3,)} if affine else {})
    randomize(layer)
    x = images(2, 3, 4, 5) * 2 + 1
    w, b = (layer.weight.value, layer.bias.value) if affine else (None, None)
    close(run(layer, x), ref_norm(x, 3, w, b, 1e-3))


@pytest.mark.parametrize("shape", [(2, 6, 4, 5), (3, 6, 7), (4, 6)])
def test_group_norm_decomposed_at_17_and_the_op_at_21(shape):
    layer = nn.GroupNorm(3, 6)
    assert params(layer) == {"weight": (6,), "bias": (6,)}
    randomize(layer)
    x = images(*shape) * 2 + 1
    ref = ref_norm(x, 3, layer.weight.value, layer.bias.value)
    symbolic = tuple(i for i in range(len(shape)) if i != 1)  # batch and spatial dims named
    at17, at21 = run(layer, x, 17, symbolic), run(layer, x, 21, symbolic)
    close(at17, ref)
    close(at21, ref)
    close(at17, at21)
    assert "GroupNormalization" not in {n.op_type for n in build_one(layer, list(shape), 17).graph.node}
    assert [n.op_type for n in build_one(layer, list(shape), 21).graph.node] == ["GroupNormalization"]


def test_group_norm_without_affine_and_functional_form():
    x = images(2, 4, 3, 3)

    class Functional(nn.Module):
        def forward(self, x):
            return nn.ops.group_norm(x, 2, eps=1e-4)

    for opset in (17, 21):
        close(run(nn.GroupNorm(1, 4, affine=False), x, opset), ref_norm(x, 1))
        close(run(Functional(), x, opset), ref_norm(x, 2, eps=1e-4))
    assert repr(nn.GroupNorm(2, 4)) == "GroupNorm(2, 4, eps=1e-05, affine=True)"


# -- pooling, transposed convolution, upsampling --------------------------------------------
def test_global_max_pool():
    x = images(3, 2, 5, 4)
    close(run(nn.Sequential([nn.GlobalMaxPool2d(), nn.Flatten()]), x), x.max(axis=(2, 3)))


@pytest.mark.parametrize("kwargs, hw", [
    ({"kernel_size": 3}, (4, 5)),
    ({"kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1}, (4, 4)),
    ({"kernel_size": (2, 3), "stride": (2, 1), "padding": (0, 1), "groups": 2}, (3, 4)),
    ({"kernel_size": 3, "stride": 2, "dilation": 2, "output_padding": 1, "bias": False}, (3, 3)),
])  # fmt: skip
def test_conv_transpose2d(kwargs, hw):
    layer = nn.ConvTranspose2d(4, 6, **kwargs)
    kh, kw = layer.kernel
    expect = {"weight": (4, 6 // layer.groups, kh, kw)} | ({"bias": (6,)} if layer.bias is not None else {})
    assert params(layer) == expect
    randomize(layer)
    x = images(2, 4, *hw)
    b = layer.bias.value if layer.bias is not None else None
    ref = ref_conv_transpose(x, layer.weight.value, b, layer.stride, layer.pads[:2], layer.output_padding,
                             layer.groups, layer.dilation)
    y = run(layer, x)
    assert y.shape == ref.shape
    close(y, ref)


def test_conv_transpose2d_pytorch_init():
    nn.manual_seed(3)
    layer = nn.ConvTranspose2d(8, 16, 3, groups=2)
    bound = 1 / math.sqrt(16 // 2 * 9)
    for p in (layer.weight.value, layer.bias.value):
        assert np.abs(p).max() <= bound
    assert layer.weight.value.std() == pytest.approx(bound / math.sqrt(3), rel=0.1)


@pytest.mark.parametrize("scale, mode, shape", [
    (2, "nearest", (2, 3, 4, 5)),
    ((2, 3), "nearest", (1, 2, 3, 3)),
    (1.5, "nearest", (1, 2, 5, 4)),
    (3, "nearest", (2, 3, 4)),
    (2, "bilinear", (2, 3, 4, 5)),
    ((1.5, 2.5), "bilinear", (1, 2, 5, 4)),
])  # fmt: skip
def test_upsample(scale, mode, shape):
    layer = nn.Upsample(scale, mode)
    x = images(*shape)
    scales = (scale,) * (len(shape) - 2) if isinstance(scale, int | float) else scale
    close(run(layer, x), ref_upsample(x.astype(np.float64), scales, mode))
    model = build_one(layer, ["batch", *shape[1:]])
    dims = [d.dim_value or d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", shape[1], *(math.floor(d * s) for d, s in zip(shape[2:], scales, strict=True))]


@pytest.mark.parametrize("options, shape", [
    (dict(size=(5, 7)), (2, 3, 4, 6)),
    (dict(size=9, mode="bilinear"), (2, 3, 4, 6)),
    (dict(size=(5, 13), mode="bilinear", align_corners=True), (1, 2, 4, 6)),
    (dict(scale_factor=2, mode="bilinear", align_corners=True), (1, 2, 4, 5)),
    (dict(size=(3, 2)), (1, 2, 4, 6)),
    (dict(scale_factor=1.3, mode="bilinear"), (1, 2, 3, 7)),  # 3 x 1.3 -> 3: PyTorch copies that axis
    (dict(scale_factor=(1.3, 2)), (1, 2, 2, 3)),
])  # fmt: skip
def test_upsample_to_a_size_and_with_aligned_corners(options, shape):
    layer = nn.Upsample(**options)
    x = images(*shape)
    size, scale = options.get("size"), options.get("scale_factor")
    size = (size, size) if isinstance(size, int) else size
    scales = scale if isinstance(scale, tuple) else (scale, scale)
    if scale is not None:  # PyTorch copies an axis whose size the scale keeps, and samples the others at 1 / scale
        size = tuple(math.floor(d * f) for d, f in zip(shape[2:], scales, strict=True))
        scales = tuple(1.0 if n == d else f for n, d, f in zip(size, shape[2:], scales, strict=True))
        size = None
    want = ref_upsample(x.astype(np.float64), scales, options.get("mode", "nearest"), size,
                        options.get("align_corners", False))
    close(run(layer, x), want)
    model = build_one(layer, ["batch", *shape[1:]])
    assert [d.dim_value or d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim] == \
        ["batch", shape[1], *want.shape[2:]]


def test_a_model_upsampled_to_a_size_trains(tmp_path):
    from onnxkit.train import fit

    class Net(nn.Module):
        def __init__(self):
            self.conv, self.up = nn.Conv2d(1, 4, 3, padding=1), nn.Upsample(size=(12, 12), mode="bilinear",
                                                                            align_corners=True)
            self.pool, self.fc = nn.MaxPool2d(3), nn.Linear(4 * 4 * 4, 10)

        def forward(self, image):
            return self.fc(nn.ops.flatten(self.pool(nn.ops.relu(self.up(self.conv(image))))))

    nn.manual_seed(0)
    model = nn.build(Net(), {"image": nn.Input(["batch", 1, 8, 8])}, output_names="logits")
    result = fit(model, "digits-images", tmp_path / "run", epochs=3, quiet=True, backend="onnx")
    assert result.metrics["test"]["accuracy"] > 0.6  # 72% (chance: 10%): the gradient passes the Resize to sizes


def test_new_layers_get_hierarchical_names_and_layer_docs():
    net = nn.Sequential([nn.ConvTranspose2d(2, 4, 2, stride=2), nn.GroupNorm(2, 4), nn.PReLU(4),
                         nn.InstanceNorm2d(4, affine=True), nn.Upsample(2), nn.Mish()])
    assert params(net) == {"0.weight": (2, 4, 2, 2), "0.bias": (4,), "1.weight": (4,), "1.bias": (4,),
                           "2.weight": (4,), "3.weight": (4,), "3.bias": (4,)}
    assert params(nn.InstanceNorm2d(4)) == {}  # PyTorch's default: no affine weights
    model = build_one(net, ["batch", 2, 3, 3])
    assert {n.name.split("/")[0] for n in model.graph.node} == {str(i) for i in range(6)}
    (resize,) = [n for n in model.graph.node if n.op_type == "Resize"]
    assert resize.name == "4/Resize" and resize.doc_string == "Upsample(scale_factor=2, mode='nearest')"
    assert repr(net[0]).startswith("ConvTranspose2d(2, 4, kernel=(2, 2), stride=(2, 2)")


# -- argument and shape errors -------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: nn.GroupNorm(4, 6), "num_channels 6 is not divisible by num_groups 4"),
    (lambda: nn.ConvTranspose2d(4, 6, 3, groups=4), "not divisible by groups=4"),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=2), "output_padding"),
    (lambda: nn.ConvTranspose2d(4, 6, 3, padding="same"), "padding must be a number"),
])  # fmt: skip
def test_bad_arguments(make, match):
    with pytest.raises(OnnxkitError, match=match):
        make()


# Each was an error from deep inside (Linear(0, 3): ZeroDivisionError in the initialiser; Linear(4.0, 3):
# numpy's "'float' object cannot be interpreted as an integer"; Conv2d(3, 8, 3, padding="full"): "too many
# values to unpack"; Dropout("0.1"): "'<=' not supported"), or none until the build or ONNX Runtime
# (Conv2d(3, 8, (3, 3, 3)), LayerNorm(0), MaxPool2d(2, padding=2), GroupNorm(2.0, 4), Upsample(0)).
@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(0, 3), "Linear: in_features must be a positive integer, got 0"),
    (lambda: nn.Linear(4, -1), "Linear: out_features must be a positive integer, got -1"),
    (lambda: nn.Embedding(0, 8), "Embedding: num_embeddings must be a positive integer, got 0"),
    (lambda: nn.Embedding(10, 8, std=-1.0), r"Embedding: std must be >= 0, got -1.0"),
    (lambda: nn.Conv2d(0, 8, 3), "Conv2d: in_channels must be a positive integer, got 0"),
    (lambda: nn.Conv2d(3, 8, 0), r"Conv2d: kernel_size must be a positive integer or a pair of them, got 0"),
    (lambda: nn.Conv2d(3, 8, (3, 3, 3)), r"Conv2d: kernel_size must be .* a pair of them, got \(3, 3, 3\)"),
    (lambda: nn.Conv2d(3, 8, 3, stride=0), "Conv2d: stride must be a positive integer or a pair"),
    (lambda: nn.Conv2d(3, 8, 3, dilation=(1, 0)), "Conv2d: dilation must be a positive integer or a pair"),
    (lambda: nn.Conv2d(3, 8, 3, padding=-1), "Conv2d: padding must be a non-negative integer or a pair"),
    (lambda: nn.Conv2d(3, 8, 3, padding="full"), "Conv2d: padding must be 'same', 'valid', a non-negative"),
    (lambda: nn.Conv2d(4, 8, 3, groups=0), "Conv2d: groups must be a positive integer, got 0"),
    (lambda: nn.ConvTranspose2d(4, 6, 3, output_padding=-1), "ConvTranspose2d: output_padding must be a non-neg"),
    (lambda: nn.MaxPool2d(0), "MaxPool2d: kernel_size must be a positive integer"),
    (lambda: nn.AvgPool2d(2, stride=0), "AvgPool2d: stride must be a positive integer"),
    (lambda: nn.MaxPool2d(2, padding=2), r"MaxPool2d: padding 2 must be at most half the window \(kernel_size "
                                         r"\(2, 2\)\), as PyTorch requires"),
    (lambda: nn.AvgPool2d(3, 1, padding=2), r"AvgPool2d: padding 2 must be at most half the window"),
    (lambda: nn.MaxPool2d(2, padding="same"), r'MaxPool2d: padding="same" needs stride 1, got stride \(2, 2\)'),
    (lambda: nn.BatchNorm2d(0), "BatchNorm2d: num_features must be a positive integer, got 0"),
    (lambda: nn.BatchNorm1d(4, momentum=1.5), r"BatchNorm1d: momentum must be in \[0, 1\], got 1.5"),
    (lambda: nn.LayerNorm(8, eps=-1e-5), "LayerNorm: eps must be >= 0"),
    (lambda: nn.LayerNorm(0), "LayerNorm: normalized_shape must be a positive integer, got 0"),
    (lambda: nn.InstanceNorm2d(-3), "InstanceNorm2d: num_features must be a positive integer, got -3"),
    (lambda: nn.InstanceNorm2d(3, track_running_stats=True), "InstanceNorm2d: track_running_stats=True is not "
                                                             "supported"),
    (lambda: nn.GroupNorm(0, 4), "GroupNorm: num_groups must be a positive integer, got 0"),
    (lambda: nn.GroupNorm(3, 4), "GroupNorm: num_channels 4 is not divisible by num_groups 3"),
    (lambda: nn.Dropout(1.0), r"Dropout: p must be in \[0, 1\), got 1.0"),
    (lambda: nn.Dropout(-0.1), r"Dropout: p must be in \[0, 1\), got -0.1"),
    (lambda: nn.Dropout(float("nan")), r"Dropout: p must be in \[0, 1\), got nan"),
    (lambda: nn.MultiHeadAttention(0, 2), "MultiHeadAttention: dim must be a positive integer, got 0"),
    (lambda: nn.MultiHeadAttention(8, 3), "MultiHeadAttention: dim 8 is not divisible by num_heads 3"),
    (lambda: nn.MultiHeadAttention(8, 2, dropout=1.0), r"MultiHeadAttention: dropout must be in \[0, 1\)"),
    (lambda: nn.FeedForward(8, 0), "FeedForward: hidden must be a positive integer, got 0"),
    (lambda: nn.TransformerEncoderLayer(8, 2, 0, batch_first=True),
     "TransformerEncoderLayer: dim_feedforward must be a positive integer"),
    (lambda: nn.TransformerEncoderLayer(8, 3, 16, batch_first=True),
     "TransformerEncoderLayer: d_model 8 is not divisible by nhead 3"),
    (lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=2, batch_first=True),
     r"TransformerEncoderLayer: dropout must be in"),
    (lambda: nn.PReLU(0), "PReLU: num_parameters must be a positive integer, got 0"),
    (lambda: nn.CELU(0.0), "CELU: alpha must be non-zero"),
    (lambda: nn.Upsample(0), "Upsample: scale_factor must be a positive number or a list of them, got 0"),
    (lambda: nn.Upsample((2, -1)), r"Upsample: scale_factor must be a positive number .* got \(2, -1\)"),
    (lambda: nn.Upsample(2, "bicubic"), "Upsample: mode must be one of nearest, bilinear, got 'bicubic'"),
    (lambda: nn.Upsample(), "Upsample: give either size or scale_factor"),
    (lambda: nn.Upsample(2, size=4), "Upsample: give either size or scale_factor, not both"),
    (lambda: nn.Upsample(size=(4, 0)), "Upsample: size must be a positive integer, got 0"),
    (lambda: nn.Upsample(2, align_corners=True), "Upsample: align_corners is for mode='bilinear'"),
])  # fmt: skip
def test_bad_layer_arguments_name_the_layer_and_the_argument(make, message):
    with pytest.raises(OnnxkitError, match=f"^{message}") as e:
        make()
    assert not isinstance(e.value, TypeError)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(4.0, 3), "Linear: in_features must be a positive integer, got 4.0"),
    (lambda: nn.Linear("4", 3), "Linear: in_features must be a positive integer, got '4'"),
    (lambda: nn.Linear(True, 3), "Linear: in_features must be a positive integer, got True"),
    (lambda: nn.Embedding(10, None), "Embedding: embedding_dim must be a positive integer, got None"),
    (lambda: nn.Conv2d(3, 8, 3.0), "Conv2d: kernel_size must be a positive integer or a pair of them, got 3.0"),
    (lambda: nn.Conv2d(3, 8, (3, 2.5)), r"Conv2d: kernel_size .* got \(3, 2.5\)"),
    (lambda: nn.Conv2d(3, 8, 3, stride="2"), "Conv2d: stride must be a positive integer or a pair of them, got '2'"),
    (lambda: nn.MaxPool2d(2, padding=0.5), "MaxPool2d: padding must be a non-negative integer or a pair .* 0.5"),
    (lambda: nn.BatchNorm2d(16, eps="1e-5"), "BatchNorm2d: eps must be a number, got '1e-5'"),
    (lambda: nn.BatchNorm1d(16, momentum=None), "BatchNorm1d: momentum must be a number, got None"),
    (lambda: nn.GroupNorm(2.0, 4), "GroupNorm: num_groups must be a positive integer, got 2.0"),
    (lambda: nn.Dropout("0.1"), "Dropout: p must be a number, got '0.1'"),
    (lambda: nn.Dropout(True), "Dropout: p must be a number, got True"),
    (lambda: nn.LeakyReLU("0.2"), "LeakyReLU: negative_slope must be a number, got '0.2'"),
    (lambda: nn.ELU(None), "ELU: alpha must be a number, got None"),
    (lambda: nn.Softmax(1.0), "Softmax: dim must be an integer, got 1.0"),
    (lambda: nn.Flatten("1"), "Flatten: start_dim must be an integer, got '1'"),
    (lambda: nn.MultiHeadAttention(8.0, 2), "MultiHeadAttention: dim must be a positive integer, got 8.0"),
    (lambda: nn.Upsample("2"), "Upsample: scale_factor must be a number, got '2'"),
])  # fmt: skip
def test_layer_arguments_of_the_wrong_type_are_a_type_error_the_cli_prints_on_one_line(make, message):
    with pytest.raises(TypeError, match=f"^{message}$") as e:
        make()
    assert isinstance(e.value, OnnxkitError)


def test_numpy_sizes_and_valid_arguments_still_build_the_same_layers():
    i4, i3 = np.int64(4), np.int32(3)
    assert nn.Linear(i4, i3).weight.shape == (4, 3) and type(nn.Linear(i4, i3).in_features) is int
    conv = nn.Conv2d(i3, 8, (i3, np.int64(1)), stride=[1, 2], padding=(np.int64(1), 0), groups=np.int64(1))
    assert (conv.kernel, conv.stride, conv.pads, conv.weight.shape) == ((3, 1), (1, 2), [1, 0, 1, 0], (8, 3, 3, 1))
    assert nn.Conv2d(3, 8, 3, padding="same").pads == [1, 1, 1, 1]
    assert nn.Conv2d(3, 8, 3, padding="valid").pads == [0, 0, 0, 0]
    assert nn.MaxPool2d(3, stride=1, padding=1).pads == [1, 1, 1, 1]
    assert nn.Embedding(np.int64(10), 4).weight.shape == (10, 4)
    assert nn.GroupNorm(np.int64(2), 4).num_groups == 2 and nn.PReLU(np.int64(3)).weight.shape == (3,)
    assert nn.Dropout(0).p == 0 and nn.Dropout(np.float32(0.5)).p == 0.5
    assert nn.Upsample([2, 1.5]).scale_factor == [2, 1.5]
    assert nn.Upsample(np.float64(2.0), "bilinear").mode == "bilinear"
    assert nn.LeakyReLU(-0.5).negative_slope == -0.5 and nn.Softmax(np.int64(1)).dim == 1
    assert nn.TransformerEncoderLayer(8, 2, 16, dropout=0, layer_norm_eps=0.0, batch_first=True).norm1.eps == 0.0


class Call(nn.Module):
    """A functional op as a layer: fn(x, *args)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def forward(self, x):
        return self.fn(x, *self.args)


class Net(nn.Module):
    def __init__(self, layer):
        self.body = nn.Sequential([layer])

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("layer, shape, match", [
    (nn.GroupNorm(2, 6), [6], r"group_norm expects input of rank >= 2 with 6 channels on axis 1, got shape \[6\]"),
    (nn.GroupNorm(2, 6), ["batch", 4, 3], "with 6 channels on axis 1"),
    (nn.InstanceNorm2d(3), ["batch", 3, 5], r"InstanceNorm2d expects input of rank 4 with 3 channels"),
    (nn.ConvTranspose2d(3, 2, 2), ["batch", 4, 5, 5], r"ConvTranspose2d expects input of rank 4 with 3 channels"),
    (nn.GlobalMaxPool2d(), ["batch", 3, 5], r"GlobalMaxPool2d expects input of rank 4"),
    (nn.PReLU(3), ["batch", 4, 5, 5], "prelu with 3 slopes expects input of rank >= 2 with 3 channels"),
    (nn.Upsample(2, "bilinear"), ["batch", 3, 5], "bilinear upsample expects input of rank 4"),
    # the layers refuse these when made (above); the functional ops at the call
    (Call(nn.ops.upsample, 2, "bicubic"), ["batch", 3, 5, 5], "unknown upsample mode 'bicubic'; use one of nearest, b"),
    (nn.Upsample((2, 2, 2), "nearest"), ["batch", 3, 5, 5], r"scale_factor \(2, 2, 2\) needs one positive number or 2"),
    (Call(nn.ops.upsample, 0), ["batch", 3, 5, 5], "needs one positive number"),
    (Call(nn.ops.celu, 0.0), ["batch", 3], "celu alpha must be non-zero"),
    # built, then refused by ONNX Runtime (a negative size) or run to an empty output
    (nn.ConvTranspose2d(1, 1, 3, padding=5), ["batch", 1, 2, 2], r"its output would be \['batch', 1, -6, -6\]"),
    (nn.Upsample(0.1), ["batch", 1, 8, 8], r"upsample by 0.1 of \['batch', 1, 8, 8\] would be empty"),
    (nn.Upsample(1.5), ["batch", 1, "h", 8], r"upsample by 1.5 over a size known only at run time: PyTorch keeps the "
                                             r"sizes this scale leaves unchanged"),
])  # fmt: skip
def test_bad_inputs_name_the_layer(layer, shape, match):
    with pytest.raises(OnnxkitError, match=f"^body.0: .*{match}") as e:
        nn.build(Net(layer), {"x": nn.Input(shape)})
    assert "\n" not in str(e.value)


def ref_window_1d(x, k, stride, pad, dilation, reduce, fill):
    """[N, C, L] -> [N, C, L'] by `reduce` over each window (numpy), `fill` in the padding."""
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad)), constant_values=fill)
    span = dilation * (k - 1) + 1
    starts = range(0, padded.shape[2] - span + 1, stride)
    return np.stack([reduce(padded[:, :, s:s + span:dilation], axis=2) for s in starts], axis=2)


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups"), [(1, 0, 1, 1), (2, 1, 1, 2), (1, "same", 2, 1),
                                                                       (3, 2, 2, 2), (2, "valid", 1, 1)])
def test_conv1d_and_1d_pools_match_numpy(stride, padding, dilation, groups):
    # PyTorch's Conv1d / MaxPool1d / AvgPool1d over [N, C, L] (a first port of a sequence model met
    # "module 'onnxkit.nn' has no attribute 'Conv1d'"); outputs equal torch.nn's to 2e-7 (checked beside torch 2.13)
    x = RNG_1D.normal(size=(2, 4, 11)).astype(np.float32)
    conv = nn.Conv1d(4, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)
    randomize(conv)
    assert params(conv) == {"weight": (6, 4 // groups, 3), "bias": (6,)}
    pad = {"same": dilation, "valid": 0}.get(padding, padding)
    w, b = conv.weight.value, conv.bias.value
    cols = []
    for g in range(groups):  # each group's output channels read its own input channels
        xs, ws = np.split(x, groups, axis=1)[g], np.split(w, groups, axis=0)[g]
        windows = np.stack([ref_window_1d(xs[:, c:c + 1], 3, stride, pad, dilation, lambda a, axis: a, 0)
                            for c in range(xs.shape[1])], axis=1)  # [N, Cin/g, 1, L', 3]
        cols.append(np.einsum("nclk,ock->nol", windows[:, :, 0], ws))
    close(run(conv, x), np.concatenate(cols, axis=1) + b[None, :, None])
    pool_pad = padding if isinstance(padding, int) and padding <= 1 else 1
    close(run(nn.MaxPool1d(3, stride, pool_pad, dilation), x),
          ref_window_1d(x, 3, stride, pool_pad, dilation, np.max, -np.inf))
    close(run(nn.AvgPool1d(3, stride, pool_pad), x), ref_window_1d(x, 3, stride, pool_pad, 1, np.mean, 0))


def test_conv1d_refuses_a_pair_and_a_4d_input_in_one_line():
    with pytest.raises(OnnxkitError, match=r"^Conv1d: kernel_size must be a positive integer \(or a tuple of one\), "):
        nn.Conv1d(4, 6, (3, 3))
    with pytest.raises(OnnxkitError, match=r"Conv1d expects input of rank 3 with 4 channels on axis 1, got shape"):
        build_one(nn.Conv1d(4, 6, 3), ["batch", 4, 6, 6])


RNG_1D = np.random.default_rng(7)


def test_layers_take_pytorchs_positional_arguments_in_its_order_and_its_defaults():
    # each was a silent difference for a PyTorch port: ConvTranspose2d's 8th argument is bias (9th dilation; it was
    # the reverse), InstanceNorm2d's 3rd momentum (4th affine; a True there was taken as affine... and 0.1 too),
    # Dropout() drops half (it dropped 0.1), Softmax takes dim= (axis= only before)
    up = nn.ConvTranspose2d(4, 8, 3, 2, 1, 1, 1, False, 2)
    assert (up.bias, up.dilation) == (None, (2, 2))
    norm = nn.InstanceNorm2d(4, 1e-3, 0.1, True)
    assert params(norm) == {"weight": (4,), "bias": (4,)} and norm.eps == 1e-3
    assert params(nn.InstanceNorm2d(4, 1e-5, 0.1)) == {}
    assert nn.Dropout().p == 0.5 and nn.Softmax(dim=1).dim == 1
