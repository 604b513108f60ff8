"""Training and fine-tuning of inference-form ONNX models (see `fit`).

from onnxkit.train import fit
result = fit("digits.onnx", data="digits-images", out_dir="runs/digits", epochs=10)
result.model_path, result.metrics["test"]["accuracy"]
"""

from onnxkit.train.config import FitResult, GraphAdapter, TrainConfig, TrainingInterrupted
from onnxkit.train.fit import fit
from onnxkit.train.progress import TrainingWarning

__all__ = ["FitResult", "GraphAdapter", "TrainConfig", "TrainingInterrupted", "TrainingWarning", "fit"]
