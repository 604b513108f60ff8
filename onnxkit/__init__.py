"""onnxkit: author, train, quantize and serve neural networks as plain ONNX files.

Where to start (the `onnxkit` command wraps the same functions; `onnxkit --help`):

    onnxkit.nn                      the DSL: Module, Linear, Conv2d, ..., build() -> onnx.ModelProto
    onnxkit.zoo.build_model         a named recipe ("digits-cnn", ...) or your own .py file, built
    onnxkit.train.fit               train or fine-tune any inference-form .onnx model
    onnxkit.evaluate.evaluate       score a model on a dataset split
    onnxkit.quantize.quantize       int8 / int4 / fp16, with a size, speed and accuracy report
    onnxkit.runtime.load            run a model (numpy + onnxruntime only)
    onnxkit.data.load_dataset       built-in datasets and .npz / .csv files, split

The package root stays import-light: the runtime (`onnxkit.runtime`) must be
usable with only numpy and onnxruntime installed.
"""

__version__ = "0.1.0"

from onnxkit.errors import OnnxkitError  # noqa: E402

__all__ = ["OnnxkitError", "__version__"]
