"""Latency of models side by side: one SessionOptions for all, runs interleaved, medians.

Interleaving the models run by run spreads background noise (other processes
on a shared CPU) over all of them alike, so their ratio stays meaningful.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import numpy as np


def session_options(threads: int | None = None):  # -> onnxruntime.SessionOptions
    """The options every timed session uses: full graph optimization, fixed thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # its errors come back as exceptions, reported in one line
    # idle threads stop spinning when a run returns: the models run in turn, and one's threads spinning on took
    # cores from the next model's run (a transformer against a copy of itself timed 66 against 51 ms at batch 64,
    # 35 ms each alone; with this, 35.6 and 34.9)
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if threads:
        options.intra_op_num_threads = threads
    return options


def measure(
    models: Mapping[str, bytes],
    feeds: Mapping[int, dict[str, np.ndarray] | None],
    *,
    budget_s: float = 1.0,
    min_runs: int = 5,
    max_runs: int = 200,
    threads: int | None = None,
    spread: dict[int, tuple[float, float]] | None = None,
) -> dict[str, dict[int, float | None]]:
    """Median milliseconds per run: {model label: {batch size: ms}}.

    feeds maps a batch size to its inputs.
    Each batch size gets about `budget_s` seconds for all models together; the models run in turn, each going
    first in turn (a model right after another can find the CPU's caches and clock as that one left them).
    spread: filled with {batch size: (p25, p75)} of the run-by-run ratios of the second model's time to the
    first's (each pair run back to back); far apart, the CPU was shared and the medians are not to be trusted.
    """
    import onnxruntime as ort

    options = session_options(threads)
    sessions = {
        label: ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        for label, data in models.items()
    }
    result: dict[str, dict[int, float | None]] = {label: {} for label in models}
    for batch, feed in feeds.items():
        times: dict[str, list[float]] = {label: [] for label in models}
        for sess in sessions.values():  # warm-up: allocations, kernel selection
            sess.run(None, feed)
        start = time.perf_counter()
        order = list(sessions.items())
        while True:
            runs = len(times[next(iter(times))])
            for label, sess in order[runs % len(order):] + order[:runs % len(order)]:  # each goes first in turn
                t0 = time.perf_counter()
                sess.run(None, feed)
                times[label].append(time.perf_counter() - t0)
            runs += 1
            if runs >= max_runs or (runs >= min_runs and time.perf_counter() - start > budget_s):
                break
        for label, samples in times.items():
            result[label][batch] = 1000.0 * statistics.median(samples)
        if spread is not None and len(times) >= 2:
            first, second = list(times.values())[:2]
            ratios = np.asarray(second) / np.asarray(first)
            spread[batch] = (float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75)))
    return result
