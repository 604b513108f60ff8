"""Gradient rules for elementwise, linear-algebra, reduction and shape ops against central finite
differences."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from gradcases import check, rand, single_node
from onnx import TensorProto, helper, numpy_helper

from onnxkit.autodiff import add_gradients, gradient_name, missing_rules
from onnxkit.autodiff.check import gradcheck, run_gradients, with_projection_loss
from onnxkit.autodiff.rules import shape as shape_rules
from onnxkit.autodiff.rules.shape import SMALL_TABLE


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
def test_binary_ops_reduce_broadcasting_back(op):
    a, b = rand(2, 3, 4), rand(3, 1, seed=1, low=0.5, high=1.5)
    check(op, {"a": a, "b": b}, ["a", "b"])


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_and_min_share_the_gradient_between_tied_inputs(op):
    # central differences at a two-way tie see half of dy on each side, as torch.maximum's autograd gives
    a = rand(2, 3)
    b = a[1].copy()
    b[0] += 0.5  # row 1 ties b except in column 0; row 0 ties it nowhere
    check(op, {"a": a, "b": b}, ["a", "b"])
    check(op, {"a": a, "b": a.copy(), "c": a - 1 if op == "Max" else a + 1}, ["a", "b", "c"])


def test_float_mod():
    # torch.fmod: a - trunc(a / b) b, with a / b kept away from the integers where y jumps
    a = np.array([[2.3, -1.7, 0.4], [-3.1, 1.2, 5.8]])
    check("Mod", {"a": a, "b": np.array([0.9, 0.7, 1.1])}, ["a", "b"], {"fmod": 1})


@pytest.mark.parametrize("op", ["Sum", "Mean"])
def test_variadic_ops(op):
    check(op, {"a": rand(2, 3), "b": rand(3, seed=2), "c": rand(1, 3, seed=3)}, ["a", "b", "c"])


@pytest.mark.parametrize("op,low", [("Neg", -1), ("Abs", 0.1), ("Reciprocal", 0.5), ("Exp", -1), ("Log", 0.5),
                                    ("Sqrt", 0.5), ("Sin", -1), ("Cos", -1), ("Identity", -1)])
def test_unary_math(op, low):
    check(op, {"x": rand(3, 4, low=low, high=2.0)}, ["x"])


@pytest.mark.parametrize("op,low,high", [("Tan", -1.2, 1.2), ("Sinh", -2, 2), ("Cosh", -2, 2), ("Asin", -0.9, 0.9),
                                         ("Acos", -0.9, 0.9), ("Atan", -3, 3), ("Asinh", -3, 3), ("Acosh", 1.2, 4),
                                         ("Atanh", -0.9, 0.9)])
def test_trigonometric_and_hyperbolic(op, low, high):
    check(op, {"x": rand(3, 4, low=low, high=high)}, ["x"])


def test_erf():
    check("Erf", {"x": rand(3, 4)}, ["x"])


def test_pow_base_and_exponent():
    check("Pow", {"a": rand(2, 3, low=0.5, high=2.0), "e": rand(3, seed=4, low=1.0, high=3.0)}, ["a", "e"])


def test_where_routes_each_side():
    cond = np.array([[True, False, True]])
    check("Where", {"c": cond, "a": rand(2, 3), "b": rand(1, 3, seed=5)}, ["a", "b"])


def test_clip_passes_inside_the_bounds():
    x = np.array([[-2.0, -0.5, 0.3], [0.9, 1.7, -0.1]])
    check("Clip", {"x": x}, ["x"], constants={"lo": np.array(-1.0), "hi": np.array(1.0)})


def test_cast_between_floats():
    # float64 -> float32 rounds the output, so the steps are wider
    check("Cast", {"x": rand(2, 3)}, ["x"], {"to": 1}, eps=1e-2, tol=1e-5, ort_dtype=None)


def test_cast_like_between_floats():
    # CastLike to a float32 tensor's type (the exporters' cast of a constant to the input's type)
    model, feeds = single_node("CastLike", {"x": rand(2, 3)}, constants={"like": np.zeros(1)}, opset=21)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.zeros(1, np.float32), "like"))
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    for analytic, numeric in gradcheck(model, feeds, ["x"], eps=1e-2).values():
        np.testing.assert_allclose(analytic, numeric, atol=1e-5)


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                    ((2, 1, 3, 4), (3, 4, 2)),
                                    # a 1-D operand: a row or a column the result drops, and the dot product
                                    ((4,), (4, 5)), ((4,), (2, 3, 4, 5)), ((3, 4), (4,)), ((2, 3, 4), (4,)),
                                    ((4,), (4,))])
def test_matmul(shapes):
    check("MatMul", {"a": rand(*shapes[0]), "b": rand(*shapes[1], seed=7)}, ["a", "b"])


@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_transposes_alpha_beta_and_bias(ta, tb):
    a = rand(*((4, 3) if ta else (3, 4)))
    b = rand(*((5, 4) if tb else (4, 5)), seed=8)
    check("Gemm", {"a": a, "b": b, "c": rand(5, seed=9)}, ["a", "b", "c"],
          {"transA": ta, "transB": tb, "alpha": 0.7, "beta": 1.3})


def test_reshape_flatten_squeeze_unsqueeze():
    check("Reshape", {"x": rand(2, 6)}, ["x"], constants={"s": np.array([3, -1])})
    check("Flatten", {"x": rand(2, 3, 2)}, ["x"], {"axis": 1})
    check("Squeeze", {"x": rand(2, 1, 3)}, ["x"], constants={"axes": np.array([1])})
    check("Unsqueeze", {"x": rand(2, 3)}, ["x"], constants={"axes": np.array([0, 2])})


def test_transpose():
    check("Transpose", {"x": rand(2, 3, 4)}, ["x"], {"perm": [2, 0, 1]})
    check("Transpose", {"x": rand(2, 3)}, ["x"])


def test_concat_and_split():
    check("Concat", {"a": rand(2, 3), "b": rand(2, 1, seed=1), "c": rand(2, 2, seed=2)}, ["a", "b", "c"], {"axis": -1})
    check("Split", {"x": rand(5, 2)}, ["x"], outputs=2, constants={"s": np.array([2, 3])})


@pytest.mark.parametrize("starts,ends,axes,steps", [([1], [3], [0], [1]), ([-1, 0], [0, 4], [1, 0], [-1, 2]),
                                                    ([0], [100], [1], [1])])
def test_slice(starts, ends, axes, steps):
    check("Slice", {"x": rand(4, 3)}, ["x"], constants={
        "s": np.array(starts), "e": np.array(ends), "a": np.array(axes), "t": np.array(steps)})


@pytest.mark.parametrize("opset", [13, 17])  # before 16, ScatterElements cannot add: repeats are summed first
@pytest.mark.parametrize("axis,index_type", [(0, np.int64), (0, np.int32), (1, np.int64)])
def test_gather_adds_repeated_indices(axis, index_type, opset):
    index = np.array([[2, 0], [2, -1]], index_type)
    check("Gather", {"x": rand(4, 3)}, ["x"], {"axis": axis}, constants={"i": index}, opset=opset)


@pytest.mark.parametrize("opset", [13, 17])
def test_gather_elements(opset):
    index = np.array([[0, 0, 3], [1, 2, 1], [3, 3, 3]])
    check("GatherElements", {"x": rand(3, 4)}, ["x"], {"axis": 1}, constants={"i": index}, opset=opset)


def test_expand_tile_pad():
    check("Expand", {"x": rand(3, 1)}, ["x"], constants={"s": np.array([2, 3, 4])})
    check("Tile", {"x": rand(2, 3)}, ["x"], constants={"r": np.array([2, 3])})
    check("Pad", {"x": rand(2, 3)}, ["x"], constants={"p": np.array([1, 0, 2, 1]), "v": np.array(0.5)})


@pytest.mark.parametrize("mode,opset", [("reflect", 17), ("edge", 17), ("wrap", 19)])
@pytest.mark.parametrize("folded", [True, False])
def test_pad_that_copies_input_elements(mode, opset, folded, monkeypatch):
    # pads as wide as reflect allows on both ends of two axes (corners copy twice over). Known pads
    # and sizes fold dy back with slices; else (pads computed at run time, a symbolic size) dy is
    # scattered to the positions the same Pad of each element's position names
    if not folded:
        monkeypatch.setattr(shape_rules, "_folded", lambda *args: None)
    check("Pad", {"x": rand(2, 3, 4)}, ["x"], {"mode": mode}, opset=opset,
          constants={"p": np.array([0, 2, 3, 0, 1, 2])})


@pytest.mark.parametrize("mode,folded", [("constant", True), ("reflect", True), ("reflect", False)])
def test_pad_of_listed_axes(mode, folded, monkeypatch):
    # opset 18's axes input (Attention-24's function body pads its mask so): pads for axes -1 and 0
    if not folded:
        monkeypatch.setattr(shape_rules, "_folded", lambda *args: None)
    check("Pad", {"x": rand(3, 2, 4)}, ["x"], {"mode": mode}, opset=18,
          constants={"p": np.array([2, 1, 1, 0]), "v": np.array(0.5), "axes": np.array([-1, 0])})


def _padded(x: np.ndarray, pads: list[int]) -> np.ndarray:
    """numpy's Pad in constant mode (zeros), negative pads cropping."""
    rank = x.ndim
    x = x[tuple(slice(max(-pads[a], 0), x.shape[a] - max(-pads[a + rank], 0)) for a in range(rank))]
    return np.pad(x, [(max(pads[a], 0), max(pads[a + rank], 0)) for a in range(rank)])


