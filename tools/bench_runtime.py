"""onnxkit's embeddable runtime against the raw ONNX Runtime API, call for call.

For digits-mlp, digits-cnn and text-transformer (128 tokens) at batch 1 and 64, three contenders
run the same inputs on sessions made with the same SessionOptions (intra-op threads, "all"
optimisations, spin-waiting on):

- raw: `onnxruntime.InferenceSession(...).run(None, feeds)` (the baseline);
- predict: `onnxkit.runtime.load(...).predict(x)` (inputs checked and cast, a Prediction back);
- run: `Model.run(feeds)` on feeds `Model.prepare` made once (what the server calls per batch).

Each round times `--calls` calls of each contender in turn, the first one rotating between
rounds, after a short pause (so the previous contender's threads stop spinning). Printed per
case: the median microseconds per call and, per contender, min/median/max over rounds of its
per-round ratio to raw.

    .venv/bin/python tools/bench_runtime.py [--rounds 7] [--calls 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import machine
import numpy as np
import onnxruntime as ort

from onnxkit import runtime, zoo
from onnxkit.runtime.session import session_options

PAUSE = 0.05
MODELS = {"digits-mlp": {}, "digits-cnn": {}, "text-transformer": {"max_len": 128}}


def inputs(session: ort.InferenceSession, rows: int) -> dict[str, np.ndarray]:
    """Random inputs of `rows` rows: floats in [0, 1), token ids below 1000, a full attention mask."""
    rng, feeds = np.random.default_rng(0), {}
    for arg in session.get_inputs():
        shape = [rows if i == 0 else (d if isinstance(d, int) else 128) for i, d in enumerate(arg.shape)]
        if arg.type == "tensor(float)":
            feeds[arg.name] = rng.random(shape, dtype=np.float32)
        elif "mask" in arg.name:
            feeds[arg.name] = np.ones(shape, np.int64)
        else:
            feeds[arg.name] = rng.integers(0, 1000, shape, dtype=np.int64)
    return feeds


def time_calls(call: Callable[[], object], calls: int) -> float:
    time.sleep(PAUSE)
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=machine.count, default=7)
    parser.add_argument("--calls", type=machine.count, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)
    print(f"onnxruntime {ort.__version__}, {args.threads} threads; ratios to raw: min/median/max over "
          f"{args.rounds} rounds of {args.calls} calls")
    for name, options in MODELS.items():
        proto = zoo.build_model(name, **options).SerializeToString()
        raw = ort.InferenceSession(proto, session_options(args.threads, "all"), providers=["CPUExecutionProvider"])
        model = runtime.load(proto, threads=args.threads)
        for rows in (1, 64):
            feeds = inputs(raw, rows)
            prepared = model.prepare(feeds)
            contenders = {"raw": partial(raw.run, None, feeds), "predict": partial(model.predict, feeds),
                          "run": partial(model.run, prepared)}
            for call in contenders.values():  # warm-up
                time_calls(call, max(10, args.calls // 10))
            times: dict[str, list[float]] = {k: [] for k in contenders}
            order = list(contenders)
            for r in range(args.rounds):
                for key in order[r % len(order):] + order[:r % len(order)]:
                    times[key].append(time_calls(contenders[key], args.calls))
            ratios = {k: [t / b for t, b in zip(times[k], times["raw"], strict=True)] for k in contenders if k != "raw"}
            shown = "  ".join(f"{k} {statistics.median(times[k]):8.1f} us {spread(ratios[k])}" for k in ratios)
            print(f"{name:17s} batch {rows:3d}: raw {statistics.median(times['raw']):8.1f} us   {shown}")


if __name__ == "__main__":
    machine.run(main)
