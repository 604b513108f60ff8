"""onnxkit's defaults next to scikit-learn, on the same splits of the raw tabular datasets.

For wine, breast-cancer and diabetes: a plain MLP (one hidden layer of 100 ReLU units,
scikit-learn's MLP default) trained by `fit` with its defaults (what `onnxkit train model.onnx
--data NAME` does: these data look unscaled, so it standardises them), the same with
`standardize=False` (raw values), and scikit-learn on the same train split: StandardScaler +
MLP (its defaults), and a linear model.
Every score is computed here with sklearn.metrics on the test split's predictions
(accuracy; R² for diabetes); the onnxkit models run on raw features in onnxruntime.

    python tools/compare_sklearn.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings

import machine
import numpy as np
import onnxruntime as ort
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from onnxkit import nn
from onnxkit.data import load_dataset
from onnxkit.metadata_keys import TASK_KEY
from onnxkit.train import fit

DATASETS = {"wine": 3, "breast-cancer": 2, "diabetes": 0}  # classes; 0: regression
HIDDEN = 100


def plain_mlp(features: int, outputs: int, task: str, seed: int):  # noqa: ANN201 - onnx.ModelProto
    """Linear(features, 100) -> ReLU -> Linear(100, outputs), as an ONNX model."""
    nn.manual_seed(seed)
    mlp = nn.Sequential([nn.Linear(features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, outputs)])
    return nn.build(mlp, {"x": nn.Input(["batch", features])}, output_names=["logits"],
                    metadata={TASK_KEY: task})


def score(classes: int, truth: np.ndarray, outputs: np.ndarray) -> float:
    if classes:
        return accuracy_score(truth, outputs.argmax(-1) if outputs.ndim == 2 else outputs)
    return r2_score(truth, outputs.reshape(len(truth)))


def onnxkit_score(name: str, classes: int, standardize: bool | None, seed: int) -> float:
    ds = load_dataset(name)
    x = ds.train.inputs["x"]
    model = plain_mlp(x.shape[1], classes or 1, "classification" if classes else "regression", seed)
    with tempfile.TemporaryDirectory() as folder:
        result = fit(model, name, f"{folder}/run", standardize=standardize, seed=seed, evaluate_test=False)
        if standardize is None and not json.loads((result.run_dir / "run.json").read_text())["config"]["standardize"]:
            raise SystemExit(f"the defaults did not standardise {name}; the table's first column assumes they do")
        session = ort.InferenceSession(str(result.model_path), providers=["CPUExecutionProvider"])
        (outputs,) = session.run(None, {"x": ds.test.inputs["x"]})  # raw features
    return score(classes, ds.test.labels, outputs)


def sklearn_scores(name: str, classes: int, seed: int) -> dict[str, float]:
    ds = load_dataset(name)
    x, y, tx = ds.train.inputs["x"], ds.train.labels, ds.test.inputs["x"]
    if classes:
        models = {"MLP": MLPClassifier(random_state=seed, max_iter=2000), "linear": LogisticRegression(max_iter=5000)}
    else:
        models = {"MLP": MLPRegressor(random_state=seed, max_iter=2000), "linear": Ridge()}
    out = {}
    for label, estimator in models.items():
        pipeline = make_pipeline(StandardScaler(), estimator).fit(x, y)
        out[label] = score(classes, ds.test.labels, pipeline.predict(tx))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=machine.count, default=3, help="Initialisation / shuffling seeds per model.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    seeds = range(args.seeds)
    print("| dataset (test split, data seed 0) | metric | onnxkit defaults (standardised) | onnxkit --no-standardize "
          "| scikit-learn StandardScaler + MLP | scikit-learn StandardScaler + linear |")
    print("|---|---|---|---|---|---|")
    for name, classes in DATASETS.items():
        ours = [onnxkit_score(name, classes, None, s) for s in seeds]
        raw = [onnxkit_score(name, classes, False, s) for s in seeds]
        theirs = [sklearn_scores(name, classes, s) for s in seeds]
        shown = [_spread(v) for v in (ours, raw, [t["MLP"] for t in theirs])] + [f"{theirs[0]['linear']:.4f}"]
        print(f"| {name} | {'accuracy' if classes else 'R²'} | " + " | ".join(shown) + " |", flush=True)


def _spread(values: list[float]) -> str:
    """The median, with the range over seeds when there are several."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{float(np.median(values)):.4f} ({min(values):.4f}–{max(values):.4f})"


if __name__ == "__main__":
    main()