@pytest.mark.parametrize("pads", [[-1, 0, 0, 0], [1, -1, -1, 2], [0, -2, 1, 0]])
@pytest.mark.parametrize("known", [True, False])
def test_pad_with_negative_pads_crops(pads, known):
    # a negative pad crops (torch's F.pad(x, (-1, 0))): dx is dy padded back with zeros; dy was sliced as
    # for positive pads, starting at -1 (from the end): a [1, 3] gradient for x [4, 3]. onnx.reference's
    # Pad refuses negative pads, so onnxruntime runs it in float64 against numpy's crop and pad
    x = rand(4, 3)
    p = np.array(pads)
    model, feeds = single_node("Pad", {"x": x}, constants={"p": p})
    loss = with_projection_loss(model)
    if not known:  # pads fed at run time
        del loss.graph.initializer[[t.name for t in loss.graph.initializer].index("p")]
        loss.graph.input.append(helper.make_tensor_value_info("p", TensorProto.INT64, [4]))
        feeds["p"] = p
    projection = next(numpy_helper.to_array(t) for t in loss.graph.initializer if t.name == "y0.projection")
    got = run_gradients(loss, feeds, ["x"])["x"]
    expected = np.zeros_like(x)
    for i in np.ndindex(x.shape):  # the loss is linear in x: its gradient is each one-hot x's loss
        one = np.zeros_like(x)
        one[i] = 1.0
        expected[i] = (_padded(one, pads) * projection).sum()
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("exclusive,reverse,axis", [(0, 0, 1), (1, 0, 0), (0, 1, -1), (1, 1, 1)])
def test_cumsum(exclusive, reverse, axis):
    check("CumSum", {"x": rand(3, 5)}, ["x"], {"exclusive": exclusive, "reverse": reverse},
          constants={"axis": np.array(axis)})


