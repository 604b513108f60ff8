"""nn.Embedding(padding_idx): the padding row's lookups send it no gradient, as in PyTorch; from the
DSL's Embedding and from a PyTorch dynamo export's record of the argument."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import has_ort_training
from onnx import TensorProto, helper, numpy_helper

from onnxkit import nn
from onnxkit.errors import OnnxkitError
from onnxkit.metadata_keys import PADDING_ROW_KEY
from onnxkit.train import fit
from onnxkit.train.training_form import trainable_form

FX_NODE = "pkg.torch.onnx.fx_node"


class Bag(nn.Module):
    """Mean of the ids' rows, then a linear layer: the padding rows count in the mean."""

    def __init__(self, padding_idx: int | None):
        self.emb = nn.Embedding(20, 8, std=0.5, padding_idx=padding_idx)
        self.out = nn.Linear(8, 3)

    def forward(self, ids):
        return self.out(nn.ops.mean(self.emb(ids), [1]))


def bag(padding_idx: int | None) -> onnx.ModelProto:
    return nn.build(Bag(padding_idx), {"ids": nn.Input(["batch", 6], "int64")}, output_names=["logits"])


def table(model: onnx.ModelProto) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "emb.weight")


def padded_ids(tmp_path):
    """300 rows of 6 ids, each padded with 0s after 2 to 6 tokens; the class is the first token mod 3."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 20, (300, 6))
    ids[np.arange(6) >= rng.integers(2, 7, (300, 1))] = 0
    path = tmp_path / "ids.npz"
    np.savez(path, ids=ids, labels=ids[:, 0] % 3)
    return path


def test_the_dsl_embedding_starts_its_padding_row_at_zero_and_marks_its_lookup():
    model = bag(-20)  # -20 is row 0 of 20
    assert not table(model)[0].any() and table(model)[1:].all()
    gather = next(n for n in model.graph.node if n.op_type == "Gather")
    assert {p.key: p.value for p in gather.metadata_props}[PADDING_ROW_KEY] == "0"
    assert "padding_idx=0" in repr(Bag(0).emb)
    with pytest.raises(OnnxkitError, match=r"Embedding: padding_idx must be in \[-20, 20\), got 20"):
        nn.Embedding(20, 8, padding_idx=20)


def test_training_keeps_the_padding_row_and_trains_the_others(tmp_path):
    data = padded_ids(tmp_path)
    kept = fit(bag(0), data, tmp_path / "kept", epochs=3, backend="onnx")
    trained = table(onnx.load(kept.model_path))
    assert not trained[0].any()  # zero, and decoupled weight decay keeps zero at zero
    assert np.abs(trained[1:] - table(bag(0))[1:]).min(axis=1).max() > 0  # every other row moved
    unmarked = bag(0)
    for node in unmarked.graph.node:
        del node.metadata_props[:]
    free = fit(unmarked, data, tmp_path / "free", epochs=3, backend="onnx")
    assert np.abs(table(onnx.load(free.model_path))[0]).max() > 1e-3  # without the mark, row 0 trains


def exported_by_dynamo(args: str) -> onnx.ModelProto:
    """A Gather as PyTorch's dynamo exporter writes an nn.Embedding lookup, with aten.embedding's `args`."""
    lookup = helper.make_node("Gather", ["emb.weight", "ids"], ["rows"], name="node_embedding")
    lookup.metadata_props.add(key=FX_NODE, value="%embedding : [num_users=1] = call_function[target=torch.ops.aten."
                              f"embedding.default](args = ({args}), kwargs = {{}})")
    graph = helper.make_graph(
        [lookup, helper.make_node("ReduceSum", ["rows"], ["total"], keepdims=0)], "exported",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 6])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.ones((20, 8), np.float32), "emb.weight")])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("args,row", [("%p_emb_weight, %x, 3", "3"), ("%p_emb_weight, %x", None),
                                      ("%p_emb_weight, %x, -1", None)])
def test_a_dynamo_exports_record_of_padding_idx_marks_the_lookup(args, row):
    model, _ = trainable_form(exported_by_dynamo(args))
    marks = {p.key: p.value for p in model.graph.node[0].metadata_props}
    assert marks.get(PADDING_ROW_KEY) == row


@pytest.mark.parametrize("zero_rows,row", [([4], "4"), ([], None), ([4, 7], None)])
def test_a_torchscript_exports_one_all_zero_row_is_taken_for_its_padding_row(zero_rows, row):
    # the TorchScript exporter keeps no record of padding_idx: row 0 trained (its sum of |values| 0 -> 19.6), and the
    # model scored 1.000 where PyTorch's 0.911 (dynamo's record: 0.894)
    model = exported_by_dynamo("%p_emb_weight, %x")
    del model.graph.node[0].metadata_props[:]
    model.producer_name = "pytorch"
    values = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    values[zero_rows] = 0
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(values, "emb.weight"))
    form, notes = trainable_form(model)
    assert {p.key: p.value for p in form.graph.node[0].metadata_props}.get(PADDING_ROW_KEY) == row
    said = [n for n in notes if "does not mark nn.Embedding(padding_idx)" in n]
    assert said == ([] if row is None else ["the TorchScript export does not mark nn.Embedding(padding_idx): "
                                            "emb.weight row 4, all zeros as padding_idx makes a row, is kept as its "
                                            "padding row (no gradient from its lookups), as in PyTorch"])


@pytest.mark.training
@pytest.mark.skipif(not has_ort_training(), reason="needs onnxruntime-training (make test-ort runs it)")
def test_the_ort_training_backend_says_it_trains_the_padding_rows(tmp_path, capsys):
    fit(bag(0), padded_ids(tmp_path), tmp_path / "run", epochs=1, backend="ort-training", quiet=False)
    assert ("warning: the ort-training backend trains the padding rows that PyTorch's nn.Embedding(padding_idx) "
            "keeps (emb.weight row 0); the default backend keeps them") in capsys.readouterr().err
