"""Build a BERT-base-sized model (12 layers, hidden 768, ~110M parameters) and report time and memory.

Each measurement runs in a fresh subprocess so peak RSS belongs to that build
alone. The baseline, side by side, is the floor any builder must pay: turning
the same weight arrays into ONNX initializers with onnx.numpy_helper. Rounds
alternate which side runs first; printed: each side's median seconds and peak
extra memory, and the min/median/max over rounds of the per-round ratios.

    python tools/bench_build.py [--rounds 3] [--no-check]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import machine

BERT_BASE = {"hidden": 768, "heads": 12, "ff_dim": 3072, "num_layers": 12}

CHILD = r"""
import json, resource, sys, time
import numpy as np
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
from onnxkit import zoo
from onnx import numpy_helper
mode, check = sys.argv[1], sys.argv[2] == "1"
opts = json.loads(sys.argv[3])
if mode == "baseline":
    import onnxkit.nn as nn
    nn.manual_seed(0)
    spec = __import__("importlib").import_module  # noqa
    rng = np.random.default_rng(0)
    # the same arrays the recipe creates, made first, then converted
    from onnxkit.zoo import _load
    _, recipe_mod = _load("bert-classifier")
    module = recipe_mod.recipe(**opts).module
    before = rss_mb()
    t = time.perf_counter()
    inits = [numpy_helper.from_array(p.value, n) for n, p in module.named_arrays()]
    elapsed = time.perf_counter() - t
    params = sum(p.value.nbytes for _, p in module.named_arrays())
else:
    from onnxkit.zoo import _load
    _, recipe_mod = _load("bert-classifier")
    recipe = recipe_mod.recipe(**opts)
    before = rss_mb()
    t = time.perf_counter()
    from onnxkit import nn
    model = nn.build(recipe.module, recipe.inputs, output_names=["logits"], check=check)
    elapsed = time.perf_counter() - t
    params = sum(p.value.nbytes for _, p in recipe.module.named_arrays())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "peak_extra_mb": peak - before, "param_mb": params / 2**20}))
"""


def run(mode: str, check: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, "1" if check else "0", json.dumps(BERT_BASE)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    return f"min {min(values):.2f}  median {statistics.median(values):.2f}  max {max(values):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=machine.count, default=3, help="rounds, alternating which side runs first")
    ap.add_argument("--no-check", action="store_true", help="skip the full ONNX checker inside build()")
    args = ap.parse_args()
    print(machine.machine_line(), flush=True)
    sides = {"baseline": ("baseline", False), "build": ("build", not args.no_check)}
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for key in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            runs[key].append(run(*sides[key]))
    base = {k: statistics.median(r[k] for r in runs["baseline"]) for k in runs["baseline"][0]}
    ours = {k: statistics.median(r[k] for r in runs["build"]) for k in runs["build"][0]}
    print(f"BERT-base-sized bert-classifier: {ours['param_mb'] / 4 * 2**20 / 1e6:.1f}M parameters, "
          f"{ours['param_mb']:.0f} MiB of weights; medians of {args.rounds} rounds")
    print(f"{'':<32}{'seconds':>10}{'peak extra MiB':>16}{'× param bytes':>15}")
    for name, r in (("baseline: numpy_helper.from_array", base), ("onnxkit nn.build()", ours)):
        print(f"{name:<32}{r['seconds']:>10.2f}{r['peak_extra_mb']:>16.0f}{r['peak_extra_mb'] / r['param_mb']:>15.2f}")
    pairs = list(zip(runs["build"], runs["baseline"], strict=True))
    print(f"ratio build/baseline, time:        {spread([a['seconds'] / b['seconds'] for a, b in pairs])}")
    print(f"ratio build/baseline, peak memory: "
          f"{spread([a['peak_extra_mb'] / max(b['peak_extra_mb'], 1) for a, b in pairs])}")
    print("targets: build < 5 s, peak extra memory < 3× parameter bytes")


if __name__ == "__main__":
    machine.run(main)