@pytest.mark.parametrize("reduction", ["none", "add"])
@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_elements(reduction, axis):
    # distinct targets along the axis (with repeats and no reduction the winner is unspecified);
    # two rows of indices into three: the rule slices dy to the indices' extent off the axis
    index = np.array([[0, 3, 1], [2, 0, 3]]) if axis == 1 else np.array([[1, 0, 2, 0], [0, 2, 1, 2]])
    if reduction == "add":  # a repeated target: both updates add up there
        index[1, 1 if axis == 1 else 0] = index[1, 0] if axis == 1 else index[0, 0]
    updates = rand(2, 3, seed=5) if axis == 1 else rand(2, 4, seed=5)
    check("ScatterElements", {"x": rand(3, 4), "i": index, "u": updates}, ["x", "u"],
          {"axis": axis, "reduction": reduction}, opset=18)


@pytest.mark.parametrize("reduction", ["max", "min"])
@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_elements_max_and_min_share_dy_between_ties(reduction, axis):
    # PyTorch's scatter_reduce("amax" / "amin"), which its exporter writes (a segment max pooling): dy goes to
    # the data or update elements equal to the result, split evenly between ties, as central differences see it
    # (it was 'ScatterElements with reduction 'max' has no gradient rule')
    index = np.array([[0, 3, 3], [2, 0, 3]]) if axis == 1 else np.array([[1, 0, 2, 0], [1, 2, 0, 2]])
    x, updates = rand(3, 4), rand(2, 3, seed=5) if axis == 1 else rand(2, 4, seed=5)
    extreme = 2.0 if reduction == "max" else -2.0
    pair = ((0, 1), (0, 2)) if axis == 1 else ((0, 0), (1, 0))  # two updates landing on one element
    updates[pair[0]] = updates[pair[1]] = extreme
    updates[1, 1] = x[(1, 0) if axis == 1 else (2, 1)] = 0.3  # an update and the data it lands on
    check("ScatterElements", {"x": x, "i": index, "u": updates}, ["x", "u"],
          {"axis": axis, "reduction": reduction}, opset=18)


