"""Built-in datasets read from the CSV files scikit-learn ships (no download, no sklearn import)."""

from __future__ import annotations

import gzip
import importlib.util
import warnings
from pathlib import Path

import numpy as np

from onnxkit.data.registry import register_dataset
from onnxkit.data.split import Dataset, dataset_from_arrays
from onnxkit.errors import OnnxkitError


def _sklearn_data(filename: str) -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise OnnxkitError(
            "the built-in datasets read scikit-learn's bundled files (a dependency of onnxkit that this "
            "environment lacks): pip install scikit-learn"
        )
    path = Path(spec.origin).parent / "datasets" / "data" / filename
    if not path.is_file():
        raise OnnxkitError(f"{path} is missing from the scikit-learn installation; reinstall it")
    return path


_SKLEARN_SCALES = {  # how a built-in dataset's features differ from what scikit-learn's loader gives by default
    "digits": "its pixels are in [0, 1], where scikit-learn's load_digits() gives 0 to 16",
    "diabetes": "its measurements are raw (age in years, BMI, ...), where scikit-learn's load_diabetes() gives them "
                "centred and scaled",
}


def sklearn_scale_warning(name: str, model) -> str | None:  # type: ignore[no-untyped-def]
    """A warning line for a scikit-learn model (converted by skl2onnx or onnxmltools: ai.onnx.ml ops) evaluated on a
    built-in dataset whose features are scaled otherwise than scikit-learn's loader gives them (a KNN fit on
    load_digits() scored 9.9% on `digits`, a Ridge R² -140,000 on `diabetes`, unsaid); None otherwise."""
    if name not in _SKLEARN_SCALES or not (model.producer_name in ("skl2onnx", "OnnxMLTools") or any(
            node.domain == "ai.onnx.ml" for node in model.graph.node)):
        return None
    return (f"warning: built-in {name!r}: {_SKLEARN_SCALES[name]}: a scikit-learn model fit on what that loader "
            "gives is fed other numbers here; evaluate it on a .csv or .npz of such rows")


def _classes(name: str, filename: str, seed: int, validation: float, test: float) -> Dataset:
    """A scikit-learn class table: a header 'rows,features,class names...', then features and a class id per row."""
    lines = _sklearn_data(filename).read_text().splitlines()
    label_names = lines[0].split(",")[2:]
    table = np.array([line.split(",") for line in lines[1:] if line], dtype=np.float64)
    return dataset_from_arrays(name, {"x": table[:, :-1].astype(np.float32)}, table[:, -1].astype(np.int64),
                               label_names=label_names, seed=seed, validation=validation, test=test)


@register_dataset("iris", "150 iris flowers: 4 measurements (cm) -> 3 species")
def iris(*, seed: int = 0, validation: float = 0.2, test: float = 0.2) -> Dataset:
    return _classes("iris", "iris.csv", seed, validation, test)


@register_dataset("wine", "178 wines: 13 raw chemical measurements (scales from 0.1 to 1,000s) -> 3 cultivars")
def wine(*, seed: int = 0, validation: float = 0.2, test: float = 0.2) -> Dataset:
    return _classes("wine", "wine_data.csv", seed, validation, test)


@register_dataset("breast-cancer", "569 breast masses: 30 raw cell-nucleus features -> malignant / benign")
def breast_cancer(*, seed: int = 0, validation: float = 0.2, test: float = 0.2) -> Dataset:
    return _classes("breast-cancer", "breast_cancer.csv", seed, validation, test)


@register_dataset("diabetes", "442 patients: 10 raw measurements (age, sex, BMI, ...) -> disease progression "
                  "after a year (regression, 25-346)")
def diabetes(*, seed: int = 0, validation: float = 0.2, test: float = 0.2) -> Dataset:
    x = np.loadtxt(_sklearn_data("diabetes_data_raw.csv.gz"), dtype=np.float32)
    y = np.loadtxt(_sklearn_data("diabetes_target.csv.gz"), dtype=np.float32)
    return dataset_from_arrays("diabetes", {"x": x}, y, seed=seed, validation=validation, test=test)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    path = _sklearn_data("digits.csv.gz")
    table = unsigned_csv(gzip.decompress(path.read_bytes()), path)
    return table[:, :64].astype(np.float32) / np.float32(16.0), table[:, 64]


def unsigned_csv(raw: bytes, path: Path) -> np.ndarray:
    """A headerless CSV of non-negative integers as an int64 [rows, columns] array, read by numpy's C text
    parser: 1.5 ms for the digits' 117,000 numbers, where np.loadtxt took 18-20 ms of every run on them and a
    whole-array digit parse 7. Every row must hold as many numbers as the first."""
    data = raw.rstrip(b"\n")
    text = np.frombuffer(data, np.uint8)
    line_ends = np.append(np.flatnonzero(text == ord("\n")), len(data))
    commas = np.diff(np.searchsorted(np.flatnonzero(text == ord(",")), line_ends), prepend=0)  # in each line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns, rather than fails, where a number does not parse
        try:
            values = np.fromstring(data.replace(b"\n", b","), dtype=np.int64, sep=",")
        except (ValueError, DeprecationWarning):
            values = None
    if values is None or np.any(commas != commas[0]) or values.size != commas.size * (commas[0] + 1) \
            or values.min(initial=0) < 0:
        raise OnnxkitError(f"{path} is not a table of whole numbers; reinstall scikit-learn")
    return values.reshape(commas.size, -1)


_DIGIT_NAMES = [str(d) for d in range(10)]


@register_dataset("digits", "1797 handwritten digits, 64 pixels in [0, 1] -> 10 classes")
def digits(*, seed: int = 0, validation: float = 0.2, test: float = 0.2) -> Dataset:
    x, y = _digits()
    return dataset_from_arrays(
        "digits", {"x": x}, y, label_names=_DIGIT_NAMES, seed=seed, validation=validation, test=test
    )


@register_dataset("digits-images", "the digits as 1x8x8 images in [0, 1] -> 10 classes")
def digits_images(*, seed: int = 0, validation: float = 0.2, test: float = 0.2) -> Dataset:
    x, y = _digits()
    return dataset_from_arrays(
        "digits-images",
        {"image": x.reshape(-1, 1, 8, 8)},
        y,
        label_names=_DIGIT_NAMES,
        seed=seed,
        validation=validation,
        test=test,
    )
