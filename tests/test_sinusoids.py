"""Sinusoidal position tables (Whisper's encoder, Marian's, the Transformer paper's), which Hugging Face's models keep
fixed (requires_grad=False) and an export writes as any weight, stay frozen unless train_only names them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from test_train_finetune import paraphrase_minilm

from onnxkit import zoo
from onnxkit.data import dataset_from_arrays
from onnxkit.train import fit
from onnxkit.train.sinusoids import is_sinusoid_table
from onnxkit.train.training_form import find_parameters


def whisper_table(positions: int, dim: int) -> np.ndarray:
    """transformers' `sinusoids` (Whisper's encoder), in float32 as torch computes it: sines, then cosines."""
    step = np.float32(np.log(10000) / (dim // 2 - 1))
    rates = np.exp(-step * np.arange(dim // 2, dtype=np.float32))
    angles = np.arange(positions, dtype=np.float32)[:, None] * rates[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def paper_table(positions: int, dim: int, halves: bool = False) -> np.ndarray:
    """The Transformer paper's in float64: sin at even columns, cos at odd ones (Marian's: in two halves)."""
    angles = np.arange(positions)[:, None] / 10000.0 ** (2 * (np.arange(dim) // 2) / dim)
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
    return np.concatenate([table[:, 0::2], table[:, 1::2]], axis=1) if halves else table


@pytest.mark.parametrize("table", [whisper_table(1500, 384), whisper_table(1500, 1280), whisper_table(8, 4),
                                   paper_table(512, 768), paper_table(512, 512, halves=True)])
def test_sinusoid_tables_are_recognised_in_float32(table):
    assert is_sinusoid_table(table.astype(np.float32))


def test_learned_or_moved_tables_are_not():
    rng = np.random.default_rng(0)
    moved = whisper_table(1500, 384) + rng.normal(0, 1e-4, (1500, 384)).astype(np.float32)  # about one Adam step
    learned = rng.normal(0, 0.02, (512, 64)).astype(np.float32)
    learned[0] = np.repeat([0.0, 1.0], 32)  # a first row as a table's: the rest still tells
    for table in (moved, learned, whisper_table(7, 64), whisper_table(1500, 384)[1:]):  # 7 rows; not from position 0
        assert not is_sinusoid_table(table)
    assert find_parameters(onnx.load(paraphrase_minilm())).sinusoids == []  # learned BERT positions train
    for name in zoo.names():
        assert find_parameters(zoo.build_model(name)).sinusoids == [], name


def encoder_with_positions() -> onnx.ModelProto:
    """features [batch, 16, 8] plus a Whisper position table, through a MatMul: as an encoder's input block."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Add", ["features", "embed_positions"], ["placed"]),
         helper.make_node("MatMul", ["placed", "proj"], ["y"])],
        "encoder", [helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["batch", 16, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 16, 1])],
        [numpy_helper.from_array(whisper_table(16, 8), "embed_positions"),
         numpy_helper.from_array(rng.normal(0, 0.3, (8, 1)).astype(np.float32), "proj")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.training
def test_a_sinusoid_position_table_stays_frozen_unless_train_only_names_it(tmp_path, capsys):
    """Whisper's encoder table trained unless --freeze named it (a TorchScript or dynamo export of transformers'
    WhisperEncoder holds it as any weight); it stays as it is now, said in a line, and `train_only` trains it."""
    model = encoder_with_positions()
    assert find_parameters(model).sinusoids == ["embed_positions"]
    rng = np.random.default_rng(1)
    data = dataset_from_arrays("sequences", {"features": rng.normal(size=(64, 16, 8)).astype(np.float32)},
                               rng.normal(size=(64, 16, 1)).astype(np.float32))
    kept = fit(model, data, tmp_path / "kept", loss="mse", epochs=2, lr=0.05, quiet=False)
    assert ("sinusoidal position tables stay frozen (embed_positions): sin and cos of the position"
            in capsys.readouterr().err)
    trained = {t.name: numpy_helper.to_array(t) for t in onnx.load(kept.model_path).graph.initializer}
    assert np.array_equal(trained["embed_positions"], whisper_table(16, 8))
    assert not np.allclose(trained["proj"], numpy_helper.to_array(model.graph.initializer[1]))

    named = fit(model, data, tmp_path / "named", loss="mse", epochs=2, lr=0.05, train_only="*", quiet=False)
    assert "sinusoidal position tables stay frozen" not in capsys.readouterr().err
    table = {t.name: numpy_helper.to_array(t) for t in onnx.load(named.model_path).graph.initializer}["embed_positions"]
    assert np.abs(table - whisper_table(16, 8)).max() > 1e-3 and not is_sinusoid_table(table)
