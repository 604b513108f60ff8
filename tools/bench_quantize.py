"""Latency of int8 (and int4) models against their fp32 originals, side by side.

For digits-mlp, digits-cnn, bert-classifier and text-transformer (random weights: latency does
not depend on their values) each quantized model runs interleaved with its
fp32 original in sessions made from the same SessionOptions; every figure is
a median of repeated runs, and the whole measurement is repeated `--rounds`
times so the spread of the ratio shows how noisy the (shared) CPU was.

    python tools/bench_quantize.py [--seq-len 32] [--rounds 3] [--budget 2] [--models text-transformer]

Goal: int8/fp32 <= 0.6 at batch 64 for the MatMul-heavy models. A dynamic int8 transformer has ONNX Runtime's
attention fusions (`onnxkit.quantize.fuse`); its row "fp32, attention fused" times the fp32 model with the same
fusions, so that what quantization itself buys reads as the int8 time over that one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import machine

from onnxkit import zoo
from onnxkit.quantize import quantize
from onnxkit.quantize.fuse import attention_blocks, fuse_attention
from onnxkit.quantize.inputs import synthetic_inputs
from onnxkit.quantize.latency import measure

BATCHES = (1, 64)
FUSED = "fp32, attention fused"
# model -> (build options, [(quantize options, label)])
CASES = {
    "digits-mlp": ({}, [({"mode": "dynamic"}, "dynamic int8")]),
    "digits-cnn": (
        {},
        [({"mode": "static", "calib": "digits-images"}, "static int8 QDQ"), ({"mode": "dynamic"}, "dynamic int8")],
    ),
    "bert-classifier": ({}, [({"mode": "dynamic"}, "dynamic int8"), ({"mode": "int4"}, "int4 MatMulNBits")]),
    "text-transformer": ({}, [({"mode": "dynamic"}, "dynamic int8"), ({"mode": "fp16"}, "fp16")]),
}


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=32, help="bert-classifier and text-transformer sequence length")
    parser.add_argument("--rounds", type=machine.count, default=3, help="repeat the whole measurement")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per batch size per round")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: ORT's)")
    parser.add_argument("--models", nargs="*", choices=list(CASES), default=list(CASES), help="models to time")
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)

    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'model':<16} {'pass':<22}" + "".join(f"{f'b{b} fp32':>11}{'quant':>11}{'ratio':>17}" for b in BATCHES))
    for name in args.models:
        options, passes = CASES[name]
        model = zoo.build_model(name, **options)
        feeds = {b: synthetic_inputs(model, b, seq_len=args.seq_len) for b in BATCHES}
        models = {"fp32": model.SerializeToString()}
        with tempfile.TemporaryDirectory() as folder:
            fused, counts = fuse_attention(model, Path(folder))
        if counts and counts["Attention"] >= attention_blocks(model):  # the int8 model's fusions (it keeps only
            # complete ones) without its quantization: the fair fp32 baseline
            passes = [({}, FUSED), *passes]
            models[FUSED] = fused.SerializeToString()
        for qopts, label in passes:
            if label != FUSED:
                models[label] = quantize(model, measure_latency=False, **qopts).model.SerializeToString()
        rounds = [
            measure(models, feeds, budget_s=args.budget, min_runs=3, threads=args.threads) for _ in range(args.rounds)
        ]
        for _, label in passes:
            cells = []
            for b in BATCHES:
                fp32 = statistics.median(r["fp32"][b] for r in rounds)
                quant = statistics.median(r[label][b] for r in rounds)
                ratios = [r[label][b] / r["fp32"][b] for r in rounds]
                spread = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                cells.append(f"{_ms(fp32):>11}{_ms(quant):>11}{spread:>17}")
            print(f"{name:<16} {label:<22}" + "".join(cells))
    print(f"load average after: {os.getloadavg()[0]:.2f}  (ratio: median of rounds, min-max in brackets)")


if __name__ == "__main__":
    machine.run(main)
