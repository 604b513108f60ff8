"""onnxkit's training defaults on scikit-learn data nobody tuned them on, next to scikit-learn.

Each case writes a scikit-learn dataset as a user would (a CSV with a header row and the
target in a column headed `target`; an .npz with `x` and `y` for several targets), writes a
plain MLP (Linear(features, 100) -> ReLU -> Linear(100, classes or targets), scikit-learn's MLP
shape) with the `onnxkit.nn` DSL or, for the `torch:` cases, as a PyTorch module exported by
`torch.onnx.export`, and runs `onnxkit train model.onnx --data FILE -o RUN` with no other flag.
It scores the trained model.onnx in onnxruntime on the test split (`load_dataset(FILE)`'s, the
one training held out) with sklearn.metrics, and fits scikit-learn on the same train split:
StandardScaler + MLPClassifier / MLPRegressor (its defaults, max_iter 2000) and a linear model
(LogisticRegression / Ridge). Seeds vary the generated data (or shuffle a fixed dataset's rows),
the model's initialisation and scikit-learn's random_state; the table gives the median over
seeds and the range, and flags (`<<`) a case where onnxkit's median is below scikit-learn MLP's
by more than 0.03 accuracy or 0.05 R².

    .venv/bin/python tools/sweep_sklearn.py [--seeds 3] [--only moons friedman] [--torch]

`--torch` adds the PyTorch cases (needs torch: PYTHONPATH=/tmp/torchlib). `--no-model` trains no MLP of this
tool's: `onnxkit train FILE -o RUN` alone, the model `train` builds for the data (tabular-mlp). Every case also
fits scikit-learn's HistGradientBoosting (default settings) on the same train split.
"""

from __future__ import annotations

import argparse
import csv
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
import onnx
import onnxruntime as ort
from sklearn import datasets as skd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from onnxkit import nn
from onnxkit.data import load_dataset

HIDDEN = 100
GAP = {"accuracy": 0.03, "R²": 0.05}  # a case is flagged when onnxkit's median is this far below sklearn MLP's


@dataclass
class Case:
    """`make(seed)` -> features, targets; `classes`: 0 for regression; `outputs`: the model's width
    (default: classes, or the number of targets)."""

    make: Callable[[int], tuple[np.ndarray, np.ndarray]]
    classes: int
    outputs: int | None = None
    names: list[str] | None = None  # class names written to the CSV in place of ids
    integers: bool = False  # features written as whole numbers
    torch: bool = False  # a PyTorch export in place of the DSL model


