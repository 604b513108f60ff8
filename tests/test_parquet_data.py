"""A Parquet table (pandas' to_parquet) is training data read as the CSV of its columns is: numbers, categories,
nulls as missing values, the label column by name."""

from __future__ import annotations

import numpy as np
import pytest

from onnxkit.data import load_dataset
from onnxkit.errors import OnnxkitError
from onnxkit.train import fit

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


@pytest.fixture
def frame():
    rng = np.random.default_rng(3)
    n = 90
    df = pd.DataFrame({"width": rng.normal(5, 2, n), "count": rng.integers(0, 9, n),
                       "colour": rng.choice(["red", "green", "blue"], n), "flag": rng.random(n) > 0.5})
    df.loc[::11, "width"] = None
    df["kind"] = np.where(df["colour"] == "red", "a", np.where(df["count"] > 4, "b", "c"))
    return df


def test_a_parquet_table_reads_as_its_csv(frame, tmp_path):
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_csv(tmp_path / "t.csv", index=False)
    a, b = (load_dataset(tmp_path / f"t.{s}", label="kind") for s in ("parquet", "csv"))
    assert a.columns == b.columns and "colour=red" in a.columns and a.label_names == ["a", "b", "c"]
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(a.split(split).inputs["x"], b.split(split).inputs["x"])
        np.testing.assert_array_equal(a.split(split).labels, b.split(split).labels)
    assert np.isnan(a.train.inputs["x"]).any()  # the nulls, filled inside the model when it trains


def test_train_eval_and_predict_a_parquet_table(frame, tmp_path, run_cli):
    frame.set_axis(range(100, 190)).to_parquet(tmp_path / "t.parquet")  # an index pandas stores as a column
    result = fit(None, tmp_path / "t.parquet", tmp_path / "run", label="kind", epochs=40, lr=1e-2)
    assert result.metrics["test"]["accuracy"] > 0.8
    scored = run_cli("eval", result.model_path)
    assert scored.code == 0 and scored.out.startswith(f"{tmp_path / 't.parquet'} test split (18 examples)")
    predicted = run_cli("predict", result.model_path, tmp_path / "t.parquet", "-o", tmp_path / "p.npz")
    assert predicted.code == 0, predicted.err


def test_a_file_that_is_no_parquet_is_one_line(tmp_path):
    (tmp_path / "t.parquet").write_text("a,b\n1,2\n")
    with pytest.raises(OnnxkitError, match=r"t\.parquet: cannot read it as Parquet \(.*\); check the file$"):
        load_dataset(tmp_path / "t.parquet")


@pytest.mark.parametrize(("column", "says"), [
    ([[1.0, 2.0]] * 90, "column 'extra' holds list<element: double> values"),  # its text '[1.0, 2.0]' was a category
    ([{"p": 1}] * 90, "column 'extra' holds struct<p: int64> values"),
    ([b"\x00\xff"] * 90, "column 'extra' holds binary values"),
])
def test_a_column_of_lists_structs_or_bytes_is_one_line(frame, tmp_path, column, says):
    frame.assign(extra=column).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(OnnxkitError) as e:
        load_dataset(tmp_path / "t.parquet", label="kind")
    assert str(e.value).startswith(f"{tmp_path / 't.parquet'}: {says}, which no table cell holds"), e.value


def test_two_columns_of_one_name_are_one_line(frame, tmp_path, run_cli):
    import pyarrow
    import pyarrow.parquet

    frame.to_parquet(tmp_path / "t.parquet")
    result = fit(None, tmp_path / "t.parquet", tmp_path / "run", label="kind", epochs=1)
    table = pyarrow.table([frame["width"], frame["colour"], frame["colour"]], names=["width", "colour", "colour"])
    pyarrow.parquet.write_table(table, tmp_path / "twice.parquet")  # pandas' to_parquet refuses to write one
    says = f"{tmp_path / 'twice.parquet'}: two columns are named 'colour'; give each column its own name"
    with pytest.raises(OnnxkitError, match="^" + says.replace(".", r"\.") + "$"):  # 9 lines of pyarrow's schema
        load_dataset(tmp_path / "twice.parquet")
    out = run_cli("predict", result.model_path, tmp_path / "twice.parquet")  # a KeyError traceback, reading by name
    assert out.code == 1 and out.err == f"error: {says}\n", out.err


def test_a_table_past_the_memory_free_is_refused_before_its_cells_are_made(frame, tmp_path, monkeypatch):
    from onnxkit import files
    from onnxkit.data import parquet

    frame.to_parquet(tmp_path / "t.parquet")
    monkeypatch.setattr(files, "available_memory", lambda: 90 * 5 * parquet.CELL_BYTES // 2)
    with pytest.raises(OnnxkitError, match=r"t\.parquet: 90 rows x 5 columns, as cells here, take 81\.0 KB, more "
                                           r"than the 40\.5 KB of memory free; save the features as an \.npz"):
        load_dataset(tmp_path / "t.parquet", label="kind")
    monkeypatch.setattr(files, "available_memory", lambda: 90 * 5 * parquet.CELL_BYTES)
    assert len(load_dataset(tmp_path / "t.parquet", label="kind").train) == 54
