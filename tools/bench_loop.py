"""Overhead of the training loop: `fit` against the raw backend steps on the same batches.

On the README recipe (40 epochs, batch 128, AdamW at lr 0.01, cosine schedule, 5% warm-up)
for digits-cnn (digits-images) and digits-mlp (digits), each round runs two sides, each in a
fresh process (so `fit` pays its lazy imports, as a command does):

- raw: a session from `open_training` (built the way `fit` builds it, its eval graph summing a
  classifier's validation metrics as fit's does; its calls wrapped by the same timers as the fit
  side's, so both walls carry their cost), then per epoch the batches `fit` draws,
  `session.train_step` + `session.optimizer_step(lr)` with the learning rate of the same schedule
  (timed: "raw steps"), and `session.score_step` over the validation batches, the steps fit's
  validation takes (timed apart: "validation"; what fit does with their sums is the loop's own);
- fit: the whole `fit` call (quiet, test evaluation and curves.svg included), with a callback
  timing the epoch loop from `on_train_begin` to the end of the last epoch (its metrics,
  checkpoint and callbacks included; artifact building, session creation, the end of training
  — curves.svg, the best weights — the test evaluation and the model export fall outside it)
  and the session's train, optimizer and score steps inside it.

Sides alternate which goes first; rounds in which other processes took 5% of the CPUs or more
(/proc/stat, as in tools/step_timing.py) are dropped, unless fewer than 3 would be left. Printed
per model: seconds of each part and the min/median/max over rounds of the per-round ratios
epoch loop / raw steps, epoch loop / (raw steps + validation) (what remains is the loop's own
overhead: metrics, progress, checkpoints, callbacks, batching) and fit / raw steps; then the
same ratios against the steps timed inside the fit run itself, which a busy machine disturbs
less (both sides of each ratio see the same load).

    .venv/bin/python tools/bench_loop.py [--rounds 5] [--models digits-cnn digits-mlp]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
import numpy as np
from step_timing import BUSY, busy_seconds

MODELS = {"digits-cnn": "digits-images", "digits-mlp": "digits"}
RECIPE = dict(epochs=50, batch_size=128, lr=0.01, schedule="cosine", warmup=0.05, label_smoothing=0.1)


def raw_side(name: str, work: Path) -> dict[str, float]:
    """Seconds of the raw backend steps and of the validation eval steps over the recipe's epochs."""
    from onnxkit import zoo
    from onnxkit.data import load_dataset, model_inputs
    from onnxkit.train.losses import get_loss
    from onnxkit.train.problem import open_training
    from onnxkit.train.schedules import Schedule, warmup_steps

    model = zoo.build_model(name)
    data = load_dataset(MODELS[name], model=model)
    loss, inputs = get_loss("cross-entropy"), model_inputs(model)
    train, validation = (data.split(s).feeds_for(inputs) for s in ("train", "validation"))
    classes = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    labels = loss.labels_for(data.train.labels, ("batch", classes))
    train.labels = labels
    size, epochs = RECIPE["batch_size"], RECIPE["epochs"]
    per_epoch = [list(train.batches(size, shuffle=True, seed=e)) for e in range(epochs)]  # fit's seed 0 order
    sums = np.empty(2 * classes + 1)  # each batch's metric sums (see onnxkit.train.validation_sums)
    evals = [(feeds, y.astype(np.int64), sums) for feeds, y in validation.batches(size)]
    total = epochs * len(per_epoch[0])
    schedule = Schedule(RECIPE["schedule"], RECIPE["lr"], total, warmup_steps(RECIPE["warmup"], total))
    session = open_training(model, work / "raw", validation_classes=classes, batch_size=size,
                            label_smoothing=RECIPE["label_smoothing"])
    timed_calls(session, {"train_step": 0.0, "optimizer_step": 0.0, "score_step": 0.0})  # as the fit side's are
    steps = validating = 0.0
    step = 0
    watch = _OtherProcesses()
    for batches in per_epoch:
        start = time.perf_counter()
        for feeds, y in batches:
            session.train_step(feeds, y)
            session.optimizer_step(schedule.lr(step))
            step += 1
        middle = time.perf_counter()
        for feeds, ids, out in evals:
            session.score_step(feeds, ids, out)
        steps += middle - start
        validating += time.perf_counter() - middle
    return {"steps": steps, "validation": validating, "others": watch.share()}


