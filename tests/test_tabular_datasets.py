"""The raw tabular built-ins hold exactly scikit-learn's data (wine, breast-cancer, diabetes unscaled)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import datasets as sk

from onnxkit.data import load_dataset


@pytest.mark.parametrize(("name", "loader"), [
    ("wine", sk.load_wine),
    ("breast-cancer", sk.load_breast_cancer),
    ("diabetes", lambda: sk.load_diabetes(scaled=False)),
])
def test_builtin_tables_match_scikit_learn(name, loader):
    ours, theirs = load_dataset(name), loader()
    splits = [ours.split(s) for s in ("train", "validation", "test")]
    rows = np.concatenate([np.column_stack([s.inputs["x"], s.labels]) for s in splits]).astype(np.float64)
    expected = np.column_stack([theirs.data, theirs.target])
    order = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731 - rows sorted, to compare as sets
    np.testing.assert_allclose(order(rows), order(expected), rtol=1e-6)
    assert ours.task == ("regression" if name == "diabetes" else "classification")
    if name != "diabetes":
        assert ours.label_names == list(theirs.target_names)