@pytest.mark.parametrize("reduction", ["none", "add"])
@pytest.mark.parametrize("index,updates", [([[0], [2]], (2, 4)), ([[1, 3], [0, 0], [2, 1]], (3,))])
def test_scatter_nd(reduction, index, updates):
    # rows 0 and 2 replaced (or added to); then three single elements
    check("ScatterND", {"x": rand(3, 4), "i": np.array(index), "u": rand(*updates, seed=7)}, ["x", "u"],
          {"reduction": reduction}, opset=18)


@pytest.mark.parametrize("upper,k", [(1, 0), (0, 1), (1, -2)])
def test_trilu(upper, k):
    check("Trilu", {"x": rand(2, 4, 5)}, ["x"], {"upper": upper}, constants={"k": np.array(k)})


@pytest.mark.parametrize("axis,largest", [(1, 1), (0, 0), (-1, 1)])
def test_top_k(axis, largest):
    check("TopK", {"x": rand(4, 6)}, ["x"], {"axis": axis, "largest": largest}, outputs=2,
          constants={"k": np.array([3])})


REDUCTIONS = ["ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
              "ReduceLogSumExp", "ReduceMax", "ReduceMin"]


@pytest.mark.parametrize("op", REDUCTIONS)
@pytest.mark.parametrize("axes,keepdims,opset", [([1], 1, 17), ([0, 2], 0, 17), (None, 0, 17), ([-1], 1, 18),
                                                 ([], 1, 18)])
def test_reductions(op, axes, keepdims, opset):
    # positive inputs away from 0 (L1's kink, LogSum's domain); distinct values (Max / Min ties)
    x = rand(2, 3, 4, low=0.2, high=1.5) + np.arange(24).reshape(2, 3, 4) * 1e-3
    attrs: dict = {"keepdims": keepdims}
    constants = {}
    if axes == []:  # no axes and noop_with_empty_axes: the identity
        attrs["noop_with_empty_axes"] = 1
    elif axes is not None and (opset >= 18 or op == "ReduceSum"):
        constants["axes"] = np.array(axes)
    elif axes is not None:
        attrs["axes"] = axes
    check(op, {"x": x}, ["x"], attrs, opset=opset, constants=constants)


def test_reduce_max_shares_the_gradient_between_ties():
    # finite differences cannot see how a tie splits (as torch.amax: evenly): checked by value
    x = np.array([[0.5, 0.9, 0.9, 0.1], [0.3, 0.3, 0.3, 0.3]])
    model, feeds = single_node("ReduceMax", {"x": x}, {"axes": [1], "keepdims": 0}, dtype=np.float32)
    got = run_gradients(with_projection_loss(model), feeds, ["x"])["x"]
    weights = np.random.default_rng(0).standard_normal(2).astype(np.float32)  # the projection of y
    np.testing.assert_allclose(got, [[0, weights[0] / 2, weights[0] / 2, 0], [weights[1] / 4] * 4], rtol=1e-6)


@pytest.mark.parametrize("batch_dims,indices", [(0, [[1, 0], [2, 3], [1, 0]]), (0, [[2], [0]]), (1, [[3], [0]])])
def test_gather_nd_adds_repeated_indices(batch_dims, indices):
    check("GatherND", {"x": rand(3, 4) if batch_dims == 0 else rand(2, 4)}, ["x"], {"batch_dims": batch_dims},
          constants={"i": np.array(indices)})