def shuffled(loader: Callable) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """A fixed dataset with its rows in an order that follows the seed."""
    def make(seed: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = loader(return_X_y=True)
        order = np.random.default_rng(seed).permutation(len(x))
        return x[order], y[order]
    return make


def gen(maker: Callable, x_scale: float = 1.0, y_scale: float = 1.0, y_shift: float = 0.0,
        **kwargs: object) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """A generated dataset (random_state = seed), its features and targets optionally rescaled."""
    def make(seed: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = maker(random_state=seed, **kwargs)[:2]
        return x * x_scale, (y * y_scale + y_shift) if y_scale != 1 or y_shift else y
    return make


def hastie(seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = skd.make_hastie_10_2(n_samples=2000, random_state=seed)
    return x, (y > 0).astype(np.int64)  # its labels are -1 / +1


def counts(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer count features (Poisson, means 1-50) whose class follows a few of them."""
    rng = np.random.default_rng(seed)
    rates = rng.uniform(1, 50, size=12)
    x = rng.poisson(rates, size=(1000, 12))
    score = (x[:, 0] - rates[0]) / np.sqrt(rates[0]) + (x[:, 1] - rates[1]) / np.sqrt(rates[1])
    return x, (score > 0).astype(np.int64)


def duplicated(make: Callable[[int], tuple[np.ndarray, np.ndarray]], share: float = 0.3
               ) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """A dataset with `share` of its rows repeated, in shuffled order (copies land in every split)."""
    def with_copies(seed: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = make(seed)
        rng = np.random.default_rng(seed)
        rows = np.concatenate([np.arange(len(x)), rng.choice(len(x), int(share * len(x)), replace=False)])
        rows = rng.permutation(rows)
        return x[rows], y[rows]
    return with_copies


CLF = skd.make_classification
CASES: dict[str, Case] = {
    "iris": Case(shuffled(skd.load_iris), 3),
    "iris (species names)": Case(shuffled(skd.load_iris), 3, names=["setosa", "versicolor", "virginica"]),
    "wine": Case(shuffled(skd.load_wine), 3),
    "breast_cancer": Case(shuffled(skd.load_breast_cancer), 2),
    "breast_cancer (1 logit)": Case(shuffled(skd.load_breast_cancer), 2, outputs=1),
    "breast_cancer (no/yes)": Case(shuffled(skd.load_breast_cancer), 2, names=["no", "yes"]),
    "digits (pixels 0-16)": Case(shuffled(skd.load_digits), 10, integers=True),
    "diabetes": Case(shuffled(skd.load_diabetes), 0),
    "linnerud (3 targets, npz)": Case(shuffled(skd.load_linnerud), 0, outputs=3),
    "classification 2c 20f": Case(gen(CLF, n_samples=1000, n_features=20), 2),
    "classification 5c 50f": Case(gen(CLF, n_samples=2000, n_features=50, n_informative=10, n_classes=5), 5),
    "classification 2c 100f 300 rows": Case(gen(CLF, n_samples=300, n_features=100, n_informative=10), 2),
    "classification 2c 40f 5000 rows": Case(gen(CLF, n_samples=5000, n_features=40, n_informative=8), 2),
    "classification imbalanced 0.9/0.1": Case(gen(CLF, n_samples=1000, n_features=20, weights=[0.9, 0.1]), 2),
    "classification flip_y 0.2": Case(gen(CLF, n_samples=1000, n_features=20, flip_y=0.2), 2),
    "classification 3c integers": Case(gen(CLF, x_scale=10, n_samples=1000, n_features=20, n_informative=6,
                                           n_classes=3), 3, integers=True),
    "classification 20c 30f": Case(gen(CLF, n_samples=3000, n_features=30, n_informative=15, n_classes=20,
                                       n_clusters_per_class=1), 20),
    "classification 2c 1000f 200 rows": Case(gen(CLF, n_samples=200, n_features=1000, n_informative=20), 2),
    "classification imbalanced 0.95/0.05": Case(gen(CLF, n_samples=2000, n_features=20, weights=[0.95, 0.05]), 2),
    "classification 30% rows duplicated": Case(duplicated(gen(CLF, n_samples=1000, n_features=8)), 2),
    "moons": Case(gen(skd.make_moons, n_samples=1000, noise=0.2), 2),
    "moons noise 0.3": Case(gen(skd.make_moons, n_samples=1000, noise=0.3), 2),
    "moons 200 rows": Case(gen(skd.make_moons, n_samples=200, noise=0.2), 2),
    "circles": Case(gen(skd.make_circles, n_samples=1000, noise=0.1, factor=0.5), 2),
    "blobs": Case(gen(skd.make_blobs, n_samples=1000, centers=4, n_features=2), 4),
    "hastie_10_2": Case(hastie, 2),
    "gaussian_quantiles": Case(gen(skd.make_gaussian_quantiles, n_samples=1000, n_classes=3), 3),
    "poisson counts": Case(counts, 2, integers=True),
    "friedman1": Case(gen(skd.make_friedman1, n_samples=1000), 0),
    "friedman1 noise 1": Case(gen(skd.make_friedman1, n_samples=1000, noise=1.0), 0),
    "friedman2": Case(gen(skd.make_friedman2, n_samples=1000), 0),
    "friedman2 noise 100": Case(gen(skd.make_friedman2, n_samples=1000, noise=100.0), 0),
    "friedman3": Case(gen(skd.make_friedman3, n_samples=1000), 0),
    "friedman3 noise 0.1": Case(gen(skd.make_friedman3, n_samples=1000, noise=0.1), 0),
    "regression": Case(gen(skd.make_regression, n_samples=1000, n_features=20, n_informative=10, noise=10), 0),
    "regression 200 rows": Case(gen(skd.make_regression, n_samples=200, n_features=20, n_informative=10,
                                    noise=10), 0),
    "regression targets x1000": Case(gen(skd.make_regression, y_scale=1000, n_samples=1000, n_features=20,
                                         n_informative=10, noise=10), 0),
    "regression targets +1e4": Case(gen(skd.make_regression, y_shift=1e4, n_samples=1000, n_features=20,
                                        n_informative=10, noise=10), 0),
    "regression targets x1e6 +3e7": Case(gen(skd.make_regression, y_scale=1e6, y_shift=3e7, n_samples=1000,
                                             n_features=20, n_informative=10, noise=10), 0),
    "regression features x1000": Case(gen(skd.make_regression, x_scale=1000, n_samples=1000, n_features=20,
                                          n_informative=10, noise=10), 0),
    "sparse_uncorrelated": Case(gen(skd.make_sparse_uncorrelated, n_samples=1000), 0),
}
TORCH_CASES = {f"torch: {name}": Case(CASES[name].make, CASES[name].classes, CASES[name].outputs, torch=True)
               for name in ("breast_cancer", "diabetes", "friedman1", "classification 5c 50f", "moons")}


def write_data(case: Case, x: np.ndarray, y: np.ndarray, folder: Path) -> Path:
    """The data file a user would write: a CSV (header, `target` column), or an .npz for several targets."""
    if y.ndim == 2:
        np.savez(folder / "data.npz", x=x.astype(np.float32), y=y.astype(np.float32))
        return folder / "data.npz"
    path = folder / "data.csv"
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([f"f{j}" for j in range(x.shape[1])] + ["target"])
        for row, target in zip(x, y, strict=True):
            cells = [str(int(round(v))) for v in row] if case.integers else [repr(float(v)) for v in row]
            label = case.names[int(target)] if case.names else (int(target) if case.classes else repr(float(target)))
            out.writerow([*cells, label])
    return path


def dsl_mlp(features: int, outputs: int, seed: int) -> onnx.ModelProto:
    nn.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, outputs))
    return nn.build(mlp, {"x": nn.Input(["batch", features])}, output_names=["logits"])


def torch_mlp(features: int, outputs: int, seed: int, path: Path) -> None:
    import torch

    torch.manual_seed(seed)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter's notice
    mlp = torch.nn.Sequential(torch.nn.Linear(features, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, outputs))
    torch.onnx.export(mlp, (torch.zeros(2, features),), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)


def metric(classes: int, truth: np.ndarray, predicted: np.ndarray) -> float:
    if classes:
        return float(accuracy_score(truth, predicted))
    return float(r2_score(truth.reshape(len(truth), -1), predicted.reshape(len(truth), -1)))


def predictions(classes: int, outputs: np.ndarray) -> np.ndarray:
    if not classes:
        return outputs
    return (outputs[:, 0] > 0).astype(np.int64) if outputs.shape[-1] == 1 else outputs.argmax(-1)


def run_case(case: Case, seed: int, folder: Path, with_model: bool = True) -> dict[str, object]:
    x, y = case.make(seed)
    data = write_data(case, x, y, folder)
    split = load_dataset(str(data))  # the splits training makes (data seed 0)
    features = split.train.inputs["x"].shape[1]
    outputs = case.outputs or case.classes or 1
    model = folder / "model.onnx"
    if with_model and case.torch:
        torch_mlp(features, outputs, seed, model)
    elif with_model:
        onnx.save(dsl_mlp(features, outputs, seed), model)
    given = [str(model)] if with_model else []
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "onnxkit", "train", *given, "--data", str(data),
                           "-o", str(folder / "run")], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    info = json.loads((folder / "run" / "run.json").read_text())
    test = info["result"]["test"]
    session = ort.InferenceSession(str(folder / "run" / "model.onnx"), providers=["CPUExecutionProvider"])
    (raw,) = session.run(None, {session.get_inputs()[0].name: split.test.inputs["x"].astype(np.float32)})
    ours = metric(case.classes, split.test.labels, predictions(case.classes, raw))
    reported = test.get("accuracy") if case.classes else test.get("r2")
    if reported is not None and abs(reported - ours) > 1e-4:
        print(f"  note: run.json says {reported:.4f}, the exported model scores {ours:.4f}", flush=True)
    tx, ty = split.train.inputs["x"], split.train.labels
    if case.classes:
        mlp, linear = MLPClassifier(random_state=seed, max_iter=2000), LogisticRegression(max_iter=5000)
        hgb = HistGradientBoostingClassifier(random_state=seed)
    else:
        mlp, linear = MLPRegressor(random_state=seed, max_iter=2000), Ridge()
        hgb = HistGradientBoostingRegressor(random_state=seed)
    if ty.ndim > 1:  # several targets: one model per target
        from sklearn.multioutput import MultiOutputRegressor

        hgb = MultiOutputRegressor(hgb)
    scores = {}
    for label, estimator in (("mlp", mlp), ("linear", linear), ("hgb", hgb)):
        fitted = make_pipeline(StandardScaler(), estimator).fit(tx, ty)
        scores[label] = metric(case.classes, split.test.labels, fitted.predict(split.test.inputs["x"]))
    return {"onnxkit": ours, **scores, "standardized": info["config"]["standardize"],
            "epochs": info["result"]["epochs"], "best_epoch": info["result"]["best_epoch"],
            "seconds": round(seconds, 1), "rows": len(x)}


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{float(np.median(values)):.4f} ({min(values):.3f}–{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=machine.count, default=3,
                        help="Seeds per case (data, initialisation, sklearn).")
    parser.add_argument("--only", nargs="*", default=[], help="Cases whose names contain one of these words.")
    parser.add_argument("--torch", action="store_true", help="Add PyTorch exports of the same MLP (needs torch).")
    parser.add_argument("--verbose", action="store_true", help="A line per seed, with epochs and time.")
    parser.add_argument("--no-model", action="store_true",
                        help="Train the model `onnxkit train` builds for the data in place of this tool's MLP.")
    args = parser.parse_args()
    if args.torch and importlib.util.find_spec("torch") is None:
        raise SystemExit("--torch needs PyTorch, kept outside the project environment: pip install --target "
                         "/tmp/torchlib torch==2.13.0, then run with PYTHONPATH=/tmp/torchlib")
    print(machine.machine_line(), flush=True)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    cases = {**CASES, **(TORCH_CASES if args.torch else {})}
    chosen = {k: c for k, c in cases.items() if not args.only or any(w in k for w in args.only)}
    ours = "onnxkit train DATA (no model)" if args.no_model else "onnxkit defaults"
    print(f"| dataset | metric | {ours} | StandardScaler + sklearn MLP | StandardScaler + linear | "
          "HistGradientBoosting | standardised |")
    print("|---|---|---|---|---|---|---|", flush=True)
    flagged = []
    for name, case in chosen.items():
        results = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as folder:
                results.append(run_case(case, seed, Path(folder), with_model=not args.no_model))
            if args.verbose:
                print(f"  {name} seed {seed}: {results[-1]}", flush=True)
        kind = "accuracy" if case.classes else "R²"
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            print(f"| {name} | {kind} | error: {errors[0]} | | | | |", flush=True)
            flagged.append(name)
            continue
        column = {k: [float(r[k]) for r in results] for k in ("onnxkit", "mlp", "linear", "hgb")}
        gap = float(np.median(column["mlp"]) - np.median(column["onnxkit"]))
        mark = " <<" if gap > GAP[kind] else ""
        flagged += [name] if mark else []
        standardized = sorted({str(r["standardized"]) for r in results})
        print(f"| {name} | {kind} | {spread(column['onnxkit'])}{mark} | {spread(column['mlp'])} | "
              f"{spread(column['linear'])} | {spread(column['hgb'])} | {'/'.join(standardized)} |", flush=True)
    print(f"\nflagged (onnxkit's median below sklearn MLP's by > {GAP['accuracy']} accuracy / {GAP['R²']} R², "
          f"or an error): {', '.join(flagged) or 'none'}")


if __name__ == "__main__":
    main()
