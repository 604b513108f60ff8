"""Per-model inference statistics in Triton's form (what tritonclient's `get_inference_statistics` reads).

A batcher keeps one `ModelStatistics`: requests that succeeded or failed (from queueing to
the answer), their time in the queue, and each session run (compute_infer, with the rows it
served). onnxkit does not time input preparation and output splitting apart: compute_input and
compute_output stay zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Duration:
    """How many times something happened and how long it took in all, in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass(slots=True)
class ModelStatistics:
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    inference_count: int = 0  # rows (requests, for a model without a batch dim) run
    execution_count: int = 0  # session runs
    last_inference: int = 0  # milliseconds since the epoch at the end of the last run

    def ran(self, rows: int, seconds: float) -> None:
        """One session run of `rows` rows."""
        self.compute_infer.add(round(seconds * 1e9))
        self.inference_count += rows
        self.execution_count += 1
        self.last_inference = time.time_ns() // 1_000_000

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        """The V2 statistics extension's entry for this model (Triton's JSON and gRPC field names)."""
        zero = {"count": 0, "ns": 0}

        def duration(d: Duration) -> dict[str, int]:
            return {"count": d.count, "ns": d.ns}

        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": duration(self.success),
                "fail": duration(self.fail),
                "queue": duration(self.queue),
                "compute_input": zero,
                "compute_infer": duration(self.compute_infer),
                "compute_output": zero,
            },
        }
