"""Ray batch inference against in-process predict: rows/s on bert-classifier (pretrained
all-MiniLM-L6-v2, 6 layers, hidden 384) over tweets, batch 64.

Each round runs `Model.predict_text` in this process with 2 threads and `predict_on_ray`
with 2 actors x 1 thread on a local cluster started once beforehand (so the actors' start
is counted, the cluster's is not), alternating which goes first, and checks the two results
are equal. Printed: rows/s
min / median / max of each side and of the ratio Ray / in-process.

    .venv/bin/python tools/bench_ray_predict.py [--rounds 3] [--rows 1024]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import machine
import numpy as np

from onnxkit import runtime
from onnxkit.data.text import read_tweets_sentiment
from onnxkit.files import save_model
from onnxkit.runtime.batch import predict_on_ray
from onnxkit.zoo import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=machine.count, default=3)
    parser.add_argument("--rows", type=machine.count, default=1024)
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as folder:  # its 90 MB model goes with it
        compare(Path(folder), args.rounds, args.rows)


def compare(folder: Path, rounds: int, rows: int) -> None:
    """In-process against Ray over `rows` tweets, `rounds` alternating rounds, printed (files under `folder`)."""
    try:
        import ray
    except ImportError:
        raise SystemExit("this benchmark needs Ray Data: pip install -e '.[ray]' (make venv installs it)") from None
    model = save_model(build_model("bert-classifier", pretrained="all-MiniLM-L6-v2"), folder / "bert.onnx")
    texts = [" ".join(t.split()) for t in read_tweets_sentiment()[0]]  # one line each
    texts = [t for t in texts if t][:rows]
    (folder / "texts.txt").write_text("\n".join(texts) + "\n")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    local, distributed = [], []
    loaded = runtime.load(model, threads=2, batch_size=64)
    sides = {
        "local": (local, lambda: loaded.predict_text(texts)),
        "ray": (distributed, lambda: predict_on_ray(model, folder / "texts.txt", workers=2, threads=1, batch_size=64)),
    }
    for r in range(rounds):
        results = {}
        for key in list(sides) if r % 2 == 0 else list(sides)[::-1]:  # alternate which side goes first
            rates, call = sides[key]
            started = time.perf_counter()
            results[key] = call()
            rates.append(len(texts) / (time.perf_counter() - started))
        assert np.array_equal(results["local"].scores, results["ray"].scores)
    ray.shutdown()
    ratios = [b / a for a, b in zip(local, distributed, strict=True)]
    print(f"bert-classifier, {len(texts)} texts, batch 64, rows/s min / median / max over {rounds} rounds:")
    for name, values in (("in-process, 2 threads", local), ("Ray, 2 actors x 1 thread", distributed),
                         ("Ray / in-process", ratios)):
        print(f"  {name:26} {min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}")


if __name__ == "__main__":
    machine.run(main)