@pytest.mark.parametrize("batch", [0, "batch"])
@pytest.mark.parametrize("axes", [[1], [-1, 1]])
def test_reduce_mean_of_an_empty_batch_has_an_empty_gradient(batch, axes):
    # each output averages the reduced dims (3 * 4 here); counting them as size(x) / size(y) divided
    # by zero when a batch was empty: in Python for a static 0, at run time for a symbolic batch
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)
    loss = helper.make_node("ReduceSum", ["y"], ["loss"], keepdims=0)
    axes = sorted(set(a % 3 for a in axes))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 4])
    graph = helper.make_graph([node, loss], "mean", [x], [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
                              [numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    session = ort.InferenceSession(add_gradients(model, ["x"], "loss").SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    for rows in [0] if batch == 0 else [0, 2]:
        grad = session.run(["x.grad"], {"x": np.ones((rows, 3, 4), np.float32)})[0]
        count = 12 if axes == [1, 2] else 3
        np.testing.assert_allclose(grad, np.full((rows, 3, 4), 1 / count, np.float32), rtol=1e-6)


@pytest.mark.parametrize("zeros", [[], [(0, 1)], [(0, 1), (0, 4)], [(1, 2), (2, 0)]])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), (None, 0), ([0, 1], 1)])
def test_reduce_prod_with_zeros(zeros, axes, keepdims):
    x = rand(3, 5, low=0.5, high=1.5)  # away from 0, so the finite differences see no sign change
    for where in zeros:
        x[where] = 0.0
    attrs = {"keepdims": keepdims, **({"axes": axes} if axes else {})}
    check("ReduceProd", {"x": x}, ["x"], attrs, ort_tol=1e-3)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    check("DepthToSpace", {"x": rand(2, 8, 3, 2)}, ["x"], {"blocksize": 2, "mode": mode})


def test_depth_to_space_crd_with_symbolic_channels():
    # PixelShuffle's CRD regrouping read the channel count from the static shape and refused without one
    model, feeds = single_node("DepthToSpace", {"x": rand(2, 8, 3, 2)}, {"blocksize": 2, "mode": "CRD"})
    projected = with_projection_loss(model)
    expected = run_gradients(projected, feeds, ["x"], runtime="reference")["x"]
    for dim, name in zip(projected.graph.input[0].type.tensor_type.shape.dim, ["n", "c", "h", "w"], strict=True):
        dim.dim_param = name
    got = run_gradients(projected, feeds, ["x"])["x"]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_space_to_depth():
    check("SpaceToDepth", {"x": rand(2, 3, 4, 6)}, ["x"], {"blocksize": 2})


def test_dropout_scales_kept_values():
    # With ratio 0 the mask keeps everything, so the forward is deterministic for the check.
    check("Dropout", {"x": rand(3, 4)}, ["x"], outputs=2,
          constants={"r": np.array(0.0), "t": np.array(True)})


@pytest.mark.parametrize("rows", [2, SMALL_TABLE + 1])  # a one-hot GEMM up to SMALL_TABLE rows, then a scatter
def test_gather_thousands_of_repeats_of_one_row_all_add_up(rows):
    # onnxruntime's CPU ScatterND drops some of 2048 updates to one row (threads race), so the
    # rule must not use it
    index = np.zeros((2048, 1), np.int64)
    check("Gather", {"x": rand(rows, 384 if rows == 2 else 8)}, ["x"], constants={"i": index}, ort_tol=1e-4)


@pytest.mark.parametrize("opset", [13, 17])
def test_gather_from_a_large_table_adds_repeated_indices(opset):
    index = np.array([[2, 0], [2, -1], [SMALL_TABLE, 2]])
    check("Gather", {"x": rand(SMALL_TABLE + 1, 3)}, ["x"], constants={"i": index}, opset=opset)


def test_two_parameters_sharing_one_gradient_value_each_get_it():
    # Add of two same-shaped inputs hands both the same gradient value; each output must get it
    check("Add", {"a": rand(2, 3), "b": rand(2, 3, seed=3)}, ["a", "b"])


def test_a_subgraph_reading_an_active_value_is_on_the_gradient_path():
    # an If whose branches read x from the outer graph: refused by name, not cut from the path
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["out"])], "branch", [],
                               [helper.make_tensor_value_info("out", TensorProto.DOUBLE, [2])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "if", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2]),
                                             helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    assert [op for op, _ in missing_rules(model, ["x"], "y")] == ["If"]


def test_what_to_differentiate_is_checked_and_a_name_given_twice_gets_one_gradient():
    """A misspelt parameter got a zero gradient reading a value no graph holds (onnxruntime refused the model), a
    string wrt was read letter by letter, a name given twice made two outputs of one name, and a misspelt loss was
    'does not depend on any of the parameters'."""
    from onnxkit.autodiff import add_gradients
    from onnxkit.errors import OnnxkitError

    model, feeds = single_node("Mul", {"a": rand(2, 3), "b": rand(2, 3, seed=1)})
    with pytest.raises(OnnxkitError, match=r"^no graph input or initializer 'bb' to differentiate with respect to\. "
                                           r"Did you mean: b\?"):
        add_gradients(model, ["a", "bb"], "y0")
    with pytest.raises(OnnxkitError, match=r"^no value 'y' in the graph to take as the loss\. Did you mean: y0\?"):
        add_gradients(model, ["a"], "y")
    with pytest.raises(TypeError, match=r"^wrt must be a list of parameter names, such as \['a'\], not str"):
        add_gradients(model, "a", "y0")
    with pytest.raises(TypeError, match=r"^model must be an onnx.ModelProto \(onnx.load it first\), not str"):
        add_gradients("model.onnx", ["a"], "y0")  # type: ignore[arg-type]
    twice = add_gradients(model, ["a", "a"], "y0")
    assert [o.name for o in twice.graph.output] == ["y0", "a.grad"]
    from onnx.reference import ReferenceEvaluator

    (grad,) = ReferenceEvaluator(twice).run(["a.grad"], feeds)
    np.testing.assert_array_equal(grad, feeds["b"])  # d sum(a * b) / da: a loss of 6 values, differentiated as a sum


