"""The embedding API: run an ONNX model from your own Python code.

Imports only numpy, onnxruntime and the standard library, so it works in an
environment with just `onnxruntime` (or `onnxruntime-gpu`) installed::

    from onnxkit import runtime
    model = runtime.load("digits.onnx")
    result = model.predict(images)        # numpy array, dict of arrays, or lists
    print(result.labels, result.scores)

A bad input, model or output name raises `OnnxkitError` (its message is one line saying what to do);
an unknown output name is also a `KeyError` (`UnknownOutput`).
"""

from onnxkit.errors import OnnxkitError
from onnxkit.runtime.model import Model, load
from onnxkit.runtime.prediction import Prediction, UnknownOutput
from onnxkit.runtime.signature import TensorSpec

__all__ = ["Model", "OnnxkitError", "Prediction", "TensorSpec", "UnknownOutput", "load"]
