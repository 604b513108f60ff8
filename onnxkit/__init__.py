"""onnxkit: author, train, quantize and serve neural networks as plain ONNX files.

Where to start (the `onnxkit` command wraps the same functions; `onnxkit --help`):

    onnxkit.nn                      the DSL: Module, Linear, Conv2d, ..., build() -> onnx.ModelProto
    onnxkit.zoo.build_model         a named recipe ("digits-cnn", ...) or your own .py file, built
    onnxkit.train.fit               train or fine-tune any inference-form .onnx model
    onnxkit.evaluate.evaluate       score a model on a dataset split
    onnxkit.quantize.quantize       int8 / int4 / fp16, with a size, speed and accuracy report
    onnxkit.runtime.load            run a model (numpy + onnxruntime only)
    onnxkit.summary.summarize       what `onnxkit inspect --json` prints: inputs, outputs, parameters, ops
    onnxkit.serve.serve             serve models over HTTP and gRPC (Open Inference Protocol)
    onnxkit.data.load_dataset       built-in datasets, .npz / .csv files and image folders, split

The package root stays import-light: the runtime (`onnxkit.runtime`) must be
usable with only numpy and onnxruntime installed.
"""

__version__ = "0.1.0"

import importlib  # noqa: E402

from onnxkit.errors import OnnxkitError  # noqa: E402

__all__ = ["OnnxkitError", "__version__"]
SUBMODULES = ("autodiff", "data", "evaluate", "nn", "quantize", "runtime", "serve", "summary", "train", "zoo")


def __getattr__(name: str) -> object:
    """`onnxkit.zoo.build_model(...)` after a bare `import onnxkit`: each subpackage is imported on first use."""
    if name in SUBMODULES:
        return importlib.import_module(f"onnxkit.{name}")
    raise AttributeError(f"module 'onnxkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *SUBMODULES})
