"""An HTTP and gRPC server for ONNX models speaking the Open Inference Protocol (KServe V2).

Built on Starlette and uvicorn, with grpc.aio on the same event loop (`grpc_service`);
JSON or binary tensors (`protocol`, `binary`); concurrent requests are merged into batches
(`onnxkit.serve.batcher`) and counted at /metrics in the Prometheus format.
"""

from onnxkit.serve.app import create_app
from onnxkit.serve.server import load_models, serve

__all__ = ["create_app", "load_models", "serve"]
