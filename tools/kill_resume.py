"""kill -9 at random moments, then --resume until done: are the weights those of an uninterrupted run?

Trains a zoo model with `onnxkit train` (the digits-cnn recipe, for `--epochs`) once straight through,
then `--trials` times: starts the same command, kills it with SIGKILL at a random moment (uniform
between 0 and the straight run's duration after it started; up to `--kills` times a trial, each
resume a new target), resumes with `onnxkit train --resume RUN` until a process exits 0, and
compares every initializer of model.onnx with the straight run's, byte for byte. Prints per trial
the kills that landed and from which step each resume went on (0: the run started again, killed
before its first checkpoint); exits 1 when any trial's weights differ.

    .venv/bin/python tools/kill_resume.py [--trials 10] [--kills 4] [--epochs 200] [--model digits-cnn]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
import onnx

RECIPE = ["--batch-size", "128", "--lr", "0.01", "--schedule", "cosine", "--warmup", "0.05"]
DATA = {"digits-cnn": "digits-images", "digits-mlp": "digits", "iris-mlp": "iris"}


def onnxkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "onnxkit", *args]


def onnxkit_ok(*args: str) -> None:
    """Run onnxkit; a failure ends the tool with its command and onnxkit's own error line, not a traceback."""
    done = subprocess.run(onnxkit(*args), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"onnxkit {' '.join(args)} failed:\n{done.stderr.strip()}")


def weights(path: Path) -> dict[str, bytes]:
    return {t.name: t.raw_data for t in onnx.load(str(path)).graph.initializer}


def completed(run: Path) -> bool:
    """The run marked itself completed (run.json, written last, after model.onnx): a kill can land after that and
    before the process exits, and `--resume` then refuses the finished run."""
    try:
        info = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("status") == "completed" and (run / "model.onnx").is_file()


def killed_run(command: list[str], run: Path, kills: int, window: float, rng: random.Random) -> list[int]:
    """Run `command`, SIGKILL it at a random moment up to `kills` times (resuming after each), then resume to the
    end; the step each resume went on from, one per kill that landed before its process finished."""
    resumed_from, start = [], command
    for _ in range(kills):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = process.communicate(timeout=rng.uniform(0, window))
            if process.returncode:
                raise SystemExit(f"{' '.join(command)} failed:\n{err}")
            return resumed_from  # finished before the kill
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            if completed(run):
                return resumed_from  # killed after the run had finished: nothing to resume
        loop_state = run / "checkpoints" / "last.json"
        resumed_from.append(json.loads(loop_state.read_text())["step"] if loop_state.is_file() else 0)
        # killed before run.json was written (still starting up): nothing to resume, so the same command again,
        # as onnxkit's own message for such a folder says
        command = onnxkit("train", "--resume", str(run), "--quiet") if (run / "run.json").is_file() else start
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"resume failed after {len(resumed_from)} kills:\n{done.stderr}")
    return resumed_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits-cnn", choices=list(DATA))
    parser.add_argument("--trials", type=machine.count, default=10)
    parser.add_argument("--kills", type=int, default=4, help="most kills a trial (default: 4)")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the recipe (default: 200, ~1.5 s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = work / "model.onnx"
        onnxkit_ok("build", args.model, "-o", str(model))
        train = ["train", str(model), "--data", DATA[args.model], "--epochs", str(args.epochs), *RECIPE, "--quiet"]
        start = time.perf_counter()
        onnxkit_ok(*train, "-o", str(work / "straight"))
        window = time.perf_counter() - start
        print(f"{args.model}, {args.epochs} epochs: straight run {window:.2f} s, the window for kills")
        want = weights(work / "straight" / "model.onnx")
        failed = 0
        for trial in range(args.trials):
            run = work / f"run{trial}"
            resumed_from = killed_run(onnxkit(*train, "-o", str(run)), run, args.kills, window, rng)
            same = weights(run / "model.onnx") == want
            failed += not same
            print(f"trial {trial + 1}: {len(resumed_from)} kill(s), resumed from steps {resumed_from}, weights "
                  f"{'identical' if same else 'DIFFERENT'}", flush=True)
        print(f"{args.trials - failed} of {args.trials} trials ended with the straight run's weights")
        raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
