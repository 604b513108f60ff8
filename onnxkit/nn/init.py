"""Seeded weight initialisers. `manual_seed(s)` makes every layer built after it reproducible."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np

from onnxkit.errors import OnnxkitError, suggest

_rng = np.random.default_rng(0)

Shape = tuple[int, ...]


def manual_seed(seed: int) -> None:
    """Reset the generator that all initialisers draw from; `seed` a whole number >= 0 (numpy's message for -1
    named no seed: "expected non-negative integer")."""
    global _rng
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise OnnxkitError(f"manual_seed takes a whole number >= 0, got {seed!r}")
    _rng = np.random.default_rng(int(seed))


def _fans(shape: Shape, fan_in: int | None, fan_out: int | None) -> tuple[int, int]:
    """Fan-in/out; conv weights [out, in/groups, kh, kw], linear weights [in, out]."""
    if fan_in is not None and fan_out is not None:
        return fan_in, fan_out
    if len(shape) == 2:
        return shape[0], shape[1]
    field = math.prod(shape[2:])
    return shape[1] * field, shape[0] * field


def zeros(shape: Shape, **_: int | None) -> np.ndarray:
    return np.zeros(shape, np.float32)


def ones(shape: Shape, **_: int | None) -> np.ndarray:
    return np.ones(shape, np.float32)


def normal(shape: Shape, std: float = 0.02, **_: int | None) -> np.ndarray:
    return _rng.normal(0.0, std, shape).astype(np.float32)


def uniform(shape: Shape, bound: float) -> np.ndarray:
    return _rng.uniform(-bound, bound, shape).astype(np.float32)


def kaiming_uniform(shape: Shape, fan_in: int | None = None, fan_out: int | None = None) -> np.ndarray:
    """He uniform for ReLU: U(±√(6 / fan_in))."""
    fi, _ = _fans(shape, fan_in, fan_out)
    return uniform(shape, math.sqrt(6.0 / fi))


def kaiming_normal(shape: Shape, fan_in: int | None = None, fan_out: int | None = None) -> np.ndarray:
    """He normal for ReLU: N(0, 2 / fan_in)."""
    fi, _ = _fans(shape, fan_in, fan_out)
    return _rng.normal(0.0, math.sqrt(2.0 / fi), shape).astype(np.float32)


def pytorch_uniform(shape: Shape, fan_in: int | None = None, fan_out: int | None = None) -> np.ndarray:
    """PyTorch's default for nn.Linear (kaiming_uniform_ with a=√5): U(±1/√fan_in)."""
    fi, _ = _fans(shape, fan_in, fan_out)
    return uniform(shape, 1 / math.sqrt(fi))


def xavier_uniform(shape: Shape, fan_in: int | None = None, fan_out: int | None = None) -> np.ndarray:
    """Glorot uniform: U(±√(6 / (fan_in + fan_out)))."""
    fi, fo = _fans(shape, fan_in, fan_out)
    return uniform(shape, math.sqrt(6.0 / (fi + fo)))


def xavier_normal(shape: Shape, fan_in: int | None = None, fan_out: int | None = None) -> np.ndarray:
    """Glorot normal: N(0, 2 / (fan_in + fan_out))."""
    fi, fo = _fans(shape, fan_in, fan_out)
    return _rng.normal(0.0, math.sqrt(2.0 / (fi + fo)), shape).astype(np.float32)


INITIALIZERS: dict[str, Callable[..., np.ndarray]] = {
    "zeros": zeros,
    "ones": ones,
    "normal": normal,
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "pytorch_uniform": pytorch_uniform,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
}


def get(name: str) -> Callable[..., np.ndarray]:
    """An initialiser by name; unknown names fail with suggestions."""
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise OnnxkitError(f"unknown initialiser {name!r}.{suggest(name, INITIALIZERS)}") from None
