"""Tabular CSVs with text categories and missing values: the encoding against scikit-learn's OneHotEncoder, the
imputation prefix against numpy, and a fit on such a file whose predictions on a second one match a reference built
in Python."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import onnx
import pytest
from conftest import ort_run
from onnx import numpy_helper
from test_standardize import plain_mlp

from onnxkit.categories import encode, fit_columns
from onnxkit.errors import OnnxkitError
from onnxkit.train.impute import impute_inputs

COLORS, SIZES = ["red", "green", "blue", "teal"], ["S", "M", "L"]


def _cells(rng: np.random.Generator, rows: int, colors: list[str]) -> dict[str, list[str]]:
    """A table of a numeric column with gaps and two category columns, as CSV cells."""
    size = [str(rng.choice(SIZES)) for _ in range(rows)]
    return {"weight": [f"{v:.2f}" if rng.random() > 0.2 else "" for v in rng.normal(5, 2, rows)],
            "color": [str(rng.choice(colors)) for _ in range(rows)], "size": size}


def test_the_encoding_matches_scikit_learns_one_hot_encoder_ignoring_unknown_values():
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    train, new = _cells(rng, 60, COLORS[:3]), _cells(rng, 40, COLORS)  # 'teal' only in the new rows
    fitted = fit_columns(train)
    assert fitted.left_out == {}
    encoder = OneHotEncoder(handle_unknown="ignore").fit(np.array([train["color"], train["size"]]).T)
    expected_names = ["weight", *(f"{c}={v}" for c, values in zip(("color", "size"), encoder.categories_,
                                                                    strict=True) for v in values)]
    assert fitted.names == expected_names  # values sorted, each column in place
    encoded = encode(new, fitted.names, "new.csv")
    expected = encoder.transform(np.array([new["color"], new["size"]]).T).toarray()
    np.testing.assert_array_equal(encoded.x[:, 1:], expected)
    weights = np.array([np.nan if c == "" else float(c) for c in new["weight"]])
    np.testing.assert_array_equal(encoded.x[:, 0], weights)  # a missing number: NaN
    teal = sum(c == "teal" for c in new["color"])
    assert teal and encoded.unseen == teal
    assert encoded.warning("new.csv") == (f"new.csv: {teal} of 40 rows hold a category the model never trained on "
                                          "('color': 'teal', say); each reads as none of that column's categories "
                                          "(all zeros)")
    gap = encode({"weight": ["1"], "color": [" NA "], "size": ["M"]}, fitted.names, "gap.csv")  # a missing category
    np.testing.assert_array_equal(gap.x, [[1, 0, 0, 0, 0, 1, 0]])
    assert gap.unseen == 0


def test_columns_of_too_many_texts_are_left_out_and_numbers_read_as_trained():
    rows = 200
    cells = {"id": [f"P{i}" for i in range(rows)], "note": [f"w{i % 60}" for i in range(rows)],
             "deck": [f"d{i % 12}" for i in range(rows)], "x": [str(i) for i in range(rows)]}
    fitted = fit_columns(cells)
    assert fitted.left_out == {"id": "200 distinct texts in 200 rows", "note": "60 distinct texts in 200 rows"}
    assert fitted.names == [*(f"deck=d{i}" for i in sorted(range(12), key=str)), "x"]
    few = fit_columns({"deck": [f"d{i}" for i in range(14)] + [""] * 16})  # 14 texts in 14 filled rows: ids
    assert few.left_out == {"deck": "14 distinct texts in 14 rows"}

    with pytest.raises(OnnxkitError, match=r"^new.csv:7: column 'x' holds text \('n/a!'\), where the model trained "
                                           "on numbers; write a number there"):
        encode({"x": ["1", "n/a!"], "deck": ["d1", "d2"]}, fitted.names, "new.csv", lines=[6, 7])
    with pytest.raises(OnnxkitError, match=r"^new.csv: the model trained on column 'x', which it lacks"):
        encode({"deck": ["d1"]}, fitted.names, "new.csv")
    with pytest.raises(OnnxkitError, match=r"^new.csv: the model trained on columns 'deck', 'x', which it lacks"):
        encode({"deck_": ["d1"], "size": ["S"]}, [*fitted.names, "size=S"], "new.csv")  # named as the column


def test_the_imputation_prefix_matches_numpy():
    model = plain_mlp(3, 2)
    medians = np.array([1.5, -2.0, 7.0], np.float32)
    imputed = impute_inputs(model, {"x": medians})
    onnx.checker.check_model(imputed, full_check=True)
    x = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    x[[0, 2, 5], [1, 0, 2]] = np.nan
    x[7] = np.nan
    expected = ort_run(model, {"x": np.where(np.isnan(x), medians, x)})[0]
    np.testing.assert_allclose(ort_run(imputed, {"x": x})[0], expected, rtol=1e-6)
    assert [n.op_type for n in imputed.graph.node[:2]] == ["IsNaN", "Where"]
    from onnxkit.metadata import metadata

    assert json.loads(metadata(imputed)["onnxkit.imputed"]) == ["x"]
    assert "onnxkit.impute.x.median" in json.loads(metadata(imputed)["onnxkit.buffers"])


def _people(path, rng: np.random.Generator, rows: int, embarked: list[str]) -> None:
    """A titanic-like CSV: the label depends on the categories; ages go missing, names are identifiers."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "sex", "age", "fare", "embarked", "survived"])
        for i in range(rows):
            sex, port = str(rng.choice(["male", "female"])), str(rng.choice(embarked))
            age = rng.uniform(1, 70)
            logit = 2.5 * (sex == "female") - 1.2 + (port == "C") - 0.02 * (age - 30)
            writer.writerow([f"Name {i}", sex, "" if rng.random() < 0.25 else f"{age:.1f}",
                             f"{rng.lognormal(3, 0.7):.2f}", port if rng.random() > 0.05 else "",
                             int(rng.random() < 1 / (1 + np.exp(-logit)))])


