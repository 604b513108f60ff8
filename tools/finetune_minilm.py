"""Fine-tune all-MiniLM-L6-v2 on bbc-news and tweets-sentiment: full, head-only and LoRA.

Prints test accuracy, trainable parameters and seconds per epoch for each run,
then quantizes each dataset's most accurate model to dynamic int8 and reports the
accuracy change and the batch-32 speed-up (fp32 vs int8, same threads, same batch;
7 alternating rounds: the ratio of the medians, and min/median/max of the per-round ratio).
Every row is also appended to OUT/results.jsonl.
CPU-heavy: on 2 cores, subsample with --limit and keep --max-length at 128 or less.

    .venv/bin/python tools/finetune_minilm.py --out /tmp/minilm
    .venv/bin/python tools/finetune_minilm.py --datasets bbc-news --modes lora,head --limit bbc-news=600
    .venv/bin/python tools/finetune_minilm.py --modes head --head-hidden 256 --limit 0 --seeds 5 \
        --max-length bbc-news=512,tweets-sentiment=64 --no-int8    # head-only: the README's rows
    .venv-ort/bin/python tools/finetune_minilm.py --backend ort-training --datasets bbc-news --modes full

`--backend` picks the training backend (onnx, the default, or ort-training in .venv-ort).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import machine
import numpy as np

from onnxkit import runtime, zoo
from onnxkit.data import load_dataset
from onnxkit.metadata import read_metadata
from onnxkit.metadata_keys import TRAINING_KEY
from onnxkit.train import fit
from onnxkit.train.backends import backend_names, default_backend, get_backend
from onnxkit.train.lora import LoraAdapter, LoraConfig

LABELS = {"bbc-news": "business,entertainment,politics,sports,tech", "tweets-sentiment": "negative,positive"}
SETTINGS = {  # mode -> fit options (the head is new, so every mode trains it)
    "full": {"lr": 5e-5, "epochs": 2},
    "head": {"lr": 1e-3, "epochs": 30, "train_only": ["classifier.*"]},  # on cached features: epochs are cheap
    "lora": {"lr": 2e-3, "epochs": 2},
}


def per_key(text: str, keys, default: float, kind=int) -> dict:  # type: ignore[no-untyped-def]
    """`bbc-news=128,tweets-sentiment=64` (or one value for all `keys`) as {key: value}; unnamed keys get `default`."""
    if not text or "=" not in text:
        return dict.fromkeys(keys, kind(text) if text else default)
    values = dict.fromkeys(keys, default)
    values.update((k.strip(), kind(v)) for k, v in (part.split("=") for part in text.split(",")))
    return values


def prepare(name: str, args: argparse.Namespace) -> tuple:
    """The pretrained classifier for `name` and the dataset, tokenized with the model's tokenizer."""
    labels = LABELS[name]
    base = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2", num_classes=len(labels.split(",")),
                           max_length=args.max_length[name], labels=labels, head_hidden=args.head_hidden)
    return base, load_dataset(name, limit=args.limit[name], model=base)


