"""Gradient rules for convolution, pooling and resizing: finite differences in float64 on
onnx.reference, the same gradient graph on ONNX Runtime in float32, ties routed like PyTorch,
and a model with a symbolic batch run at two batch sizes."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from gradcases import check, rand, single_node
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxkit.autodiff import add_gradients, gradient_name
from onnxkit.autodiff.check import LOSS, gradcheck, reference, run_gradients, with_projection_loss
from onnxkit.autodiff.rules import conv as conv_rules
from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import value_types


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def same_forward(op: str, inputs: dict, attrs: dict | None = None, constants: dict | None = None) -> None:
    """ONNX Runtime computes the same forward values as onnx.reference (whose function the
    finite differences check), so the gradient is the one of what ORT runs."""
    model, feeds = single_node(op, inputs, attrs, constants=constants, dtype=np.float32)
    np.testing.assert_allclose(_session(model).run(None, feeds)[0], ReferenceEvaluator(model).run(None, feeds)[0],
                               rtol=1e-5, atol=1e-5, err_msg=f"{op} forward: onnxruntime vs onnx.reference")


def check_both(op: str, inputs: dict, wrt: list[str], attrs: dict | None = None, **kw) -> None:
    same_forward(op, inputs, attrs, kw.get("constants"))
    check(op, inputs, wrt, attrs, **kw)


def check_on_onnxruntime(op: str, inputs: dict, attrs: dict, step: float, tol: float) -> None:
    """Our gradient graph on ONNX Runtime against ORT's own float32 central differences, where
    onnx.reference computes the op wrongly. The ops are linear in each input (or piecewise linear
    with values further apart than `step`), so the differences are exact up to rounding."""
    model, feeds = single_node(op, inputs, attrs, dtype=np.float32)
    projected = with_projection_loss(model)
    got = run_gradients(projected, feeds, list(feeds))
    session = _session(projected)
    for name, value in feeds.items():
        numeric = np.zeros(value.shape)
        for index in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[index] += step
            down[index] -= step
            losses = [float(session.run([LOSS], {**feeds, name: moved})[0]) for moved in (up, down)]
            numeric[index] = (losses[0] - losses[1]) / (2 * step)
        np.testing.assert_allclose(got[name], numeric, atol=tol, err_msg=f"{op}: d/d{name}")


# -- Conv --------------------------------------------------------------------------------------


def test_conv_strided_padded_dilated_with_bias():
    # 7 is not a multiple of the stride, so the input gradient needs output_padding
    check_both("Conv", {"x": rand(2, 3, 7, 6), "w": rand(4, 3, 3, 2, seed=1), "b": rand(4, seed=2)},
               ["x", "w", "b"], {"strides": [2, 2], "pads": [1, 0, 2, 1], "dilations": [1, 2]})


@pytest.mark.parametrize("attrs", [
    {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"group": 2, "strides": [1, 2], "pads": [3, 0, 1, 2], "dilations": [2, 1]},  # pads wider than the kernel
])
def test_grouped_conv(attrs):
    check_both("Conv", {"x": rand(1, 4, 5, 6), "w": rand(6, 2, 2, 3, seed=1), "b": rand(6, seed=2)},
               ["x", "w", "b"], attrs)


@pytest.mark.parametrize("attrs", [{"pads": [1, 1, 1, 1]}, {"strides": [2, 2], "dilations": [2, 2]}])
def test_depthwise_conv(attrs):
    check_both("Conv", {"x": rand(2, 3, 6, 6), "w": rand(6, 1, 3, 3, seed=1)}, ["x", "w"], {"group": 3, **attrs})


@pytest.mark.parametrize("attrs", [{"pads": [1, 1, 1, 1]}, {"pads": [2, 0, 0, 3], "dilations": [2, 1]},
                                   {"pads": [3, 0, 1, 2]}])  # pads wider than the kernel
def test_stride_one_input_gradient_by_the_flipped_kernel(monkeypatch, attrs):
    # over FLIPPED_FROM positions a stride-1 input gradient is a Conv, not a ConvTranspose
    monkeypatch.setattr(conv_rules, "FLIPPED_FROM", 30)
    inputs = {"x": rand(2, 3, 6, 5), "w": rand(4, 3, 3, 2, seed=1), "b": rand(4, seed=2)}
    check_both("Conv", inputs, ["x", "w", "b"], attrs)
    model, _ = single_node("Conv", inputs, attrs)
    ops = [n.op_type for n in add_gradients(with_projection_loss(model), ["x"], LOSS).graph.node]
    assert ops.count("Conv") == 2 and "ConvTranspose" not in ops


def test_flipped_kernel_input_gradient_1d_and_3d(monkeypatch):
    monkeypatch.setattr(conv_rules, "FLIPPED_FROM", 8)
    check_both("Conv", {"x": rand(2, 2, 9), "w": rand(3, 2, 3, seed=1)}, ["x", "w"], {"pads": [2, 0]})
    check_both("Conv", {"x": rand(1, 2, 4, 3, 3), "w": rand(2, 2, 2, 2, 1, seed=1)}, ["x", "w"],
               {"pads": [0, 1, 0, 1, 0, 0], "dilations": [2, 1, 1]})


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_auto_pad(auto_pad):
    check_both("Conv", {"x": rand(1, 2, 5, 5), "w": rand(3, 2, 2, 2, seed=1)}, ["x", "w"],
               {"auto_pad": auto_pad, "strides": [2, 2]})


def test_conv_1d_and_3d():
    check_both("Conv", {"x": rand(2, 2, 7), "w": rand(3, 2, 3, seed=1)}, ["x", "w"], {"strides": [2], "pads": [1, 1]})
    check_both("Conv", {"x": rand(1, 2, 4, 3, 3), "w": rand(2, 2, 2, 2, 1, seed=1)}, ["x", "w"],
               {"strides": [2, 1, 1], "pads": [0, 1, 0, 1, 0, 0]})


def test_weight_gradient_in_chunks_of_positions(monkeypatch):
    # columns of 2 input channels x 9 taps x 8 bytes (float64): 3 positions a chunk, 30 positions
    monkeypatch.setattr(conv_rules, "COLUMN_BYTES", 2 * 9 * 8 * 3)
    check_both("Conv", {"x": rand(2, 2, 6, 5), "w": rand(4, 2, 3, 3, seed=1)}, ["x", "w"], {"pads": [1, 1, 1, 1]})
    check_both("Conv", {"x": rand(2, 4, 5, 6), "w": rand(4, 2, 3, 3, seed=1)}, ["w"], {"group": 2, "strides": [2, 1]})
    model, _ = single_node("Conv", {"x": rand(2, 2, 6, 5), "w": rand(4, 2, 3, 3, seed=1)}, {"pads": [1, 1, 1, 1]})
    graph = with_projection_loss(model)
    ops = [n.op_type for n in add_gradients(graph, ["w"], LOSS).graph.node]
    assert ops.count("Gather") == ops.count("MatMul") == 10  # 30 positions, 3 a chunk


@pytest.mark.parametrize("out_channels", [20, 4])  # more weight rows than columns (2 x 9 taps), and fewer
def test_weight_gradient_either_way_round(out_channels):
    # the GEMM makes the longer side of the weight gradient its rows
    inputs = {"x": rand(2, 2, 5, 4), "w": rand(out_channels, 2, 3, 3, seed=1)}
    check_both("Conv", inputs, ["w"], {"pads": [1, 1, 1, 1]})
    model, _ = single_node("Conv", inputs, {"pads": [1, 1, 1, 1]})
    ops = [n.op_type for n in add_gradients(with_projection_loss(model), ["w"], LOSS).graph.node]
    assert ops.count("Gemm" if out_channels > 18 else "MatMul") == 1


# -- ConvTranspose -----------------------------------------------------------------------------


def test_conv_transpose_strided_with_output_padding_and_bias():
    check_both("ConvTranspose", {"x": rand(2, 3, 3, 4), "w": rand(3, 2, 3, 3, seed=1), "b": rand(2, seed=2)},
               ["x", "w", "b"], {"strides": [2, 3], "output_padding": [1, 2], "pads": [1, 0, 0, 1],
                                 "dilations": [1, 2]})


def test_conv_transpose_depthwise_and_1d():
    # onnx.reference's grouped ConvTranspose is right only for one channel per group and no bias
    check_both("ConvTranspose", {"x": rand(1, 3, 3, 3), "w": rand(3, 1, 2, 2, seed=1)}, ["x", "w"],
               {"group": 3, "strides": [2, 2]})
    check_both("ConvTranspose", {"x": rand(2, 2, 4), "w": rand(2, 3, 3, seed=1)}, ["x", "w"],
               {"strides": [2], "pads": [1, 0], "output_padding": [1]})


def test_grouped_conv_transpose_on_onnxruntime():
    # onnx.reference cannot be the oracle here (see above)
    check_on_onnxruntime("ConvTranspose", {"x": rand(2, 4, 3, 3), "w": rand(4, 3, 2, 2, seed=1), "b": rand(6, seed=2)},
                         {"group": 2, "strides": [2, 1], "pads": [0, 1, 1, 0], "output_padding": [1, 0]},
                         step=1.0, tol=1e-3)


def test_conv_transpose_same_upper():
    check_both("ConvTranspose", {"x": rand(1, 2, 3, 3), "w": rand(2, 2, 3, 3, seed=1)}, ["x", "w"],
               {"strides": [2, 2], "auto_pad": "SAME_UPPER"})


# -- pooling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},  # windows tile the input; 7 leaves a remainder
    {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 1, 0, 0], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},  # overlapping, padded
    {"kernel_shape": [2, 3], "strides": [1, 1]},
    {"kernel_shape": [2, 2], "strides": [2, 1], "dilations": [2, 2]},
    {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [1, 1], "strides": [2, 3]},  # taps miss some positions
    {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
])
def test_max_pool(attrs):
    check_both("MaxPool", {"x": rand(2, 2, 7, 6)}, ["x"], attrs)


def test_max_pool_same_lower_on_onnxruntime():
    # onnx.reference sizes SAME_LOWER pools wrongly; values 0.01 apart keep each maximum for the step
    x = np.random.default_rng(4).permutation(2 * 2 * 5 * 6).reshape(2, 2, 5, 6) * 0.01
    check_on_onnxruntime("MaxPool", {"x": x}, {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
                         step=1e-3, tol=1e-2)


def test_max_pool_1d_and_3d():
    check_both("MaxPool", {"x": rand(2, 2, 9)}, ["x"], {"kernel_shape": [3], "strides": [2], "pads": [1, 1]})
    check_both("MaxPool", {"x": rand(1, 2, 4, 4, 3)}, ["x"], {"kernel_shape": [2, 2, 2], "strides": [2, 2, 1]})


def _first_max_routing(x: np.ndarray, dy: np.ndarray, kernel, strides, pads) -> np.ndarray:
    """PyTorch's max-pool backward in loops: each window's gradient to its first maximum."""
    dx = np.zeros_like(x)
    for n, c, i, j in np.ndindex(dy.shape):
        best = None
        for a, b in itertools.product(range(kernel[0]), range(kernel[1])):
            h, w = i * strides[0] - pads[0] + a, j * strides[1] - pads[1] + b
            inside = 0 <= h < x.shape[2] and 0 <= w < x.shape[3]
            if inside and (best is None or x[n, c, h, w] > x[n, c, best[0], best[1]]):
                best = (h, w)
        dx[n, c, best[0], best[1]] += dy[n, c, i, j]
    return dx


@pytest.mark.parametrize("attrs", [{"kernel_shape": [2, 2], "strides": [2, 2]},
                                   {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}])
def test_max_pool_ties_go_to_the_first_maximum(attrs):
    x = np.random.default_rng(3).integers(0, 3, (2, 2, 6, 6)).astype(np.float64)
    for dtype, runtime in ((np.float64, "reference"), (np.float32, "onnxruntime")):
        model, feeds = single_node("MaxPool", {"x": x}, attrs, dtype=dtype)
        projected = with_projection_loss(model)
        dy = numpy_helper.to_array(next(t for t in projected.graph.initializer if t.name == "y0.projection"))
        expected = _first_max_routing(x, dy.astype(np.float64), attrs["kernel_shape"], attrs["strides"],
                                      attrs.get("pads", [0, 0]))
        got = run_gradients(projected, feeds, ["x"], runtime=runtime)["x"]
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=runtime)


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_overlapping_max_pool_adds_dy_at_its_indices_from_opset_16():
    # ResNet's stem pool (3x3, stride 2, pad 1) over ReLU outputs (ties at zero): opset 17 recomputes the
    # MaxPool with Indices and scatter-adds dY there, no strided Slices; opset 15 cuts the nine windows out (and
    # trims the padded frame: a tenth Slice).
    # Both give PyTorch's routing (the loops above), on onnx.reference in float64 and ONNX Runtime in float32.
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    x = np.maximum(rand(2, 3, 9, 8, seed=7), 0)
    paths = {17: {"ScatterElements": 1, "MaxPool": 2, "Slice": 0},
             15: {"Slice": 10, "MaxPool": 1, "ScatterElements": 0}}
    for opset, ops in paths.items():
        for dtype, runtime in ((np.float64, "reference"), (np.float32, "onnxruntime")):
            model, feeds = single_node("MaxPool", {"x": x}, attrs, dtype=dtype, opset=opset)
            projected = with_projection_loss(model)
            graph = add_gradients(projected, ["x"], LOSS)
            assert {op: _op_counts(graph).get(op, 0) for op in ops} == ops, (opset, _op_counts(graph))
            dy = numpy_helper.to_array(next(t for t in projected.graph.initializer if t.name == "y0.projection"))
            expected = _first_max_routing(x, dy.astype(np.float64), [3, 3], [2, 2], [1, 1])
            got = run_gradients(projected, feeds, ["x"], runtime=runtime)["x"]
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=f"opset {opset}, {runtime}")


def test_max_pool_with_its_own_indices_reads_them():
    # MaxPool2d(return_indices=True): the gradient scatters at the forward's Indices, no second MaxPool
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2]}
    model, feeds = single_node("MaxPool", {"x": rand(2, 2, 7, 7)}, attrs, outputs=2)
    model.graph.output.pop()  # the indices feed nothing but the gradient
    graph = add_gradients(with_projection_loss(model), ["x"], LOSS)
    assert _op_counts(graph)["MaxPool"] == 1
    for name, (analytic, numeric) in gradcheck(model, feeds, ["x"]).items():
        np.testing.assert_allclose(analytic, numeric, atol=1e-8, err_msg=f"d/d{name}")


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "strides": [1, 1], "pads": [1, 0, 1, 1]},
    {"kernel_shape": [2, 2], "strides": [2, 2]},
])
def test_average_pool(attrs, include_pad):
    check_both("AveragePool", {"x": rand(2, 2, 7, 6)}, ["x"], {**attrs, "count_include_pad": include_pad})


def test_average_pool_ceil_mode():
    check_both("AveragePool", {"x": rand(1, 2, 6, 7)}, ["x"], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                            "ceil_mode": 1})


def test_global_pools():
    check_both("GlobalAveragePool", {"x": rand(2, 3, 4, 5)}, ["x"])
    check_both("GlobalMaxPool", {"x": rand(2, 3, 4, 5)}, ["x"])
    tied = np.zeros((1, 2, 3, 3))  # every element is a maximum: the first one gets the gradient
    model, feeds = single_node("GlobalMaxPool", {"x": tied}, dtype=np.float32)
    got = run_gradients(with_projection_loss(model), feeds, ["x"])["x"]
    assert np.count_nonzero(got) == 2 and np.all(got.reshape(2, -1)[:, 0] != 0)


# -- Resize ------------------------------------------------------------------------------------


def _resize_model(x_shape, dtype, attrs, scales=None, sizes=None, opset=17) -> onnx.ModelProto:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [numpy_helper.from_array(np.array(scales if scales is not None else [], np.float32), "scales")]
    inputs = ["x", "", "scales"]
    if sizes is not None:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
        inputs.append("sizes")
    node = helper.make_node("Resize", inputs, ["y"], **attrs)
    graph = helper.make_graph([node], "resize", [helper.make_tensor_value_info("x", elem, list(x_shape))], [], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output.extend(v for v in inferred.graph.value_info if v.name == "y")
    return model


@pytest.mark.parametrize("attrs,scales,sizes", [
    ({"mode": "nearest"}, [1, 1, 2, 2], None),
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, [1, 1, 3, 2], None),
    ({"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, None, [2, 2, 7, 5]),
    ({"mode": "linear"}, [1, 1, 2, 2], None),
    ({"mode": "linear"}, [1, 1, 0.5, 1], None),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [2, 2, 7, 9]),
    ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, [1, 1, 2, 3], None),
    ({"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, [1, 1, 2, 2], None),
    ({"mode": "cubic"}, [1, 1, 2, 2], None),  # PyTorch's bicubic: a = -0.75, edge pixels repeated
    ({"mode": "cubic", "coordinate_transformation_mode": "align_corners"}, None, [2, 2, 7, 8]),
    ({"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}, [1, 1, 1.5, 2], None),
    ({"mode": "cubic", "coordinate_transformation_mode": "asymmetric"}, [1, 1, 0.5, 1], None),
    # opset 19's half_pixel_symmetric (it was refused): half_pixel, its centre kept where a size was rounded down
    ({"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}, [1, 1, 1.7, 2.3], None),
    ({"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}, [1, 1, 0.6, 1], None),
    ({"mode": "nearest", "coordinate_transformation_mode": "half_pixel_symmetric"}, [1, 1, 2.5, 1.5], None),
    ({"mode": "cubic", "coordinate_transformation_mode": "half_pixel_symmetric"}, None, [2, 2, 7, 5]),
])
def test_resize(attrs, scales, sizes):
    x = rand(2, 2, 4, 3)
    opset = 19 if attrs.get("coordinate_transformation_mode") == "half_pixel_symmetric" else 17
    model = _resize_model(x.shape, np.float64, attrs, scales, sizes, opset)
    # cubic: both runtimes place some sample points ~1e-7 off the exact ones (scales held as floats),
    # which the cubic weights' slopes turn into ~1e-6 of the reference's forward pass
    tolerance = 1e-5 if attrs["mode"] == "cubic" else 1e-6
    for name, (analytic, numeric) in gradcheck(model, {"x": x}, ["x"]).items():
        np.testing.assert_allclose(analytic, numeric, atol=tolerance, err_msg=f"d/d{name}")
    model32, feeds32 = _resize_model(x.shape, np.float32, attrs, scales, sizes, opset), {"x": x.astype(np.float32)}
    np.testing.assert_allclose(_session(model32).run(None, feeds32)[0],
                               ReferenceEvaluator(model).run(None, {"x": x})[0], atol=1e-5,
                               err_msg="forward: onnxruntime vs onnx.reference")
    expected = run_gradients(with_projection_loss(model), {"x": x}, ["x"], runtime="reference")["x"]
    got = run_gradients(with_projection_loss(model32), feeds32, ["x"])["x"]
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("attrs,x_shape,scales", [
    ({"mode": "linear"}, (1, 2, 2, 3, 2), [1, 1, 2, 2, 2]),  # nn.Upsample(mode="trilinear") of a volume
    ({"mode": "nearest"}, (1, 2, 2, 3, 2), [1, 1, 2, 1, 3]),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, (2, 1, 3, 2, 2), [1, 1, 0.5, 2, 1]),
    ({"mode": "nearest"}, (1, 2, 3, 2), [1, 2, 1, 1]),  # the channels
])
def test_resize_of_axes_before_the_last_two(attrs, x_shape, scales):
    # the rule refused any resized axis before the last two ("only resizing the last two axes")
    x = rand(*x_shape)
    model = _resize_model(x.shape, np.float64, attrs, scales)
    for name, (analytic, numeric) in gradcheck(model, {"x": x}, ["x"]).items():
        np.testing.assert_allclose(analytic, numeric, atol=1e-6, err_msg=f"d/d{name}")
    expected = run_gradients(with_projection_loss(model), {"x": x}, ["x"], runtime="reference")["x"]
    model32 = _resize_model(x.shape, np.float32, attrs, scales)
    got = run_gradients(with_projection_loss(model32), {"x": x.astype(np.float32)}, ["x"])["x"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_to_sizes_made_from_the_batchs_shape(mode):
    # TorchScript's F.interpolate(size=(6, 5)) with a dynamic batch: sizes = Concat(Slice(Shape(x), 0, 2), [6, 5]);
    # onnx's inference left the output's batch unnamed, and the rule refused a batch it could not tell unchanged
    x = rand(2, 2, 4, 3).astype(np.float32)
    ints = {"zero": [0], "two": [2], "hw": [6, 5]}
    projection = numpy_helper.from_array(rand(1, 2, 6, 5, seed=3).astype(np.float32), "r")
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["shape"]),
         helper.make_node("Slice", ["shape", "zero", "two", "zero"], ["nc"]),
         helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
         helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode=mode),
         helper.make_node("Mul", ["y", "r"], ["projected"]),
         helper.make_node("ReduceSum", ["projected"], [LOSS], keepdims=0)],
        "resize", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 2, 4, 3])],
        [helper.make_tensor_value_info(LOSS, onnx.TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()] + [projection])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    assert value_types(model)["y"].type.tensor_type.shape.dim[0].dim_param == "batch"
    got = run_gradients(model, {"x": x}, ["x"])["x"]
    fixed = _resize_model(x.shape, np.float64, {"mode": mode}, None, [2, 2, 6, 5])  # checked by test_resize
    fixed.graph.node.extend([helper.make_node("Mul", ["y", "r"], ["projected"]),
                             helper.make_node("ReduceSum", ["projected"], [LOSS], keepdims=0)])
    fixed.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(projection).astype(np.float64), "r"))
    del fixed.graph.output[:]
    fixed.graph.output.append(helper.make_tensor_value_info(LOSS, onnx.TensorProto.DOUBLE, []))
    expected = run_gradients(fixed, {"x": x.astype(np.float64)}, ["x"], runtime="reference")["x"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(expected).max() > 0.1


# -- MaxUnpool ---------------------------------------------------------------------------------


def _unpooled(elem: int) -> onnx.ModelProto:
    """x -> MaxPool (with indices) -> times w per channel -> MaxUnpool at those indices."""
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])
    scale = helper.make_node("Mul", ["p", "w"], ["scaled"])
    unpool = helper.make_node("MaxUnpool", ["scaled", "i"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph([pool, scale, unpool], "unpool", [
        helper.make_tensor_value_info("x", elem, [2, 2, 4, 4]), helper.make_tensor_value_info("w", elem, [2, 1, 1])],
        [helper.make_tensor_value_info("y", elem, [2, 2, 4, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_max_unpool_reads_dy_where_each_value_went():
    # nn.MaxUnpool2d after MaxPool2d(return_indices=True), a SegNet decoder: MaxUnpool had no rule
    feeds = {"x": rand(2, 2, 4, 4), "w": rand(2, 1, 1, seed=1)}
    model = _unpooled(onnx.TensorProto.DOUBLE)
    for name, (analytic, numeric) in gradcheck(model, feeds, ["x", "w"]).items():
        np.testing.assert_allclose(analytic, numeric, atol=1e-8, err_msg=f"d/d{name}")
    expected = run_gradients(with_projection_loss(model), feeds, ["x", "w"], runtime="reference")
    got = run_gradients(with_projection_loss(_unpooled(onnx.TensorProto.FLOAT)),  # onnxruntime's flat indices
                        {k: v.astype(np.float32) for k, v in feeds.items()}, ["x", "w"])
    for name in feeds:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5, err_msg=name)


# -- Col2Im (F.fold) ---------------------------------------------------------------------------


@pytest.mark.parametrize("image,block,attrs,columns", [
    ([4, 4], [2, 2], {"strides": [2, 2]}, 4),  # blocks that tile the image
    ([3, 4], [2, 2], {}, 6),  # overlapping blocks add up
    ([4, 5], [2, 2], {"dilations": [1, 2], "pads": [1, 0, 1, 1], "strides": [2, 1]}, 12),
])
def test_col2im(image, block, attrs, columns):
    inputs = {"x": rand(2, 3 * int(np.prod(block)), columns)}
    check("Col2Im", inputs, ["x"], attrs, opset=18,
          constants={"image": np.array(image, np.int64), "block": np.array(block, np.int64)})


# -- unsupported ---------------------------------------------------------------------------------


@pytest.mark.parametrize("op,attrs,message", [
    ("ConvTranspose", {"output_shape": [7, 7], "strides": [2, 2]}, "output_shape"),
    ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2], "auto_pad": "SAME_UPPER"}, "with dilations"),
    ("MaxPool", {"kernel_shape": [1, 1], "strides": [4, 4], "auto_pad": "SAME_UPPER"}, "negative pads"),
    ("MaxPool", {"kernel_shape": [1, 1], "strides": [2, 2], "ceil_mode": 1}, "starts past the input"),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "count_include_pad": 1},
     "runs past the padding"),
])
def test_attributes_the_runtimes_disagree_on_are_refused(op, attrs, message):
    inputs = {"x": rand(1, 2, 4, 4)} | ({"w": rand(2, 2, 2, 2, seed=1)} if op == "ConvTranspose" else {})
    model, _ = single_node(op, inputs, attrs)
    with pytest.raises(OnnxkitError, match=message):
        add_gradients(model, ["x"], "y0")


@pytest.mark.parametrize("attrs", [{"mode": "cubic", "coordinate_transformation_mode": "tf_crop_and_resize"},
                                   {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}])
def test_resize_modes_without_a_rule_are_refused(attrs):
    with pytest.raises(OnnxkitError, match="not supported"):
        add_gradients(_resize_model((1, 1, 3, 3), np.float64, attrs, [1, 1, 2, 2]), ["x"], "y")


# -- a symbolic batch --------------------------------------------------------------------------


def _cnn(dtype) -> tuple[onnx.ModelProto, list[str]]:
    """x [N, 2, 8, 8] -> Conv(stride 2) -> Relu -> MaxPool(3x3, stride 1) -> grouped Conv -> MaxPool(2x2)
    -> Resize x2 -> ConvTranspose -> AveragePool -> GlobalAveragePool; loss = sum(out * r)."""
    rng = np.random.default_rng(5)
    params = {"w": rng.standard_normal((4, 2, 3, 3)), "b": rng.standard_normal(4),
              "wg": rng.standard_normal((4, 2, 3, 3)), "wt": rng.standard_normal((4, 3, 2, 2)),
              "r": rng.standard_normal((3, 1, 1))}
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p", "wg"], ["cg"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["cg"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["p2", "", "scales"], ["u"], mode="linear"),
        helper.make_node("ConvTranspose", ["u", "wt"], ["t"], strides=[2, 2], output_padding=[1, 1]),
        helper.make_node("AveragePool", ["t"], ["a"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("Mul", ["g", "r"], ["m"]),
        helper.make_node("ReduceSum", ["m"], ["loss"], keepdims=0),
    ]
    inits = [numpy_helper.from_array(v.astype(dtype), k) for k, v in params.items()]
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", elem, ["N", 2, 8, 8])],
                              [helper.make_tensor_value_info("loss", elem, [])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    wrt = ["w", "b", "wg", "wt"]
    return add_gradients(model, wrt, "loss"), wrt


def test_symbolic_batch_runs_at_two_batch_sizes():
    model32, wrt = _cnn(np.float32)
    model64, _ = _cnn(np.float64)
    session, evaluator = _session(model32), reference(model64)
    names = [gradient_name(p) for p in wrt]
    for batch in (2, 3):
        x = rand(batch, 2, 8, 8, seed=batch)
        got = session.run(names, {"x": x.astype(np.float32)})
        expected = evaluator.run(names, {"x": x})
        for name, g, e in zip(names, got, expected, strict=True):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, atol=1e-4 * max(1.0, np.abs(e).max()), err_msg=f"{name} at batch {batch}")



# -- sampling at computed coordinates ------------------------------------------------------------
# onnx.reference computes GridSample's pixel coordinates and AffineGrid's output in float32 whatever
# the input type, too coarse for finite differences: these are checked against numpy readings of the
# specification in float64 instead, the gradient graphs run on onnxruntime in float32.


def grid_sample_by_definition(x, grid, mode, padding, align_corners):
    """ONNX GridSample (2-D; nearest or linear; zeros, border or reflection padding)."""
    n, c, h, w = x.shape
    def pixels(g, size):
        p = (g + 1) * (size - 1) / 2 if align_corners else ((g + 1) * size - 1) / 2
        if padding == "reflection":  # fold back into [0, size - 1], or [-0.5, size - 0.5] then clamp
            low, span = (0, size - 1) if align_corners else (-0.5, size)
            distance = np.abs(p - low)
            folds, extra = np.floor(distance / span), distance % span
            p = np.where(folds % 2 == 1, low + span - extra, low + extra)
        return np.clip(p, 0, size - 1) if padding != "zeros" else p
    px, py = pixels(grid[..., 0], w), pixels(grid[..., 1], h)
    out = np.zeros((n, c, *grid.shape[1:3]))
    def read(rows, cols):  # [N, C, Ho, Wo], zeros outside
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        r, k = np.clip(rows, 0, h - 1).astype(int), np.clip(cols, 0, w - 1).astype(int)
        return np.stack([x[i][:, r[i], k[i]] * inside[i] for i in range(n)])
    if mode == "nearest":
        return read(np.rint(py), np.rint(px))
    x0, y0 = np.floor(px), np.floor(py)
    fx, fy = (px - x0)[:, None], (py - y0)[:, None]
    out = (read(y0, x0) * (1 - fy) * (1 - fx) + read(y0, x0 + 1) * (1 - fy) * fx
           + read(y0 + 1, x0) * fy * (1 - fx) + read(y0 + 1, x0 + 1) * fy * fx)
    return out


def affine_grid_by_definition(theta, size, align_corners):
    """ONNX AffineGrid (2-D): theta [N, 2, 3] applied to the normalised pixel centres (or corners)."""
    _, _, h, w = size
    def axis(count):
        return np.linspace(-1, 1, count) if align_corners else (2 * np.arange(count) + 1) / count - 1
    ys, xs = np.meshgrid(axis(h), axis(w), indexing="ij")
    base = np.stack([xs, ys, np.ones_like(xs)], axis=-1)  # [H, W, 3]
    return np.einsum("hwk,njk->nhwj", base, theta)


def check_against(forward, model32, feeds, wrt, tol=2e-4, dtype=np.float32):
    """Our gradients of the projected loss (on onnxruntime, in the model's `dtype`) against central finite
    differences of `forward` (numpy, float64) under the same projection."""
    projected = with_projection_loss(model32)
    weights = numpy_helper.to_array(next(t for t in projected.graph.initializer if t.name.endswith(".projection")))
    got = run_gradients(projected, {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in feeds.items()}, wrt)
    for name in wrt:
        numeric, eps = np.zeros_like(feeds[name]), 1e-6
        for i in np.ndindex(feeds[name].shape):
            up, down = dict(feeds), dict(feeds)
            up[name], down[name] = feeds[name].copy(), feeds[name].copy()
            up[name][i] += eps
            down[name][i] -= eps
            numeric[i] = ((forward(**up) - forward(**down)) * weights).sum() / (2 * eps)
        np.testing.assert_allclose(got[name], numeric, rtol=0, atol=tol * max(1.0, np.abs(numeric).max()),
                                   err_msg=f"d/d{name}")


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sample(mode, padding, align_corners):
    # points past the edges too (|g| up to 2.6, folding reflection more than once): zeros padding
    # reads 0 there, border the edge, reflection the mirror image
    feeds = {"x": rand(2, 3, 4, 5), "g": rand(2, 3, 4, 2, seed=3, low=-2.6, high=2.6)}
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align_corners}
    model32, _ = single_node("GridSample", feeds, attrs, opset=20, dtype=np.float32)
    check_against(lambda x, g: grid_sample_by_definition(x, g, mode, padding, align_corners), model32, feeds,
                  ["x", "g"])


@pytest.mark.parametrize("padding", ["border", "reflection"])
def test_grid_sample_in_float64(padding):
    # border and reflection padding's slopes were cast to float32 whatever the grid's type: a float64
    # model's gradient graph multiplied float64 by float32, which onnxruntime refused to load
    feeds = {"x": rand(2, 3, 4, 5), "g": rand(2, 3, 4, 2, seed=3, low=-2.6, high=2.6)}
    attrs = {"mode": "linear", "padding_mode": padding, "align_corners": 0}
    model64, _ = single_node("GridSample", feeds, attrs, opset=20, dtype=np.float64)
    check_against(lambda x, g: grid_sample_by_definition(x, g, "linear", padding, 0), model64, feeds, ["x", "g"],
                  tol=1e-8, dtype=np.float64)


@pytest.mark.parametrize("align_corners", [0, 1])
def test_affine_grid(align_corners):
    size = np.array([2, 3, 4, 5])
    model32, _ = single_node("AffineGrid", {"theta": rand(2, 2, 3)}, {"align_corners": align_corners}, opset=20,
                             dtype=np.float32, constants={"size": size})
    check_against(lambda theta: affine_grid_by_definition(theta, size, align_corners), model32,
                  {"theta": rand(2, 2, 3)}, ["theta"])


def test_grid_sample_matches_onnxruntime_forward():
    """The numpy reading above is onnxruntime's GridSample (so the checks above test the right thing)."""
    x, g = rand(2, 3, 4, 5), rand(2, 3, 4, 2, seed=3, low=-2.6, high=2.6)
    for mode in ("linear", "nearest"):
        for padding in ("zeros", "border", "reflection"):
            for align_corners in (0, 1):
                attrs = {"mode": mode, "padding_mode": padding, "align_corners": align_corners}
                model, feeds = single_node("GridSample", {"x": x, "g": g}, attrs, opset=20, dtype=np.float32)
                np.testing.assert_allclose(_session(model).run(None, feeds)[0],
                                           grid_sample_by_definition(x, g, mode, padding, align_corners), atol=1e-5)
