"""Gradient rules: norm ops."""

from __future__ import annotations

from onnxkit.autodiff.builder import Backward
from onnxkit.autodiff.rules import rule
