"""onnxkit: author, train, quantize and serve neural networks as plain ONNX files.

The package root stays import-light: the runtime (`onnxkit.runtime`) must be
usable with only numpy and onnxruntime installed.
"""

__version__ = "0.1.0"

from onnxkit.errors import OnnxkitError  # noqa: E402

__all__ = ["OnnxkitError", "__version__"]
