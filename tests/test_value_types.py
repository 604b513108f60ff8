"""value_types on the shape arithmetic exporters write: a Reshape whose target shape is computed
from constants (PyTorch's nn.MultiheadAttention: the kept dims sliced off Shape(x) up to a Mod
of two constants) gets its rank, and a reflection Pad whose pads are computed from constants
(nn.ReflectionPad2d) its sizes, so the nodes after them can be differentiated."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.autodiff import add_gradients, gradient_name
from onnxkit.autodiff.check import gradcheck, reference
from onnxkit.graph_walks import value_types


def exported_split_heads(batch: int | str = "batch") -> onnx.ModelProto:
    """x [batch, 8] @ w [8, 12] = y -> Reshape to [batch, 3, 4] with the target computed at run
    time as Concat(Slice(Shape(y), 0, Mod(7, 6)), [3, 4]) -> Gather head 1 -> [batch, 4]."""
    def const(name: str, value: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        helper.make_node("Shape", ["y"], ["shape"]),
        const("zero", [0]), const("seven", [7]), const("six", [6]), const("heads", [3, 4]),
        helper.make_node("Mod", ["seven", "six"], ["kept"]),  # 1: onnx's shape inference cannot see through it
        helper.make_node("Slice", ["shape", "zero", "kept"], ["batch"]),
        helper.make_node("Concat", ["batch", "heads"], ["target"], axis=0),
        helper.make_node("Reshape", ["y", "target"], ["split"]),
        helper.make_node("Gather", ["split", "one"], ["head"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "split heads",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [batch, 8])],
        [helper.make_tensor_value_info("head", TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(np.random.default_rng(0).uniform(-1, 1, (8, 12)), "w"),
         numpy_helper.from_array(np.array(1, np.int64), "one")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_a_reshape_to_a_shape_computed_from_constants_gets_its_rank():
    types = value_types(exported_split_heads())
    dims = [d.dim_value or d.dim_param for d in types["split"].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 4]
    assert len(types["head"].type.tensor_type.shape.dim) == 2


def test_the_gather_after_it_is_differentiated():
    x = np.random.default_rng(1).uniform(-1, 1, (5, 8))
    for name, (analytic, numeric) in gradcheck(exported_split_heads(5), {"x": x}, ["w", "x"]).items():
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6, err_msg=name)


def exported_reflection_pad(batch: int | str = "batch") -> onnx.ModelProto:
    """nn.ReflectionPad2d(1) as PyTorch's TorchScript exporter writes it: the pads made from
    constants by ConstantOfShape, Concat, Reshape, Slice (reversing), Transpose and Cast, then a
    3x3 Conv over the padded [batch, 1, 6, 6] image."""
    def const(name: str, value: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    nodes = [
        const("count", [4]), const("given", [1, 1, 1, 1]), const("pairs", [-1, 2]), const("start", [-1]),
        const("end", [-(2**63)]), const("axis", [0]), const("step", [-1]), const("flat", [-1]),
        helper.make_node("ConstantOfShape", ["count"], ["zeros"],
                         value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Concat", ["given", "zeros"], ["all"], axis=0),
        helper.make_node("Reshape", ["all", "pairs"], ["by_axis"]),
        helper.make_node("Slice", ["by_axis", "start", "end", "axis", "step"], ["reversed"]),
        helper.make_node("Transpose", ["reversed"], ["begin_end"], perm=[1, 0]),
        helper.make_node("Reshape", ["begin_end", "flat"], ["pads64"]),
        helper.make_node("Cast", ["pads64"], ["pads"], to=TensorProto.INT64),
        helper.make_node("Pad", ["x", "pads"], ["padded"], mode="reflect"),
        helper.make_node("Conv", ["padded", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "reflection pad",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [batch, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(np.random.default_rng(0).uniform(-1, 1, (2, 1, 3, 3)), "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_a_pad_by_pads_computed_from_constants_gets_its_sizes():
    padded = value_types(exported_reflection_pad())["padded"]
    dims = [d.dim_value or d.dim_param for d in padded.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 8, 8]


def test_the_conv_after_it_is_differentiated():
    x = np.random.default_rng(1).uniform(-1, 1, (2, 1, 6, 6))
    for name, (analytic, numeric) in gradcheck(exported_reflection_pad(2), {"x": x}, ["w", "x"]).items():
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6, err_msg=name)


def exported_unoptimized_mean(batch: int | str = "batch") -> onnx.ModelProto:
    """nn.AdaptiveAvgPool2d(1) as the dynamo exporter writes it with optimize=False (the export that
    keeps BatchNorm unfolded): ReduceMean over axes Reshape(Constant [-1, -2], Constant [-1]), after
    a 1x1 Conv of [batch, 2, 3, 3] and before a Linear."""
    def const(name: str, value: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        const("dims", [-1, -2]), const("flat", [-1]),
        helper.make_node("Reshape", ["dims", "flat"], ["axes"]),
        helper.make_node("ReduceMean", ["c", "axes"], ["mean"], keepdims=1),
        helper.make_node("Flatten", ["mean"], ["pooled"]),
        helper.make_node("Gemm", ["pooled", "fc", "bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "unoptimized mean",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [batch, 2, 3, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.DOUBLE, [batch, 3])],
        [numpy_helper.from_array(rng.uniform(-1, 1, (4, 2, 1, 1)), "w"),
         numpy_helper.from_array(rng.uniform(-1, 1, (3, 4)), "fc"),
         numpy_helper.from_array(rng.uniform(-1, 1, 3), "bias")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_a_reduction_over_axes_computed_from_constants_is_differentiated():
    # before: "cannot differentiate ReduceMean (node 'node_mean'): reductions over axes computed at run
    # time have no gradient rule" for every ResNet exported by the dynamo exporter with optimize=False
    x = np.random.default_rng(3).uniform(-1, 1, (5, 2, 3, 3))
    for name, (analytic, numeric) in gradcheck(exported_unoptimized_mean(5), {"x": x}, ["w", "fc", "x"]).items():
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6, err_msg=name)


def exported_unoptimized_group_norm(batch: int | str = "batch") -> onnx.ModelProto:
    """nn.GroupNorm(4, 4) of a [batch, 4, 5] Conv1d output as the dynamo exporter writes it with
    optimize=False (Wav2Vec2's feature encoder): InstanceNormalization of the groups, then the
    weight and bias Unsqueezed over axes Range(1, Sub(3, 1), 1), a Mul and an Add."""
    def const(name: str, value: int | list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("InstanceNormalization", ["c", "ones", "zeros"], ["normed"]),
        const("one", 1), const("rank", 3),
        helper.make_node("Sub", ["rank", "one"], ["end"]),
        helper.make_node("Range", ["one", "end", "one"], ["axes"]),  # [1]: onnx's inference cannot see through it
        helper.make_node("Unsqueeze", ["gamma", "axes"], ["scale"]),
        helper.make_node("Unsqueeze", ["beta", "axes"], ["shift"]),
        helper.make_node("Mul", ["normed", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "unoptimized group norm",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [batch, 2, 7])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(rng.uniform(-1, 1, (4, 2, 3)), "w"),
         numpy_helper.from_array(np.ones(4), "ones"), numpy_helper.from_array(np.zeros(4), "zeros"),
         numpy_helper.from_array(rng.uniform(0.5, 1.5, 4), "gamma"),
         numpy_helper.from_array(rng.uniform(-1, 1, 4), "beta")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_an_unsqueeze_over_a_range_of_constants_gets_its_rank():
    types = value_types(exported_unoptimized_group_norm())
    assert [d.dim_value or d.dim_param for d in types["y"].type.tensor_type.shape.dim] == ["batch", 4, 5]


def test_a_group_norm_scaled_over_a_range_of_axes_is_differentiated():
    # before: "cannot differentiate Add (node 'node_group_norm'): the rank of 'val_30' or of its broadcast result
    # is unknown" for Hugging Face's Wav2Vec2 exported by the dynamo exporter with optimize=False
    x = np.random.default_rng(5).uniform(-1, 1, (3, 2, 7))
    checked = gradcheck(exported_unoptimized_group_norm(3), {"x": x}, ["w", "gamma", "beta", "x"])
    for name, (analytic, numeric) in checked.items():
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6, err_msg=name)


def exported_patch_resize(batch: int | str = "batch") -> onnx.ModelProto:
    """MobileViT's unfolding as the TorchScript exporter writes it: y = x [batch, 2, 3, 4] @ w [4, 16] resized
    (bilinear) to sizes Concat(Slice(Shape(y), 0, 2), Cast(Concat(ceil(h / 2.0) * 2, ceil(w / 2.0) * 2))), each
    side a float Cast, Div, Ceil and Mul of Gather(Shape(y), axis): 3 x 16 -> 4 x 16. w has 64 elements, as
    many as shape arithmetic's constants may have."""
    def const(name: str, value, dtype=np.int64) -> onnx.NodeProto:  # type: ignore[no-untyped-def]
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, dtype)))

    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Shape", ["y"], ["shape"]),
             const("zero", [0]), const("two", [2]), const("patch", 2.0, np.float32), const("first", [0])]
    for axis in (2, 3):
        nodes += [const(f"at{axis}", axis), helper.make_node("Gather", ["shape", f"at{axis}"], [f"side{axis}"]),
                  helper.make_node("Cast", [f"side{axis}"], [f"f{axis}"], to=TensorProto.FLOAT),
                  helper.make_node("Div", [f"f{axis}", "patch"], [f"q{axis}"]),
                  helper.make_node("Ceil", [f"q{axis}"], [f"c{axis}"]),
                  helper.make_node("Mul", [f"c{axis}", "patch"], [f"m{axis}"]),
                  helper.make_node("Cast", [f"m{axis}"], [f"n{axis}"], to=TensorProto.INT64),
                  helper.make_node("Unsqueeze", [f"n{axis}", "first"], [f"u{axis}"])]
    nodes += [helper.make_node("Slice", ["shape", "zero", "two"], ["kept"]),
              helper.make_node("Concat", ["u2", "u3"], ["sides"], axis=0),
              helper.make_node("Concat", ["kept", "sides"], ["sizes"], axis=0),
              helper.make_node("Resize", ["y", "", "", "sizes"], ["z"], mode="linear")]
    graph = helper.make_graph(
        nodes, "patch resize", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [batch, 2, 3, 4])],
        [helper.make_tensor_value_info("z", TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(np.random.default_rng(6).uniform(-1, 1, (4, 16)), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_sizes_computed_by_float_arithmetic_on_known_sides_are_known():
    types = value_types(exported_patch_resize())
    assert [d.dim_value for d in types["z"].type.tensor_type.shape.dim][1:] == [2, 4, 16]


def test_the_resize_of_such_sizes_is_differentiated():
    # before: "cannot differentiate Resize (node '/mobilevit/encoder/layer.4/Resize_1'): only resizing to sizes
    # known before run time is supported" for Hugging Face's MobileViT exported by TorchScript
    x = np.random.default_rng(7).uniform(-1, 1, (2, 2, 3, 4))
    for name, (analytic, numeric) in gradcheck(exported_patch_resize(2), {"x": x}, ["w", "x"]).items():
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6, err_msg=name)


def test_resize_sizes_computed_from_data_deep_in_the_network_are_not_walked_through_it():
    # the trace of Resize's sizes walked the inputs of every node it met before asking what it was: sizes read from
    # the end of 1,500 Relus (a ReduceMax of data) took it to Python's recursion limit (RecursionError)
    nodes, prev = [], "x"
    for i in range(1500):
        nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
        prev = f"r{i}"
    nodes += [helper.make_node("ReduceMax", [prev], ["most"], keepdims=0),
              helper.make_node("Cast", ["most"], ["size"], to=TensorProto.INT64),
              helper.make_node("Concat", ["nc", "size", "size"], ["sizes"], axis=0),
              helper.make_node("Resize", ["x", "", "", "sizes"], ["y"])]
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array([1, 1], np.int64), "nc")])
    types = value_types(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10))
    assert types["y"].type.tensor_type.elem_type == TensorProto.FLOAT  # typed, its sizes left to run time


