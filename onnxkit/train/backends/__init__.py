"""Training backends, one module each, found by name: `--backend ort-training` imports
`onnxkit.train.backends.ort_training` and takes its `BACKEND`. Importing lazily means a
backend's dependencies are needed only when it is used; a new backend is one new file.

- `onnx` (default): onnxkit's own autodiff and optimizer graphs on any ONNX Runtime.
- `ort-training`: ONNX Runtime's training API (onnxruntime-training 1.19.2, its own environment).
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from onnxkit.errors import OnnxkitError, suggest
from onnxkit.train.backend import Backend

DEFAULT = "onnx"
ENVIRONMENT = "ONNXKIT_BACKEND"  # overrides the default backend (e.g. in the ORT-training environment)


def default_backend() -> str:
    """The backend used when none is named: $ONNXKIT_BACKEND, else `onnx`."""
    name = os.environ.get(ENVIRONMENT) or DEFAULT
    if name not in (names := backend_names()):
        raise OnnxkitError(f"unknown training backend {name!r} (from ${ENVIRONMENT}; unset it for the default, "
                           f"{DEFAULT}); choose from {', '.join(names)}.{suggest(name, names)}")
    return name


def backend_names() -> list[str]:
    """The names of the available backends (the modules of this package)."""
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_backend(name: str | None = None) -> Backend:
    """The backend called `name` (default: `default_backend()`)."""
    name = name or default_backend()
    names = backend_names()
    if name not in names:
        raise OnnxkitError(f"unknown training backend {name!r}; choose from {', '.join(names)}.{suggest(name, names)}")
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}").BACKEND
