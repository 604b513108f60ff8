"""Preprocessing every quantization pass starts from (docs/architecture.md §3).

ONNX Runtime's `quant_pre_process` (shape inference, and for static
quantization its graph optimizations), plus the fixes the quantizers need.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import onnx

from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import without_initializer_inputs
from onnxkit.opset_conversion import converted
from onnxkit.quantize import rewrite

ORT_DEFAULT_SEVERITY = 2  # onnxruntime's default logger prints warnings and above


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
    """Silence ONNX Runtime's native logger, the quantizers' logging (quant_pre_process logs a traceback as an
    ERROR before it raises) and the calibrators' print()s (which would mix into a command's stdout). The root
    logger's level and handlers are put back afterwards (some ORT modules call `logging.basicConfig` on import),
    and ORT's logger is set back to its default severity, warnings (it has no getter for the one it had)."""
    import onnxruntime as ort

    root = logging.getLogger()
    level, handlers, disabled = root.level, root.handlers[:], root.manager.disable
    logging.disable(logging.CRITICAL)
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)
        logging.disable(disabled)
        root.setLevel(level)
        root.handlers[:] = handlers


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """Run with `folder` as the working directory: ORT's symbolic shape inference dumps
    `sym_shape_infer_temp.onnx` and its external-data files into the cwd when it fails."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


QUANTIZE_OPSET = 13  # QuantizeLinear / DequantizeLinear take a per-channel axis from here on


def _at_least_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """A copy of `model` at ONNX opset `version` or later: an older one is converted by onnx's version converter,
    its mistakes undone (`opset_conversion`; an opset-9 export's static quantization failed in onnxruntime:
    'Unrecognized attribute: axis for operator DequantizeLinear')."""
    found = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), version)
    if found >= version:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    try:
        return converted(model, version, "the model")
    except OnnxkitError:
        raise
    except Exception as e:  # noqa: BLE001 - the converter raises its own kinds
        raise OnnxkitError(f"the model is at opset {found}, and quantizing takes opset {version} or later, which "
                           f"onnx's version converter could not make of it ({type(e).__name__}: {str(e)[:160]}); "
                           f"export it at opset {version} or later") from e


def prepare(model: onnx.ModelProto, workdir: Path, *, optimize: bool) -> onnx.ModelProto:
    """Return a copy of `model` ready for a quantizer.

    optimize: run ORT's basic graph optimizations (folds BatchNorm into Conv,
    fuses MatMul+Add into Gemm). Right for static QDQ; wrong for dynamic and
    int4, which only act on MatMul — for those Gemm is rewritten to MatMul.
    """
    from onnxruntime.quantization import quant_pre_process

    model_copy = _at_least_opset(without_initializer_inputs(model), QUANTIZE_OPSET)
    rewrite.name_nodes(model_copy)
    if not optimize:
        rewrite.fold_constant_identities(model_copy)
        rewrite.fold_weight_layouts(model_copy)
        rewrite.gemm_to_matmul(model_copy)
    src, dst = workdir / "input.onnx", workdir / "preprocessed.onnx"
    onnx.save(model_copy, str(src))
    errors = []
    # Symbolic shape inference fails on some exported graphs; ONNX shape inference alone still helps.
    for skip_symbolic in (False, True):
        dst.unlink(missing_ok=True)
        try:
            with quiet_ort(), inside(workdir):
                quant_pre_process(
                    str(src),
                    str(dst),
                    skip_optimization=not optimize,
                    skip_symbolic_shape=skip_symbolic,
                )
            break
        except Exception as e:  # noqa: BLE001 - any failure in ORT's preprocessing
            errors.append(f"{type(e).__name__}: {e}")
    if not dst.is_file():
        raise OnnxkitError(
            "ONNX Runtime could not preprocess the model for quantization "
            f"({errors[-1][:200]}); check it with `onnxkit inspect` and onnx.checker"
        )
    prepared = onnx.load(str(dst))
    rewrite.flatten_gemm_biases(prepared)  # after ORT's optimizer, which fuses MatMul + Add into Gemm
    rewrite.strip_initializer_value_info(prepared)
    rewrite.name_nodes(prepared)
    return prepared