@pytest.mark.training
def test_a_csv_of_categories_and_gaps_trains_with_no_flag_and_predicts_a_second_file(tmp_path, run_cli):
    from sklearn.preprocessing import OneHotEncoder

    from onnxkit import runtime
    from onnxkit.data import load_dataset
    from onnxkit.runtime.datafiles import checked_feeds, read_inputs

    rng = np.random.default_rng(0)
    _people(tmp_path / "people.csv", rng, 600, ["S", "C", "Q"])
    _people(tmp_path / "new.csv", rng, 50, ["S", "C", "Q", "X"])  # 'X' never trained on
    result = run_cli("train", tmp_path / "people.csv", "--label", "survived", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert result.err.startswith("no model given: an MLP 7 -> 64 -> 64 -> 2 for ")
    assert "people.csv's 7 features (2 category columns as 5) and 2 classes" in result.err.splitlines()[0]
    assert "columns left out, too many distinct texts to be categories (ids, names, free text): 'name' (600 " \
           "distinct texts in 600 rows)" in result.err
    ages = sum(not row[2] for row in list(csv.reader((tmp_path / "people.csv").open()))[1:])
    assert f"missing values (empty, NA, NaN) in 1 column of 'x': 'age' ({ages} of 600); the model fills each " \
           "with the training split's median of its column" in result.err
    model = tmp_path / "run" / "model.onnx"
    trained = onnx.load(model)
    names = json.loads(next(p.value for p in trained.metadata_props if p.key == "onnxkit.columns"))
    assert names == ["sex=female", "sex=male", "age", "fare", "embarked=C", "embarked=Q", "embarked=S"]
    # the median the model holds: the training split's, of the ages present
    train_x = load_dataset(tmp_path / "people.csv", label="survived").train.inputs["x"]
    stored = {t.name: numpy_helper.to_array(t) for t in trained.graph.initializer}["onnxkit.impute.x.median"]
    np.testing.assert_allclose(stored, np.nanmedian(train_x, axis=0), rtol=1e-6)
    assert not np.isnan(train_x[:, 2]).all() and np.isnan(train_x[:, 2]).any()

    # the reference: scikit-learn's encoding of the training file's categories, numpy's imputation
    people, new = (np.array(list(csv.reader((tmp_path / f"{n}.csv").open()))[1:]) for n in ("people", "new"))
    encoder = OneHotEncoder(handle_unknown="ignore").fit(people[:, [1, 4]][people[:, 4] != ""])
    onehot = encoder.transform(new[:, [1, 4]]).toarray()  # an empty port: a value never fit, all zeros
    numbers = np.array([[float(c) if c else np.nan for c in row] for row in new[:, 2:4]])
    numbers = np.where(np.isnan(numbers), stored[2:4], numbers)
    reference = np.column_stack([onehot[:, :2], numbers, onehot[:, 2:]]).astype(np.float32)
    expected = ort_run(trained, {"x": reference})[0]  # no NaN left: the prefix does nothing

    loaded = runtime.load(model)
    with pytest.warns(UserWarning, match=r"new.csv: \d+ of 50 rows hold a category the model never trained on "
                                         r"\('embarked': 'X', say\)"):
        feeds = checked_feeds(tmp_path / "new.csv", loaded, read_inputs(tmp_path / "new.csv", loaded))
    assert np.isnan(feeds["x"]).any()  # passed on: the model fills them
    np.testing.assert_allclose(loaded.predict(feeds).outputs["logits"], expected, rtol=1e-5, atol=1e-6)
    try:
        import pandas as pd
    except ImportError:  # .venv-ort has no pandas
        pd = None
    if pd is not None:
        with pytest.warns(UserWarning, match="the DataFrame: .* rows hold a category the model never trained on"):
            frame = loaded.predict(pd.read_csv(tmp_path / "new.csv")).outputs["logits"]
        np.testing.assert_allclose(frame, expected, rtol=1e-5, atol=1e-6)
        if importlib.util.find_spec("pyarrow"):  # a Parquet table of the raw columns, as --ray reads it
            pd.read_csv(tmp_path / "new.csv").to_parquet(tmp_path / "new.parquet")
            with pytest.warns(UserWarning, match="never trained on"):
                table = read_inputs(tmp_path / "new.parquet", loaded)
            np.testing.assert_allclose(loaded.predict(table).outputs["logits"], expected, rtol=1e-5, atol=1e-6)
    shown = run_cli("predict", model, tmp_path / "new.csv", "-o", tmp_path / "p.json")
    assert shown.code == 0 and shown.err.startswith("warning: ") and "'embarked': 'X'" in shown.err
    np.testing.assert_allclose(json.loads((tmp_path / "p.json").read_text())["outputs"]["logits"], expected,
                               rtol=1e-5, atol=1e-6)
    scored = run_cli("eval", model, tmp_path / "new.csv", "--json")
    assert scored.code == 0, scored.err
    accuracy = float((expected.argmax(1) == new[:, 5].astype(int)).mean())
    assert json.loads(scored.out)["accuracy"] == pytest.approx(accuracy)
    assert accuracy >= 0.65  # survival follows sex and port: a majority guess scores ~0.5

    from onnxkit.quantize import quantize

    quantize(model, tmp_path / "int8.onnx", mode="static", calib=tmp_path / "people.csv", measure_latency=False)
    with pytest.warns(UserWarning, match="never trained on"):  # calibrated on the filled values, it takes gaps
        int8 = runtime.load(tmp_path / "int8.onnx").predict(read_inputs(tmp_path / "new.csv", loaded))
    assert (int8.outputs["logits"].argmax(1) == expected.argmax(1)).mean() >= 0.9

    again = run_cli("train", model, tmp_path / "people.csv", "--label", "survived", "--steps", "2", "-o",
                    tmp_path / "again")  # a model that fills gaps itself gets no second prefix
    assert again.code == 0, again.err
    assert [n.op_type for n in onnx.load(tmp_path / "again" / "model.onnx").graph.node] == \
        [n.op_type for n in trained.graph.node]


@pytest.mark.training
def test_a_npz_of_features_with_nan_is_imputed_as_a_csv_is(tmp_path):
    from onnxkit.train import fit

    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    x[rng.random((120, 3)) < 0.1] = np.nan
    np.savez(tmp_path / "gaps.npz", x=x, labels=labels)
    result = fit(plain_mlp(3, 2), tmp_path / "gaps.npz", tmp_path / "run", steps=3, quiet=True)
    trained = onnx.load(result.model_path)
    assert [n.op_type for n in trained.graph.node[:2]] == ["IsNaN", "Where"]
    from onnxkit.data import load_dataset

    train = load_dataset(tmp_path / "gaps.npz").train.inputs["x"]
    median = {t.name: numpy_helper.to_array(t) for t in trained.graph.initializer}["onnxkit.impute.x.median"]
    np.testing.assert_allclose(median, np.nanmedian(train, axis=0), rtol=1e-6)


@pytest.mark.parametrize(("cells", "message"), [
    ("a,b,label\n1,,0\n2,NA,1\n3,,0\n", "feature column 'b' is empty in every row (a column of no values); drop that "
                                        "column"),
    ("id,label\n" + "".join(f"row{i},{i % 2}\n" for i in range(30)),
     "every feature column holds too many distinct texts to be categories ('id': 30 distinct texts in 30 rows); give "
     "numeric columns, or columns of a few values each"),
])
def test_a_column_of_no_values_or_no_column_left_is_one_error_line(tmp_path, run_cli, cells, message):
    (tmp_path / "data.csv").write_text(cells)
    result = run_cli("train", tmp_path / "data.csv", "-o", tmp_path / "run")
    assert (result.code, result.err) == (1, f"error: {tmp_path / 'data.csv'}: {message}\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.training
def test_a_run_on_gaps_resumed_ends_as_one_run_straight_through(tmp_path):
    import os
    import signal

    from onnxkit.train import TrainingInterrupted, fit

    _people(tmp_path / "people.csv", np.random.default_rng(3), 300, ["S", "C", "Q"])
    # Dropout off: ORT-training does not resume its masks' random stream (onnxkit's backend does)
    settings = {"label": "survived", "epochs": 2, "quiet": True, "dropout": False}
    straight = fit(data=tmp_path / "people.csv", out_dir=tmp_path / "straight", **settings)

    def stop_at_step_5(record):  # type: ignore[no-untyped-def]
        if record["event"] == "step" and record["step"] == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        fit(data=tmp_path / "people.csv", out_dir=tmp_path / "resumed", callback=stop_at_step_5, **settings)
    resumed = fit(resume=tmp_path / "resumed")
    a, b = (onnx.load(r.model_path) for r in (straight, resumed))
    assert [n.op_type for n in b.graph.node] == [n.op_type for n in a.graph.node]  # one prefix, as straight
    assert [n.op_type for n in a.graph.node[:2]] == ["IsNaN", "Where"]
    for x, y in zip(a.graph.initializer, b.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(x), numpy_helper.to_array(y), err_msg=x.name)


def test_a_column_named_with_the_separator_is_encoded_as_its_own_or_refused(tmp_path):
    from sklearn.preprocessing import OneHotEncoder

    from onnxkit.data import load_dataset
    from onnxkit.errors import OnnxkitError

    rng = np.random.default_rng(3)
    cells = {"a": [f"{v:.2f}" for v in rng.normal(size=30)], "a=b": [str(rng.choice(["c", "d"])) for _ in range(30)]}
    fitted = fit_columns(cells)
    assert fitted.names == ["a", "a=b=c", "a=b=d"]
    expected = OneHotEncoder().fit_transform(np.array([cells["a=b"]]).T).toarray()
    np.testing.assert_array_equal(encode(cells, fitted.names, "t.csv").x[:, 1:], expected)  # read as 'a''s: all 0
    with pytest.raises(OnnxkitError, match="^t.csv: the category 'b=c' of column 'a' would be named 'a=b=c', which "
                                           "reads as the category 'c' of column 'a=b'; rename a column"):
        fit_columns({"a": ["b=c", "x"], "a=b": ["c", "d"]}, "t.csv")
    with pytest.raises(OnnxkitError, match="^t.csv: the category 'red' of column 'color' would be named 'color=red', "
                                           "which reads as column 'color=red'"):
        fit_columns({"color": ["red", "blue"], "color=red": ["1", "0"]}, "t.csv")
    path = tmp_path / "twice.csv"  # one 'a' was dropped unsaid, the model trained on the other alone
    path.write_text("a,a,label\n" + "".join(f"{i},{'xy'[i % 2]},{i % 2}\n" for i in range(20)))
    with pytest.raises(OnnxkitError, match=f"^{path}: two columns are headed 'a'; give each column its own name"):
        load_dataset(path)


def test_predict_of_a_table_with_two_columns_of_one_name_is_one_line(tmp_path, run_cli):
    """predict's CSV reader and Model.predict(DataFrame) kept one of two category columns of one name unsaid (the
    training reader refused them already)."""
    pd = pytest.importorskip("pandas")
    from onnxkit import runtime
    from onnxkit.errors import OnnxkitError
    from onnxkit.train import fit

    rng = np.random.default_rng(4)
    _people(tmp_path / "people.csv", rng, 120, ["S", "C", "Q"])
    model = fit(None, tmp_path / "people.csv", tmp_path / "run", label="survived", steps=2).model_path
    rows = list(csv.reader((tmp_path / "people.csv").open()))
    twice = [["name", "sex", "age", "fare", "sex", "survived"], *rows[1:11]]  # 'embarked' headed 'sex' by mistake
    with (tmp_path / "twice.csv").open("w", newline="") as f:
        csv.writer(f).writerows(twice)
    result = run_cli("predict", model, tmp_path / "twice.csv")
    assert result.code == 1
    assert result.err == (f"error: {tmp_path / 'twice.csv'}: two columns are headed 'sex'; give each column its own "
                          "name (categories are read by column name)\n")
    frame = pd.DataFrame(twice[1:], columns=twice[0])
    with pytest.raises(OnnxkitError, match="^the DataFrame: two columns are headed 'sex'; give each column"):
        runtime.load(model).predict(frame)


@pytest.mark.training
@pytest.mark.parametrize("classes", [["1st", "2nd", "3rd"], ["1", "2", "3"]])
def test_predict_reads_a_feature_headed_class_beside_the_trained_labels(tmp_path, run_cli, classes):
    """Titanic's `class` (the passenger's) beside the labels `survived`: predict and Model.predict left it out as if
    it were the labels (`the model trained on column 'class', which it lacks`), as text and as numbers."""
    rng = np.random.default_rng(0)
    rows = [[str(rng.choice(classes)), f"{rng.lognormal(3, 0.7):.2f}", str(int(rng.random() < 0.4))]
            for _ in range(80)]
    with (tmp_path / "people.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["class", "fare", "survived"], *rows])
    with (tmp_path / "new.csv").open("w", newline="") as f:  # the features alone, as a user predicts on them
        csv.writer(f).writerows([["class", "fare"], *[row[:2] for row in rows[:10]]])
    result = run_cli("train", tmp_path / "people.csv", "--label", "survived", "--steps", "2", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    model = onnx.load(tmp_path / "run" / "model.onnx")
    names = json.loads(next(p.value for p in model.metadata_props if p.key == "onnxkit.columns"))
    cells = {"class": [row[0] for row in rows[:10]], "fare": [float(row[1]) for row in rows[:10]]}
    reference = np.array([[c == n.split("=")[1] for c in cells["class"]] if "=" in n else
                          [float(v) for v in cells[n]] for n in names], np.float32).T
    expected = ort_run(model, {"x": reference})[0]
    shown = run_cli("predict", tmp_path / "run" / "model.onnx", tmp_path / "new.csv", "-o", tmp_path / "p.json")
    assert shown.code == 0, shown.err
    np.testing.assert_allclose(json.loads((tmp_path / "p.json").read_text())["outputs"]["logits"], expected,
                               rtol=1e-5, atol=1e-6)
    try:
        import pandas as pd
    except ImportError:  # .venv-ort has no pandas
        return
    from onnxkit import runtime

    frame = pd.read_csv(tmp_path / "new.csv")
    np.testing.assert_allclose(runtime.load(tmp_path / "run" / "model.onnx").predict(frame).outputs["logits"],
                               expected, rtol=1e-5, atol=1e-6)


def _numpy_parts(days: np.ndarray) -> np.ndarray:
    """[year, month, day, weekday (0 on Mondays)] of datetime64[D] values, by numpy's calendar arithmetic."""
    months = days.astype("datetime64[M]")
    return np.column_stack([days.astype("datetime64[Y]").astype(np.int64) + 1970,
                            months.astype(np.int64) % 12 + 1, (days - months).astype(np.int64) + 1,
                            (days.astype(np.int64) + 3) % 7]).astype(np.float64)  # 1970-01-01 was a Thursday


def test_a_column_of_iso_dates_is_read_as_numbers_of_their_parts():
    rng = np.random.default_rng(0)
    days = np.datetime64("1999-12-25") + rng.integers(0, 9000, 40).astype("timedelta64[D]")
    cells = [str(d) for d in days]
    fitted = fit_columns({"w": [str(v) for v in range(40)], "date": cells})
    assert fitted.names == ["w", "date:year", "date:month", "date:day", "date:weekday"]
    assert fitted.left_out == {}
    new = [*cells[:5], "", "2024-02-29"]
    encoded = encode({"date": new, "w": ["1"] * 7}, fitted.names, "new.csv")
    expected = _numpy_parts(np.array([*days[:5], "NaT", "2024-02-29"], "datetime64[D]"))
    expected[5] = np.nan  # a missing date: NaN parts, which the model fills
    np.testing.assert_array_equal(encoded.x[:, 1:], expected)
    timed = fit_columns({"at": ["2012-01-01 08:30:00", "2012-01-02 00:00:00"]})
    assert timed.names == ["at:year", "at:month", "at:day", "at:weekday", "at:hour"]
    assert encode({"at": ["2012-01-01 08:30:00"]}, timed.names, "t.csv").x[0, 4] == 8.5
    with pytest.raises(OnnxkitError, match=r"new.csv:9: column 'date' holds 'soon', where the model trained on "
                                           r"dates \(as 2012-01-31"):
        encode({"date": ["soon"], "w": ["1"]}, fitted.names, "new.csv", lines=[9])
    with pytest.raises(OnnxkitError, match="the model trained on column 'date', which it lacks"):
        encode({"w": ["1"]}, fitted.names, "new.csv")
    with pytest.raises(OnnxkitError, match=r"would be read as date:year, .* but a column is named 'date:month'"):
        fit_columns({"date": cells, "date:month": ["1"] * 40})
    # not every cell a date (one not in the calendar, or of another form): text, as before
    assert fit_columns({"d": ["2012-02-30", "2012-03-01"]}).names == ["d=2012-02-30", "d=2012-03-01"]
    assert fit_columns({"d": ["31/12/2012", "2012-03-01"]}).names == ["d=2012-03-01", "d=31/12/2012"]


@pytest.mark.training
def test_a_csv_with_a_date_column_trains_on_its_parts_and_predicts_a_second_file(tmp_path, run_cli):
    """seattle-weather's `date` (1,461 distinct) was left out as 'ids, names, free text'; the season it gives is
    what tells snow from sun."""
    rng = np.random.default_rng(1)
    days = np.datetime64("2012-01-01") + rng.integers(0, 1400, 300).astype("timedelta64[D]")
    summer = np.isin(days.astype("datetime64[M]").astype(np.int64) % 12 + 1, [5, 6, 7, 8, 9])
    with (tmp_path / "weather.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["date", "wind", "weather"], *[[str(d) if i else "", f"{rng.normal(3, 1):.1f}",
                                                                   "sun" if s else "rain"]
                                                                  for i, (d, s) in enumerate(zip(days, summer,
                                                                                                 strict=True))]])
    with (tmp_path / "new.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["wind", "date"], ["2.5", "2016-07-04"], ["3.0", ""], ["1.0", "2017-01-31"]])
    result = run_cli("train", tmp_path / "weather.csv", "--label", "weather", "--steps", "2", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    assert "weather.csv's 5 features (1 date column as 4) and 2 classes" in result.err.splitlines()[0]
    assert "left out" not in result.err and "missing values (empty, NA, NaN) in 4 columns of 'x': 'date:year' (1 of " \
        "300)" in result.err  # a gap in training: the model fills a missing date's parts
    model = onnx.load(tmp_path / "run" / "model.onnx")
    names = json.loads(next(p.value for p in model.metadata_props if p.key == "onnxkit.columns"))
    assert names == ["date:year", "date:month", "date:day", "date:weekday", "wind"]
    parts = _numpy_parts(np.array(["2016-07-04", "NaT", "2017-01-31"], "datetime64[D]"))
    parts[1] = np.nan
    reference = np.column_stack([parts, [2.5, 3.0, 1.0]]).astype(np.float32)  # NaN where the date is missing
    expected = ort_run(model, {"x": reference})[0]
    shown = run_cli("predict", tmp_path / "run" / "model.onnx", tmp_path / "new.csv", "-o", tmp_path / "p.json")
    assert shown.code == 0, shown.err
    np.testing.assert_allclose(json.loads((tmp_path / "p.json").read_text())["outputs"]["logits"], expected,
                               rtol=1e-5, atol=1e-6)
    assert not np.isnan(expected).any()  # the missing date's parts were filled by the model


@pytest.mark.training
def test_a_yes_no_column_with_a_gap_in_training_reads_as_its_categories_in_a_file_without_one(tmp_path, run_cli):
    """Hdma's `pbcr` (yes / no, one cell NA) trained as categories pbcr=no, pbcr=yes; a held-out file with no gap
    there had it read as 1 / 0 first, matching neither category: eval scored 0.88 where the run's test split, the
    same rows, scored 0.905."""
    rng = np.random.default_rng(2)
    rows = [[str(rng.choice(["yes", "no"])), str(rng.choice(["yes", "no"])), f"{rng.normal():.3f}"] for _ in range(60)]
    for row in rows:
        row.append(str(int((row[0] == "yes") + (row[1] == "yes") + float(row[2]) > 1)))
    rows[3][0] = "NA"
    with (tmp_path / "loans.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["pbcr", "single", "ratio", "deny"], *rows])
    held_out = rows[10:30]
    with (tmp_path / "held_out.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["pbcr", "single", "ratio", "deny"], *held_out])
    result = run_cli("train", tmp_path / "loans.csv", "--label", "deny", "--steps", "2", "-o", tmp_path / "run")
    assert result.code == 0, result.err
    model = onnx.load(tmp_path / "run" / "model.onnx")
    names = json.loads(next(p.value for p in model.metadata_props if p.key == "onnxkit.columns"))
    assert names == ["pbcr=no", "pbcr=yes", "single", "ratio"]  # the column with a gap: categories; the other 1 / 0
    reference = np.array([[r[0] == "no", r[0] == "yes", r[1] == "yes", float(r[2])] for r in held_out], np.float32)
    expected = ort_run(model, {"x": reference})[0]
    shown = run_cli("predict", tmp_path / "run" / "model.onnx", tmp_path / "held_out.csv", "-o", tmp_path / "p.json")
    assert shown.code == 0, shown.err
    np.testing.assert_allclose(json.loads((tmp_path / "p.json").read_text())["outputs"]["logits"], expected,
                               rtol=1e-5, atol=1e-6)
    scored = run_cli("eval", tmp_path / "run" / "model.onnx", "--data", tmp_path / "held_out.csv", "--json")
    assert scored.code == 0, scored.err
    truth = np.array([int(r[3]) for r in held_out])
    assert json.loads(scored.out)["accuracy"] == pytest.approx(float((expected.argmax(1) == truth).mean()))
    logp = expected - np.log(np.exp(expected).sum(1, keepdims=True))
    assert json.loads(scored.out)["loss"] == pytest.approx(float(-logp[np.arange(len(truth)), truth].mean()), rel=1e-5)