def exported_channel_shuffle(batch: int | str = "batch") -> onnx.ModelProto:
    """torchvision's ShuffleNetV2 block as the TorchScript exporter writes it: x [batch, 4, 3, 3] -> 1x1 Conv ->
    x.chunk(2, dim=1) (Slice bounds (C + 1) // 2 * k from Shape) -> Concat back -> channel shuffle, a Reshape to
    [batch, 2, C // 2, H, W] made of Gathers of Shape and a Div -> Transpose -> Reshape back -> 1x1 Conv."""
    def const(name: str, value: int | list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"]), helper.make_node("Shape", ["c"], ["s0"]),
             const("i1", [1]), const("one", [1]), const("two", [2]), const("zero", [0]),
             helper.make_node("Gather", ["s0", "i1"], ["ch"], axis=0),
             helper.make_node("Add", ["ch", "one"], ["ch1"]),
             helper.make_node("Div", ["ch1", "two"], ["half"]),
             helper.make_node("Mul", ["half", "two"], ["end"]),
             helper.make_node("Slice", ["c", "zero", "half", "i1"], ["a"]),
             helper.make_node("Slice", ["c", "half", "end", "i1"], ["b"]),
             helper.make_node("Concat", ["b", "a"], ["cat"], axis=1), helper.make_node("Shape", ["cat"], ["s"])]
    for i in range(4):
        nodes += [const(f"k{i}", i), helper.make_node("Gather", ["s", f"k{i}"], [f"d{i}"], axis=0)]
    nodes += [const("groups", 2), helper.make_node("Div", ["d1", "groups"], ["per"]), const("axis0", [0])]
    for name in ("d0", "groups", "per", "d2", "d3", "d1"):
        nodes.append(helper.make_node("Unsqueeze", [name, "axis0"], [f"u_{name}"]))
    nodes += [helper.make_node("Concat", ["u_d0", "u_groups", "u_per", "u_d2", "u_d3"], ["five"], axis=0),
              helper.make_node("Reshape", ["cat", "five"], ["r"]),
              helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
              helper.make_node("Concat", ["u_d0", "u_d1", "u_d2", "u_d3"], ["four"], axis=0),
              helper.make_node("Reshape", ["t", "four"], ["shuffled"]),
              helper.make_node("Conv", ["shuffled", "w2"], ["y"])]
    rng = np.random.default_rng(4)
    graph = helper.make_graph(
        nodes, "channel shuffle", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [batch, 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [batch, 3, 3, 3])],
        [numpy_helper.from_array(rng.uniform(-1, 1, (4, 4, 1, 1)), "w1"),
         numpy_helper.from_array(rng.uniform(-1, 1, (3, 4, 1, 1)), "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_a_channel_shuffle_keeps_its_sizes():
    # before: onnx's inference has no Div and reads Slice bounds only from constants, so the shuffle's
    # Reshape and chunk's Slices left every axis after them unknown, and training a TorchScript export of
    # shufflenet_v2 stopped with "cannot differentiate Conv ...: its gradient needs static spatial sizes"
    types = value_types(exported_channel_shuffle())
    for name, want in (("a", ["batch", 2, 3, 3]), ("r", ["batch", 2, 2, 3, 3]), ("shuffled", ["batch", 4, 3, 3])):
        assert [d.dim_value or d.dim_param for d in types[name].type.tensor_type.shape.dim] == want, name


def test_the_conv_before_a_channel_shuffle_is_differentiated():
    x = np.random.default_rng(5).uniform(-1, 1, (2, 4, 3, 3))
    for name, (analytic, numeric) in gradcheck(exported_channel_shuffle(2), {"x": x}, ["w1", "w2"]).items():
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-6, err_msg=name)


def exported_flatten() -> onnx.ModelProto:
    """TorchScript's x.flatten(2) ahead of a Conv1d: x [batch, 2, 4, 4] -> Reshape to Concat(Slice(Shape(x), 0, 2),
    [-1]) -> Conv1d (kernel 3) -> y [batch, 3, 14]."""
    def const(name: str, value: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    nodes = [helper.make_node("Shape", ["x"], ["s"]), const("zero", [0]), const("two", [2]), const("rest", [-1]),
             helper.make_node("Slice", ["s", "zero", "two", "zero"], ["kept"]),
             helper.make_node("Concat", ["kept", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["flat"]), helper.make_node("Conv", ["flat", "w"], ["y"])]
    graph = helper.make_graph(
        nodes, "flatten", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 3, 14])],
        [numpy_helper.from_array(np.random.default_rng(6).uniform(-1, 1, (3, 2, 3)), "w")])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def test_a_flatten_to_a_computed_shape_keeps_its_length():
    # onnx's inference cannot size the -1 beside a named batch: the length was 'unk__0', and training a TorchScript
    # export with a Conv1d after x.flatten(2) of a fixed-size image stopped with "cannot differentiate Conv ...: its
    # gradient needs static spatial sizes ...; give the model's inputs fixed spatial sizes", which they were
    types = value_types(exported_flatten())
    assert [d.dim_value or d.dim_param for d in types["flat"].type.tensor_type.shape.dim] == ["batch", 2, 16]
    model = exported_flatten()
    model.graph.node.append(helper.make_node("ReduceSum", ["y"], ["loss"], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("loss", TensorProto.DOUBLE, []))
    x = np.random.default_rng(7).uniform(-1, 1, (2, 2, 4, 4))
    grad = reference(add_gradients(model, ["w"], "loss")).run([gradient_name("w")], {"x": x})[0]
    flat = x.reshape(2, 2, 16)  # d sum(y) / dw[o, c, k] = the sum of flat[:, c, k:k + 14], for every o
    expected = np.stack([flat[:, :, k:k + 14].sum(axis=(0, 2)) for k in range(3)], axis=1)
    np.testing.assert_allclose(grad, np.broadcast_to(expected, (3, 2, 3)), rtol=1e-12)


def exported_size_test(seq: int | str = "seq") -> onnx.ModelProto:
    """DeBERTa's attention as its TorchScript export writes it: scores = (x wq)(x wk)^T [batch, seq, seq], plus
    relative positions chosen by `if k.size(1) != q.size(1)` (an If whose branches give ranks 4 and 3) -> y."""
    def const(name: str, value: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    def size(of: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Shape", [of], [f"{of}.shape"]),
                helper.make_node("Slice", [f"{of}.shape", "one", "two"], [f"{of}.size1"]),
                helper.make_node("Squeeze", [f"{of}.size1", "zero"], [f"{of}.len"])]

    then = helper.make_graph([const("axes", [0]), helper.make_node("Unsqueeze", ["rel", "axes"], ["wider"])], "then",
                             [], [helper.make_tensor_value_info("wider", TensorProto.DOUBLE, None)])
    other = helper.make_graph([helper.make_node("Identity", ["rel"], ["same"])], "else", [],
                              [helper.make_tensor_value_info("same", TensorProto.DOUBLE, None)])
    nodes = [const("zero", [0]), const("one", [1]), const("two", [2]),
             helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
             *size("q"), *size("k"), helper.make_node("Equal", ["k.len", "q.len"], ["same_len"]),
             helper.make_node("Not", ["same_len"], ["differ"]),
             helper.make_node("If", ["differ"], ["positions"], then_branch=then, else_branch=other),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"]),
             helper.make_node("Add", ["scores", "positions"], ["y"])]
    rng = np.random.default_rng(8)
    graph = helper.make_graph(
        nodes, "size test", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", seq, 4]),
                             helper.make_tensor_value_info("rel", TensorProto.DOUBLE, [1, seq, seq])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(rng.uniform(-1, 1, (4, 4)), name) for name in ("wq", "wk")])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])