def run(name: str, mode: str, base, data, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    options = dict(SETTINGS[mode], lr=args.lr[mode], epochs=args.epochs[mode])
    if mode == "lora":
        options["adapter"] = LoraAdapter(LoraConfig(rank=args.lora_rank, targets=["*attn.*.weight"]))
    out = Path(args.out) / f"{name}-{mode}"
    start = time.perf_counter()
    result = fit(base, data, out, batch_size=args.batch_size, schedule="linear", warmup=0.1, threads=args.threads,
                 backend=args.backend, quiet=False, monitor="val_accuracy", **options)
    seconds = [r["seconds"] for r in result.history if "seconds" in r]
    epoch_s = float(np.mean(seconds)) if seconds else (time.perf_counter() - start) / max(len(result.history), 1)
    row = {"dataset": name, "mode": mode, "train/val/test": [len(data.train), len(data.validation), len(data.test)],
           "test_accuracy": result.metrics["test"]["accuracy"],
           "trainable_parameters": _training_summary(result.model_path)["trainable_parameters"],
           "seconds_per_epoch": round(epoch_s, 1), "epochs": len(seconds), "max_length": args.max_length[name],
           "model": str(result.model_path)}
    cached = json.loads((result.run_dir / "run.json").read_text()).get("cached_features")
    if cached:  # head-only: the frozen encoder ran once, before the epochs
        row["feature_cache_s"] = cached["seconds"]
    report(row, args)
    return row


def head_seeds(name: str, base, data, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    """Head-only test accuracy over `--seeds` training seeds (shuffling, head dropout): the frozen
    encoder runs once for all of them, then each seed trains the head on the cached features."""
    from onnxkit.data import Dataset
    from onnxkit.graph_walks import value_types
    from onnxkit.train.frozen_features import cut, features

    head = [t.name for t in base.graph.initializer if t.name.startswith("classifier.")]
    split = cut(base, "logits", head, value_types(base), sum(len(data.split(k)) for k in ("train", "val", "test")))
    run = get_backend(args.backend).inference(split.prefix, threads=args.threads)
    arrays = {k: features(split.prefix, data.split(k), run, 64) for k in ("train", "validation", "test")}
    cached = Dataset(name, arrays["train"], arrays["validation"], arrays["test"], data.label_names)
    scores = []
    for seed in range(args.seeds):
        result = fit(split.head, cached, Path(args.out) / f"{name}-head-seed{seed}", batch_size=args.batch_size,
                     schedule="linear", warmup=0.1, threads=args.threads, backend=args.backend,
                     monitor="val_accuracy", seed=seed,
                     **dict(SETTINGS["head"], lr=args.lr["head"], epochs=args.epochs["head"]))
        scores.append((result.metrics["validation"]["accuracy"], result.metrics["test"]["accuracy"]))
    val, test = np.array(scores).T
    row = {"dataset": name, "mode": "head", "seeds": args.seeds, "max_length": args.max_length[name],
           "val_accuracy_mean": float(val.mean()), "test_accuracy_mean": float(test.mean()),
           "test_accuracy_min": float(test.min()), "test_accuracy_max": float(test.max())}
    report(row, args)
    return row


def _training_summary(path: Path) -> dict:
    import onnx

    meta = read_metadata(onnx.load(str(path), load_external_data=False))
    return meta[TRAINING_KEY]


def report(row: dict, args: argparse.Namespace) -> None:
    print(json.dumps(row), flush=True)
    with (Path(args.out) / "results.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def quantized(row: dict, data, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    from onnxkit.evaluate import evaluate
    from onnxkit.quantize import quantize

    fp32 = row["model"]
    int8 = fp32.replace(".onnx", ".int8.onnx")
    quantize(fp32, int8, mode="dynamic", measure_latency=False)
    acc = {p: evaluate(p, data.test)["accuracy"] for p in (fp32, int8)}
    inputs, _ = next(data.test.batches(32))
    models = {p: runtime.load(p, threads=args.threads) for p in (fp32, int8)}
    times: dict[str, list[float]] = {p: [] for p in models}
    for r in range(8):  # alternate the two models (and which goes first) so other processes' load hits both alike
        for path, model in list(models.items())[:: 1 if r % 2 == 0 else -1]:
            t = time.perf_counter()
            model.predict(inputs)
            times[path].append(time.perf_counter() - t)
    pairs = [f / i for f, i in zip(times[fp32][1:], times[int8][1:], strict=True)]  # per round, after the warm-up
    times = {p: float(np.median(v[1:])) for p, v in times.items()}  # the first call warms up
    out = {"dataset": row["dataset"], "mode": row["mode"], "fp32_accuracy": acc[fp32], "int8_accuracy": acc[int8],
           "accuracy_change_points": round(100 * (acc[int8] - acc[fp32]), 2),
           "batch32_ms_fp32": round(1000 * times[fp32], 1), "batch32_ms_int8": round(1000 * times[int8], 1),
           "speedup": round(times[fp32] / times[int8], 2),
           "speedup_rounds_min_median_max": [round(float(f(pairs)), 2) for f in (np.min, np.median, np.max)],
           "seq_len": int(inputs["input_ids"].shape[1]),
           "threads": args.threads}
    report(out, args)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/minilm-runs")
    parser.add_argument("--datasets", default="bbc-news,tweets-sentiment")
    parser.add_argument("--modes", default="lora,head,full")
    parser.add_argument("--limit", default="tweets-sentiment=6000",
                        help="examples to keep per dataset, e.g. tweets-sentiment=6000 (0: all)")
    parser.add_argument("--max-length", default="bbc-news=128,tweets-sentiment=64", help="tokens, per dataset")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", default="", help="per mode, e.g. head=2e-2 (default: SETTINGS)")
    parser.add_argument("--epochs", default="", help="per mode, e.g. head=8 (default: SETTINGS)")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--head-hidden", type=int, default=0, help="0: a Linear head; N: an MLP head N wide")
    parser.add_argument("--seeds", type=int, default=1, help="head only: train N seeds on one encoder pass")
    parser.add_argument("--no-int8", action="store_true", help="skip quantizing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", choices=backend_names(), help=f"training backend (default: {default_backend()})")
    args = parser.parse_args()
    for option, given, known in (("--datasets", args.datasets, LABELS), ("--modes", args.modes, SETTINGS)):
        unknown = sorted(set(given.split(",")) - set(known))
        if unknown:
            parser.error(f"{option}: no {', '.join(unknown)}; choose from {', '.join(known)}")
    args.limit, args.max_length = per_key(args.limit, LABELS, 0), per_key(args.max_length, LABELS, 128)
    args.lr = {m: v or SETTINGS[m]["lr"] for m, v in per_key(args.lr, SETTINGS, 0, float).items()}
    args.epochs = {m: v or SETTINGS[m]["epochs"] for m, v in per_key(args.epochs, SETTINGS, 0).items()}
    print(machine.machine_line(), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name in args.datasets.split(","):
        base, data = prepare(name, args)
        modes = args.modes.split(",")
        if args.seeds > 1 and "head" in modes:
            head_seeds(name, base, data, args)
            modes.remove("head")
        rows = [run(name, mode, base, data, args) for mode in modes]
        if rows and not args.no_int8:
            quantized(max(rows, key=lambda r: r["test_accuracy"]), data, args)


if __name__ == "__main__":
    machine.run(main)
