"""Quantization: int8 (dynamic, static), int4 and fp16 passes with a size/latency/accuracy report.

    from onnxkit.quantize import quantize
    result = quantize("digits.onnx", "digits.int8.onnx", mode="static",
                      calib="digits-images", eval_data="digits-images", max_drop=0.5)
    print(result.report.text())
"""

from onnxkit.quantize.api import QuantizeResult, quantize
from onnxkit.quantize.report import Report

__all__ = ["QuantizeResult", "Report", "quantize"]
