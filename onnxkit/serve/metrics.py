"""Server metrics in the Prometheus text format (version 0.0.4).

Updated only from the event loop's thread, so no locking is needed.
"""

from __future__ import annotations

import bisect
from collections import Counter

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Observations counted into cumulative buckets, with their sum and count."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {total}')
        out.append(f"{name}_sum{{{labels}}} {self.sum:.9g}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out


class Metrics:
    """Requests and errors by endpoint, model and status; infer latency; batch sizes."""

    def __init__(self, models: list[str]) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.latency = {name: Histogram(LATENCY_BUCKETS) for name in models}
        self.batch_size = {name: Histogram(BATCH_BUCKETS) for name in models}

    def record_request(self, endpoint: str, model: str, status: int, seconds: float | None) -> None:
        """One finished HTTP or gRPC request for `model`, counted under "" unless the server was started with it
        (served now or unloaded: a request a reload or unload overtook keeps its model); `seconds` for infer calls."""
        known = model in self.latency
        self.requests[(endpoint, model if known else "", status)] += 1
        if seconds is not None and known:
            self.latency[model].observe(seconds)

    def record_batch(self, model: str, rows: int) -> None:
        """One session run of `rows` rows."""
        self.batch_size[model].observe(rows)

    def render(self) -> str:
        lines = [
            "# HELP onnxkit_requests_total HTTP requests by endpoint, model and status code.",
            "# TYPE onnxkit_requests_total counter",
        ]
        for (endpoint, model, status), n in sorted(self.requests.items()):
            lines.append(f"onnxkit_requests_total{{{_labels(endpoint, model, status)}}} {n}")
        lines += [
            "# HELP onnxkit_request_errors_total HTTP requests answered with a 4xx or 5xx status.",
            "# TYPE onnxkit_request_errors_total counter",
        ]
        for (endpoint, model, status), n in sorted(self.requests.items()):
            if status >= 400:
                lines.append(f"onnxkit_request_errors_total{{{_labels(endpoint, model, status)}}} {n}")
        lines += [
            "# HELP onnxkit_infer_duration_seconds Time from receiving an infer request to replying.",
            "# TYPE onnxkit_infer_duration_seconds histogram",
        ]
        for model, histogram in self.latency.items():
            lines += histogram.lines("onnxkit_infer_duration_seconds", _labels(model=model))
        lines += [
            "# HELP onnxkit_batch_size Rows in each session run (dynamic batches).",
            "# TYPE onnxkit_batch_size histogram",
        ]
        for model, histogram in self.batch_size.items():
            lines += histogram.lines("onnxkit_batch_size", _labels(model=model))
        return "\n".join(lines) + "\n"


def _labels(endpoint: str | None = None, model: str = "", status: int | None = None) -> str:
    parts = [] if endpoint is None else [f'endpoint="{endpoint}"']
    parts.append(f'model="{_escape(model)}"')
    if status is not None:
        parts.append(f'code="{status}"')
    return ",".join(parts)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
