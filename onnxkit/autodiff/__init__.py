"""onnxkit's reverse-mode autodiff on standard ONNX operators (usable without the training loop).

    from onnxkit.autodiff import add_gradients, gradient_name
    grad_model = add_gradients(model, ["fc.weight"], "loss")   # + output "fc.weight.grad"

The gradient graph uses default-domain ops only, so any ONNX Runtime build runs it.
"""

from onnxkit.autodiff.builder import GRADIENT_NODES
from onnxkit.autodiff.reverse import add_gradients, gradient_name, missing_rules
from onnxkit.autodiff.rules import RULES, differentiable_ops, gradient_table

__all__ = ["GRADIENT_NODES", "RULES", "add_gradients", "differentiable_ops", "gradient_name", "gradient_table",
           "missing_rules"]
