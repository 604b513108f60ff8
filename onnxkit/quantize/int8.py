"""Int8 passes over ONNX Runtime's quantizers: dynamic (weights only) and static (calibrated)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import onnx

from onnxkit.errors import OnnxkitError
from onnxkit.quantize.data import BatchReader, Feeds
from onnxkit.quantize.prepare import quiet_ort
from onnxkit.quantize.settings import Settings

# Dynamic int8 pays off for weight-heavy matrix products. Conv is left out:
# ConvInteger runs 5-12x slower than fp32 on CPUs without VNNI (docs/architecture.md §3).
DYNAMIC_OPS = ("MatMul", "Attention", "LSTM", "Gather", "EmbedLayerNormalization")
_CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
ENTROPY_BINS = 2048  # histogram bins of the entropy calibration (TensorRT's choice, as in ORT's percentile method)


def _paths(model: onnx.ModelProto, workdir: Path, name: str) -> tuple[str, str]:
    src, dst = workdir / f"{name}.in.onnx", workdir / f"{name}.onnx"
    onnx.save(model, str(src))
    return str(src), str(dst)


def quantize_dynamic(
    model: onnx.ModelProto,
    settings: Settings,
    workdir: Path,
    exclude_ops: set[str],
    exclude_nodes: set[str],
) -> onnx.ModelProto:
    """Weights to int8 ahead of time; activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    src, dst = _paths(model, workdir, "dynamic")
    with quiet_ort():
        ort_quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=[op for op in DYNAMIC_OPS if op not in exclude_ops],
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(exclude_nodes),
            # values made by fused com.microsoft ops may lack a type after shape inference: they are float
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return onnx.load(dst)


def quantize_static(
    model: onnx.ModelProto,
    settings: Settings,
    workdir: Path,
    exclude_ops: set[str],
    exclude_nodes: set[str],
    calibration: list[Feeds],
) -> onnx.ModelProto:
    """Weights and activations to int8, with activation ranges calibrated on data.

    Activations are u8 and weights s8 (MLAS's fast x86 path); `reduce_range`
    keeps u8 x s8 sums from saturating on CPUs without VNNI.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    qdq = settings.format == "qdq"
    # ORT's own default is the union of both registries; a narrower list breaks
    # its Softmax range adjustment (1.19.2 raises on uncalibrated Softmax outputs).
    op_types = sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - exclude_ops)
    src, dst = _paths(model, workdir, "static")
    with quiet_ort():
        minmax, beyond = _minmax_ranges(src, op_types, workdir, calibration)
        if beyond and settings.method != "minmax":
            raise OnnxkitError(
                f"the calibration data drives {_some(beyond)} to infinity or NaN (a padding mask filled with "
                f"-inf?), which --method {settings.method} cannot calibrate; use --method minmax, which leaves "
                "the nodes around those values float, or --mode dynamic", params=["method"])
        exclude_nodes = exclude_nodes | {n.name for n in model.graph.node
                                         if n.name and beyond.intersection([*n.input, *n.output])}
        ranges = {"minmax": minmax, "entropy": _entropy_ranges(src, op_types, workdir, calibration)
                  if settings.method == "entropy" else {}}.get(settings.method, {})
        try:
            ort_quantize_static(
                src,
                dst,
                BatchReader(calibration),
                quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
                op_types_to_quantize=op_types,
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=sorted(exclude_nodes),
                calibrate_method=getattr(CalibrationMethod, _CALIBRATION[settings.method]),
                extra_options={"CalibPercentile": 99.99},
                **ranges,
            )
        except ValueError as e:  # numpy's, from ORT's histogram calibrator (percentile)
            if "finite-sized bins" not in str(e):
                raise
            raise OnnxkitError(
                f"--method {settings.method}: ONNX Runtime's histogram calibration cannot bin a value that barely "
                f"varies over the calibration data, such as a sigmoid gate of random-init weights ({e}); use "
                "--method minmax or entropy", params=["method"]) from e
    return onnx.load(dst)


def _entropy_ranges(src: str, op_types: list[str], workdir: Path, calibration: list[Feeds]) -> dict[str, str]:
    """quantize_static's argument for entropy ranges taken from 2,048-bin histograms, computed here: it calibrates
    with 128 bins and 128 quantized bins, which leaves the KL search one threshold, the whole range: minmax's
    ranges under another name. Needs a calibration cache (onnxruntime 1.32); older ones calibrate as they do."""
    from onnxruntime.quantization import CalibrationMethod

    if not _takes_cache():
        return {}
    data = _calibrated(src, op_types, workdir, calibration, CalibrationMethod.Entropy,
                       {"num_bins": ENTROPY_BINS, "num_quantized_bins": 128})
    return _cached(data, workdir / "entropy.ranges.json")


def _some(names: set[str]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(shown) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _minmax_ranges(src: str, op_types: list[str], workdir: Path, calibration: list[Feeds]) -> tuple[dict, set[str]]:
    """quantize_static's argument for minmax ranges computed here, less the values that reach infinity or NaN
    on the calibration data, and the names of those. No int8 scale holds them: a PyTorch TransformerEncoder's
    padding mask fills scores with -inf before Softmax, and their QDQ pair (scale inf, numpy warning on stderr)
    turned masked rows into garbage: 93.3% accuracy fell to 36.7%; the nodes around them stay float now."""
    import numpy as np
    from onnxruntime.quantization import CalibrationMethod

    data = _calibrated(src, op_types, workdir, calibration, CalibrationMethod.MinMax)
    beyond = {name for name, tensor in data.items()
              if not np.all(np.isfinite(np.asarray(tensor.range_value, dtype=np.float64)))}
    if not _takes_cache():
        return {}, beyond
    from onnxruntime.quantization.calibrate import TensorsData  # 1.20 on, as the cache

    kept = TensorsData(CalibrationMethod.MinMax, {k: v for k, v in data.items() if k not in beyond})
    return _cached(kept, workdir / "minmax.ranges.json"), beyond


def _calibrated(src: str, op_types: list[str], workdir: Path, calibration: list[Feeds], method: Any,
                extra_options: dict[str, Any] | None = None) -> Any:
    """onnxruntime's calibration (`method`, a CalibrationMethod) of the tensors `op_types` read, over the data."""
    from onnxruntime.quantization.calibrate import create_calibrator

    augmented = workdir / f"{method.name.lower()}.augmented.onnx"
    calibrator = create_calibrator(Path(src), op_types, augmented_model_path=str(augmented), calibrate_method=method,
                                   extra_options=extra_options or {})
    import numpy as np

    with np.errstate(all="ignore"):  # a range past float's (activations near 1e38) overflowed in numpy's histogram
        calibrator.collect_data(BatchReader(calibration))  # setup: 4 warning lines above the one-line error
        return calibrator.compute_data()  # (infinite ranges are dealt with by the callers)


def _cached(data: Any, cache: Path) -> dict[str, str]:
    """`data` written as a calibration cache, and quantize_static's argument naming it (onnxruntime 1.20 on)."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    save_tensors_data(data, cache)
    return {"calibration_cache_path": str(cache)}


def _takes_cache() -> bool:
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    return "calibration_cache_path" in inspect.signature(ort_quantize_static).parameters
