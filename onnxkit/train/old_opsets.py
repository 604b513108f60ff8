"""Models of opsets older than 13 train converted to it: the ONNX Model Zoo's ResNet, MobileNet, SqueezeNet and VGG
are opset 7 to 12, and gradients are written for opset 13 and newer (`autodiff.reverse.MIN_OPSET`). onnx's version
converter rewrites what changed (Upsample as Resize, Clip's and Pad's attributes as inputs, Dropout's ratio), with
what it gets wrong done around it (`onnxkit.opset_conversion`), and the trained model keeps the converted graph."""

from __future__ import annotations

import onnx

from onnxkit.autodiff.reverse import MIN_OPSET
from onnxkit.errors import OnnxkitError
from onnxkit.graph_walks import opset
from onnxkit.opset_conversion import converted

IR_FOR_OPSET_13 = 7  # the IR version opset 13 came with


def at_training_opset(model: onnx.ModelProto, named: str) -> tuple[onnx.ModelProto, str | None]:
    """`model` at opset MIN_OPSET when its own is older, and the line that says so; else `model` and None. A model
    the converter cannot convert is an error that begins with `named`."""
    version = opset(model)
    if not 0 < version < MIN_OPSET:
        return model, None
    try:
        model = converted(model, MIN_OPSET, named)
    except OnnxkitError:
        raise
    except Exception as e:  # noqa: BLE001 - the converter raises RuntimeError, ValueError, IndexError ...
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise OnnxkitError(f"{named} is opset {version}, and gradients are written for opset {MIN_OPSET} and newer, "
                           f"to which onnx's version converter could not bring it ({reason}); export it at opset "
                           f"{MIN_OPSET} or newer") from e
    model.ir_version = max(model.ir_version, IR_FOR_OPSET_13)
    return model, (f"the model is opset {version}: it trains converted to opset {MIN_OPSET} (onnx's version "
                   f"converter), the oldest gradients are written for, and the trained model keeps opset {MIN_OPSET}")