@pytest.mark.parametrize("rows", [6, SMALL_TABLE + 1])
@pytest.mark.parametrize("runtime", ["reference", "onnxruntime"])
def test_padding_row_lookups_send_no_gradient_other_reads_of_the_table_do(rows, runtime):
    # nn.Embedding(padding_idx=0) tied to an output projection: the lookups of row 0 add nothing to
    # its gradient, the MatMul reading the whole table still does (PyTorch's semantics)
    from onnxkit.metadata_keys import PADDING_ROW_KEY

    dtype, elem = (np.float64, TensorProto.DOUBLE) if runtime == "reference" else (np.float32, TensorProto.FLOAT)
    table, z = rand(rows, 3), rand(2, rows, seed=1)
    index = np.array([[1, 0, 3], [0, 2, -rows]], np.int32)  # -rows is row 0 too
    lookup = helper.make_node("Gather", ["x", "i"], ["y0"])
    lookup.metadata_props.add(key=PADDING_ROW_KEY, value="0")
    graph = helper.make_graph(
        [lookup, helper.make_node("MatMul", ["z", "x"], ["y1"])], "tied",
        [helper.make_tensor_value_info("x", elem, [rows, 3])],
        [helper.make_tensor_value_info("y0", elem, [2, 3, 3]), helper.make_tensor_value_info("y1", elem, [2, 3])],
        [numpy_helper.from_array(index, "i"), numpy_helper.from_array(z.astype(dtype), "z")])
    model = with_projection_loss(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    projections = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    got = run_gradients(model, {"x": table.astype(dtype)}, ["x"], runtime=runtime)["x"]
    expected = z.T @ projections["y1.projection"]
    for position, row in np.ndenumerate(index % rows):
        if row != 0:
            expected[row] += projections["y0.projection"][position]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert np.abs(expected[0]).min() > 0  # row 0 still trains, through the MatMul


def test_pow_at_a_zero_base_or_exponent_is_pytorchs_zero_not_nan():
    # PyTorch: de = 0 where a = 0 and e >= 0, da = 0 where e = 0 (0 * log 0 and 0 * 0^-1 were NaN)
    model, feeds = single_node("Pow", {"a": np.array([0.0, 1.5, 0.0, 2.0]), "e": np.array([2.0, 2.0, 0.0, 0.0])})
    grads = run_gradients(with_projection_loss(model), feeds, ["a", "e"])
    assert np.isfinite(grads["a"]).all() and np.isfinite(grads["e"]).all()
    assert grads["e"][0] == 0.0 and grads["a"][2] == 0.0 and grads["a"][3] == 0.0 and grads["e"][1] != 0.0


def test_pow_with_an_exponent_of_another_float_type_gets_its_gradient_in_that_type():
    base, exponent = rand(2, 3, low=0.5, high=2.0), rand(3, seed=4, low=1.0, high=3.0).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Pow", ["a", "e"], ["y"])], "pow",
                              [helper.make_tensor_value_info("a", TensorProto.DOUBLE, [2, 3]),
                               helper.make_tensor_value_info("e", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    feeds = {"a": base, "e": exponent}
    got = run_gradients(with_projection_loss(model), feeds, ["e"])["e"]  # the graph failed to load
    analytic, numeric = gradcheck(model, feeds, ["e"], eps=1e-3)["e"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, numeric, rtol=1e-4)


def test_clip_bounds_get_the_gradient_of_the_values_they_clip():
    x = np.array([[-2.0, -0.5, 0.3], [0.9, 1.7, -1.4]])
    check("Clip", {"x": x, "lo": np.array(-1.0), "hi": np.array(1.0)}, ["x", "lo", "hi"])


def test_pads_constant_value_gets_the_gradient_of_the_places_it_fills():
    for pads in ([1, 0, 2, 1], [0, 2, 1, 0]):
        check("Pad", {"x": rand(3, 4)}, ["x", "value"],
              constants={"pads": np.array(pads, np.int64), "value": np.array(0.5)})


def test_reduce_l2_of_a_slice_of_zeros_sends_zero_not_nan():
    model, feeds = single_node("ReduceL2", {"x": np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])}, {"axes": [1]},
                               opset=17)
    grad = run_gradients(with_projection_loss(model), feeds, ["x"])["x"]
    assert (grad[0] == 0).all() and np.isfinite(grad).all() and (grad[1] != 0).all()


def test_sqrt_of_zero_sends_zero_not_infinity():
    # TorchScript's torch.cdist is Sqrt(Max(squared distances, 0)): a point's distance to itself sent dy / 0 = inf
    # back (NaN after the Max), and training stopped at its second step; PyTorch's cdist gives 0 there
    model, feeds = single_node("Sqrt", {"x": np.array([0.0, 0.25, 4.0])})
    projected = with_projection_loss(model)
    dy = numpy_helper.to_array(next(t for t in projected.graph.initializer if t.name.endswith(".projection")))
    grad = run_gradients(projected, feeds, ["x"])["x"]
    np.testing.assert_allclose(grad, [0.0, dy[1], dy[2] / 4], rtol=1e-6)


def test_float64_gather_at_opset_13_runs_on_onnxruntime():
    # before opset 16 repeats add up through a one-hot GEMM: onnxruntime has no float64 OneHot
    index = np.array([[2, 0], [2, -1], [SMALL_TABLE, 2]])
    check("Gather", {"x": rand(SMALL_TABLE + 1, 3)}, ["x"], constants={"i": index}, opset=13,
          ort_dtype=np.float64, ort_tol=1e-10)


def test_hardmax_is_cut_like_argmax():
    model, feeds = single_node("Hardmax", {"x": rand(2, 3)}, {"axis": -1}, dtype=np.float32)  # no float64 kernel
    graph = model.graph
    graph.node.append(helper.make_node("Mul", ["y0", "x"], ["z"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3]))
    grad = run_gradients(with_projection_loss(model), feeds, ["x"])["x"]  # the one-hot times the projection
    assert grad.shape == (2, 3) and ((grad != 0).sum(axis=1) == 1).all()


def test_slice_gradient_of_a_large_tensor_before_opset_16():
    # before opset 16 the positions were summed as if they could repeat, by a one-hot of [positions, positions]:
    # a tf2onnx magika (opset 15) asked onnxruntime for 4 TB in its first training step. A slice picks each position
    # once; its gradient is dy where it picked, zero elsewhere (numpy)
    model, feeds = single_node("Slice", {"x": rand(2, 100_000)}, opset=15, dtype=np.float32, constants={
        "s": np.array([1]), "e": np.array([100_000]), "a": np.array([1]), "t": np.array([1])})
    projected = with_projection_loss(model)
    weights = [numpy_helper.to_array(t) for t in projected.graph.initializer if t.dims[-1:] == [99_999]]
    assert len(weights) == 1
    expected = np.zeros((2, 100_000), np.float32)
    expected[:, 1:] = weights[0]
    np.testing.assert_allclose(run_gradients(projected, feeds, ["x"])["x"], expected, rtol=1e-6)


@pytest.mark.parametrize("op", ["Neg", "Sub"])
def test_a_loss_negated_at_its_end_negates_its_seed_as_a_constant(op):
    """A scalar loss that is a Neg (a negative log-likelihood) or a Sub of the parameters' part: the backward pass's
    seed goes through it as a negated constant, so no backward node computes from constants alone (folding such a
    node before a Conv model's CPU lowering cost each fit an import of onnx's reference evaluator, 60-90 ms)."""
    x = rand(4, 3, seed=1)
    nodes = [helper.make_node("Mul", ["x", "w"], ["scaled"]),
             helper.make_node("ReduceMean", ["scaled"], ["total"], keepdims=0)]
    nodes += ([helper.make_node("Neg", ["total"], ["loss"])] if op == "Neg"
              else [helper.make_node("Sub", ["half", "total"], ["loss"])])
    graph = helper.make_graph(nodes, "negated", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 3])],
                              [helper.make_tensor_value_info("loss", TensorProto.DOUBLE, [])],
                              [numpy_helper.from_array(rand(3, seed=2), "w"),
                               numpy_helper.from_array(np.array(0.5), "half")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    trained = add_gradients(model, ["w"], "loss")
    made = {"x", *(o for n in trained.graph.node for o in n.output)}
    backward = [n for n in trained.graph.node if n.name.startswith("onnxkit.grad/")]
    assert backward and all(any(i in made for i in n.input if i) for n in backward)
    assert not any(n.op_type == "Neg" for n in backward)
    session = ort.InferenceSession(trained.SerializeToString(), providers=["CPUExecutionProvider"])
    (gradient,) = session.run([gradient_name("w")], {"x": x})
    np.testing.assert_allclose(gradient, -x.sum(axis=0) / x.size, rtol=1e-14)


@pytest.mark.parametrize("trained", [["w"], ["w", "k"]])
def test_a_seed_times_a_fixed_loss_weight_is_one_constant_and_a_trained_weight_stays_read(trained):
    """loss = mean(x * w) * k, k a loss's weight (label smoothing's 1 - eps): the seed times k is made as one constant,
    no node of constants alone (the reference evaluator's import again, 1.30x a fit's steps); k trained, its value
    changes, so the backward reads it."""
    x = rand(4, 3, seed=1)
    nodes = [helper.make_node("Mul", ["x", "w"], ["scaled"]), helper.make_node("ReduceMean", ["scaled"], ["total"],
                                                                              keepdims=0),
             helper.make_node("Mul", ["total", "k"], ["loss"])]
    graph = helper.make_graph(nodes, "weighted", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 3])],
                              [helper.make_tensor_value_info("loss", TensorProto.DOUBLE, [])],
                              [numpy_helper.from_array(rand(3, seed=2), "w"),
                               numpy_helper.from_array(np.array(0.9), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with_gradients = add_gradients(model, trained, "loss")
    made = {"x", *trained, *(o for n in with_gradients.graph.node for o in n.output)}  # parameters: inputs in training
    backward = [n for n in with_gradients.graph.node if n.name.startswith("onnxkit.grad/")]
    assert all(any(i in made for i in n.input if i) for n in backward)
    assert any("k" in n.input for n in backward) == ("k" in trained)
    session = ort.InferenceSession(with_gradients.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(trained, session.run([gradient_name(n) for n in trained], {"x": x}), strict=True))
    np.testing.assert_allclose(values["w"], 0.9 * x.sum(axis=0) / x.size, rtol=1e-14)
    if "k" in trained:
        np.testing.assert_allclose(values["k"], (x * rand(3, seed=2)).mean(), rtol=1e-14)


@pytest.mark.parametrize("dims,shapes", [(["batch", 5], [[4, 5], [0, 5], [7, 5]]),
                                         (["batch", "seq", 5], [[2, 6, 5], [0, 3, 5]]), ([4, 3, 5], [[4, 3, 5]])])
def test_a_bias_over_leading_axes_sums_its_gradient_as_one_product_with_ones(dims, shapes):
    # y = x + b, loss = sum(y * w): db is w summed over the leading axes; made as ones @ rows (ReduceSum over
    # leading axes is 4-8x slower in onnxruntime), with no Reshape where the rows are already 2-D
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["y"]), helper.make_node("Mul", ["y", "w"], ["z"]),
         helper.make_node("ReduceSum", ["z"], ["loss"], keepdims=0)], "bias",
        [x_info, helper.make_tensor_value_info("w", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(rand(5).astype(np.float32), "b")])
    model = add_gradients(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
                          ["b"], "loss")
    backward = [n.op_type for n in model.graph.node if n.name.startswith("onnxkit.grad")]
    assert "ReduceSum" not in backward and backward.count("MatMul") == 1
    assert ("Reshape" in backward) == (len(dims) == 3)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in shapes:
        w = rand(*shape, seed=3).astype(np.float32)
        grad = session.run(["b.grad"], {"x": rand(*shape, seed=2).astype(np.float32), "w": w})[0]
        np.testing.assert_allclose(grad, w.reshape(-1, 5).sum(0), rtol=1e-6, atol=1e-7)


def test_a_mean_over_every_axis_spreads_its_scalar_gradient_without_a_reshape():
    node = helper.make_node("ReduceMean", ["x"], ["loss"], keepdims=0)
    graph = helper.make_graph([node], "mean", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])])
    model = add_gradients(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
                          ["x"], "loss")
    assert [n.op_type for n in model.graph.node if n.name.startswith("onnxkit.grad")].count("Reshape") == 0
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for rows in (4, 1, 0):
        grad = session.run(["x.grad"], {"x": np.ones((rows, 3), np.float32)})[0]
        np.testing.assert_array_equal(grad, np.full((rows, 3), 1 / (3 * rows) if rows else 0, np.float32))