def fit_side(name: str, work: Path) -> dict[str, float]:
    """Seconds of the whole `fit` call, of its epoch loop, and of the backend calls inside that loop."""
    from onnxkit import zoo
    from onnxkit.train import fit
    from onnxkit.train.callbacks import Callback

    class Stopwatch(Callback):
        """Times the epoch loop, and the session's steps within it (wrapping the session's methods)."""

        def __init__(self) -> None:
            self.inside = {"train_step": 0.0, "optimizer_step": 0.0, "eval_step": 0.0, "score_step": 0.0}

        def on_train_begin(self, trainer) -> None:  # type: ignore[no-untyped-def]
            timed_calls(trainer.session, self.inside)
            self.start = time.perf_counter()

        def on_epoch_end(self, trainer, record) -> None:  # type: ignore[no-untyped-def]
            self.seconds = time.perf_counter() - self.start  # after the built-in callbacks' epoch ends

    model, watch, others = zoo.build_model(name), Stopwatch(), _OtherProcesses()
    start = time.perf_counter()
    fit(model, MODELS[name], work / "run", callbacks=[watch], device="cpu", **RECIPE)
    inside = watch.inside
    return {"fit": time.perf_counter() - start, "loop": watch.seconds, "others_fit": others.share(),
            "inside_steps": inside["train_step"] + inside["optimizer_step"],
            "inside_validation": inside["eval_step"] + inside["score_step"]}


def timed_calls(session, inside: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    """Wrap each of the session's methods named in `inside` so that its calls add their seconds there. Both sides
    wrap theirs, so each side's wall time carries the wrappers' cost alike (~1 us a call, 800 calls a fit)."""

    def timed(method, call):  # type: ignore[no-untyped-def]
        def timed_call(*args):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return call(*args)
            finally:
                inside[method] += time.perf_counter() - start

        return timed_call

    for method in inside:
        setattr(session, method, timed(method, getattr(session, method)))


class _OtherProcesses:
    """The share of all the CPUs that other processes take from now until `share()`."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.machine, self.own = busy_seconds()

    def share(self) -> float:
        machine, own = busy_seconds()
        wall = time.perf_counter() - self.start
        return (machine - self.machine - (own - self.own)) / (wall * (os.cpu_count() or 1))


def run_side(side: str, name: str) -> dict[str, float]:
    """One side in a fresh process."""
    done = subprocess.run([sys.executable, __file__, "--side", side, name], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{side} side of {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def spread(values: list[float], digits: int = 3) -> str:
    return "  ".join(f"{v:>7.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def report(name: str, measured: list[dict[str, float]]) -> None:
    quiet = [r for r in measured if not max(r["others"], r["others_fit"]) >= BUSY]
    rounds = quiet if len(quiet) >= 3 else measured
    seconds = {
        "raw steps (train + optimizer)": "steps",
        "raw validation score steps": "validation",
        "fit's epoch loop": "loop",
        "  of it in train + optimizer steps": "inside_steps",
        "  of it in validation score steps": "inside_validation",
        "whole fit call": "fit",
    }
    ratios = {
        "epoch loop / raw steps": lambda r: r["loop"] / r["steps"],
        "epoch loop / (raw steps + validation)": lambda r: r["loop"] / (r["steps"] + r["validation"]),
        "whole fit / raw steps": lambda r: r["fit"] / r["steps"],
        "in one run: epoch loop / its steps": lambda r: r["loop"] / r["inside_steps"],
        "in one run: epoch loop / (steps + validation)":
            lambda r: r["loop"] / (r["inside_steps"] + r["inside_validation"]),
        "in one run: whole fit / its steps": lambda r: r["fit"] / r["inside_steps"],
    }
    if len(quiet) == len(measured):
        note = "all quiet"
    elif rounds is quiet:
        note = f"{len(measured) - len(quiet)} dropped: other processes took >= {BUSY:.0%} of the CPUs"
    else:
        note = f"only {len(quiet)} quiet, so all kept: DISTURBED by other processes, run again"
    others = statistics.median(max(r["others"], r["others_fit"]) for r in rounds)
    print(f"\n{name}: {len(rounds)} of {len(measured)} rounds ({note}); other processes took {others:.0%} of the CPUs")
    print(f"{' ' * 48}min   median      max")
    for label, key in seconds.items():
        print(f"  {label + ', s':<46}{spread([r[key] for r in rounds], 2)}")
    for label, ratio in ratios.items():
        print(f"  {label:<46}{spread([ratio(r) for r in rounds])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=5, help="rounds, 3 or more (default: 5)")
    parser.add_argument("--side", choices=("raw", "fit"), help=argparse.SUPPRESS)  # one side, in a worker process
    parser.add_argument("model", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        with tempfile.TemporaryDirectory() as tmp:
            side = raw_side if args.side == "raw" else fit_side
            print(json.dumps(side(args.model, Path(tmp))))
        return
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    print(machine.machine_line(), flush=True)
    # an installed wheel comes with its modules compiled (pip compiles them); so does this checkout
    # here, lest the fit side pay for compiling the modules it imports lazily
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "onnxkit", quiet=1)
    print("recipe: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in RECIPE.items()))
    for name in args.models:
        rounds = []
        for r in range(args.rounds):
            sides = ("raw", "fit") if r % 2 == 0 else ("fit", "raw")
            results = {side: run_side(side, name) for side in sides}
            rounds.append({**results["raw"], **results["fit"]})
        report(name, rounds)


if __name__ == "__main__":
    machine.run(main)