def test_an_if_on_sizes_known_equal_takes_its_branch_type():
    # DeBERTa's TorchScript export: the If's output, and the scores it is added to, had no rank, and training stopped
    # with "cannot differentiate Add ...: the rank of '.../MatMul_output_0' or of its broadcast result is unknown"
    types = value_types(exported_size_test())
    for name in ("positions", "y"):
        assert [d.dim_value or d.dim_param for d in types[name].type.tensor_type.shape.dim] == [
            "batch" if name == "y" else 1, "seq", "seq"], name


def test_the_matmuls_before_such_an_if_are_differentiated():
    model = exported_size_test()
    model.graph.node.append(helper.make_node("ReduceSum", ["y"], ["loss"], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("loss", TensorProto.DOUBLE, []))
    rng = np.random.default_rng(9)
    x, rel = rng.uniform(-1, 1, (2, 3, 4)), rng.uniform(-1, 1, (1, 3, 3))
    grad = reference(add_gradients(model, ["wq"], "loss")).run([gradient_name("wq")], {"x": x, "rel": rel})[0]
    sums = x.sum(axis=1)  # sum(y) = sum over the batch of (sum_i x_i wq) . (sum_j x_j wk), plus sum(rel)
    wk = numpy_helper.to_array(model.graph.initializer[1])
    np.testing.assert_allclose(grad, sum(np.outer(s, s @ wk) for s in sums), rtol=1e-12)


def test_inference_settles_where_a_reshape_keeps_an_axis_inference_cannot_name(monkeypatch):
    # y = Reshape(z, Concat(Slice(Shape(z), 0, 1), [2, -1])) of a z whose first axis onnx names afresh (unk__N) on
    # each run, after a Reshape whose -1 a hint sizes (which shifts those names): hinting the new name every pass ran
    # inference 64 times on the model (a DeBERTa TorchScript export), never reaching the passes after the hints
    def const(name: str, value: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    def first_axis(of: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Shape", [of], [f"{of}.shape"]),
                helper.make_node("Slice", [f"{of}.shape", "zero", "one"], [f"{of}.first"])]

    nodes = [const("zero", [0]), const("one", [1]), const("minus", [-1]), const("rows", [-1, 4]),
             const("pairs", [2, -1]), *first_axis("x"),
             helper.make_node("Concat", ["x.first", "minus"], ["a.to"], axis=0),
             helper.make_node("Reshape", ["x", "a.to"], ["a"]),  # [b, 16], which onnx leaves [b, unk__0]
             helper.make_node("Reshape", ["x", "rows"], ["z"]),  # [unk__1, 4]
             *first_axis("z"), helper.make_node("Concat", ["z.first", "pairs"], ["y.to"], axis=0),
             helper.make_node("Reshape", ["z", "y.to"], ["y"]),
             helper.make_node("Neg", ["a"], ["a_out"]), helper.make_node("Neg", ["y"], ["y_out"])]
    graph = helper.make_graph(nodes, "unnamed", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["b", 2, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.DOUBLE, None) for n in ("a_out", "y_out")])
    runs = []
    infer = onnx.shape_inference.infer_shapes
    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", lambda *a, **k: runs.append(1) or infer(*a, **k))
    types = value_types(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]))
    assert [d.dim_value or d.dim_param for d in types["a"].type.tensor_type.shape.dim] == ["b", 16]
    assert [d.dim_value for d in types["y"].type.tensor_type.shape.dim][1:] == [2, 2]
    assert len(runs) <= 3


def test_constant_nodes_are_folded_without_the_reference_evaluator(monkeypatch):
    """The DSL writes axes and shapes as Constant nodes: their values are read off the nodes, so a model of them alone
    never imports onnx's reference evaluator (60-90 ms a process); the Reshape they feed still gets its sizes."""
    from onnxkit import graph_walks

    def evaluated(*args):
        raise AssertionError("the reference evaluator ran")

    monkeypatch.setattr(graph_walks, "_evaluated", evaluated)
    target = numpy_helper.from_array(np.array([0, 3, 4], np.int64))
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["target"], value=target),
         helper.make_node("Reshape", ["x", "target"], ["y"])],
        "constant shape", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    shape = value_types(model)["y"].type.tensor_type.shape
    assert [d.dim_param or d.dim_value for d in shape.dim] == ["batch", 3, 4]
