"""Datasets: built-in (iris, digits, digits-images), .npz and .csv files, deterministic splits.

    from onnxkit.data import load_dataset
    ds = load_dataset("digits-images")       # ds.train, ds.validation, ds.test
    for inputs, labels in ds.train.batches(64, shuffle=True, seed=0): ...
"""

from onnxkit.data.registry import (
    DatasetEntry,
    data_sha256,
    datasets,
    in_model_order,
    in_trained_columns,
    load_dataset,
    numbered_classes,
    register_dataset,
    trained_label,
)
from onnxkit.data.split import (
    Dataset,
    ModelInput,
    Split,
    dataset_from_arrays,
    from_arrays,
    model_inputs,
    split_indices,
)

__all__ = [
    "Dataset",
    "DatasetEntry",
    "ModelInput",
    "Split",
    "data_sha256",
    "dataset_from_arrays",
    "datasets",
    "from_arrays",
    "in_model_order",
    "in_trained_columns",
    "load_dataset",
    "model_inputs",
    "numbered_classes",
    "register_dataset",
    "split_indices",
    "trained_label",
]
