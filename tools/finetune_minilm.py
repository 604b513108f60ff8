"""Fine-tune all-MiniLM-L6-v2 on bbc-news and tweets-sentiment: full, head-only and LoRA.

Prints test accuracy, trainable parameters and seconds per epoch for each run,
then quantizes the best bbc-news model to dynamic int8 and reports the accuracy
change and the batch-32 speed-up (fp32 vs int8, same threads, same batch).
CPU-heavy: on 2 cores, subsample with --limit and keep --max-length at 128 or less.

    .venv/bin/python tools/finetune_minilm.py --out /tmp/minilm --limit 1500
    .venv/bin/python tools/finetune_minilm.py --datasets bbc-news --modes lora,head
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from onnxkit import runtime, zoo
from onnxkit.data import load_dataset
from onnxkit.data.text import tokenizer_options
from onnxkit.train import fit
from onnxkit.train.lora import LoraAdapter, LoraConfig

LABELS = {"bbc-news": "business,entertainment,politics,sports,tech", "tweets-sentiment": "negative,positive"}
SETTINGS = {  # mode -> fit options (the head is new, so every mode trains it)
    "full": {"lr": 5e-5, "epochs": 3},
    "head": {"lr": 3e-3, "epochs": 4, "train_only": ["classifier.*"]},
    "lora": {"lr": 1e-3, "epochs": 3},
}


def run(name: str, mode: str, args: argparse.Namespace) -> dict:
    labels = LABELS[name]
    base = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2", num_classes=len(labels.split(",")),
                           max_length=args.max_length, labels=labels)
    data = load_dataset(name, limit=args.limit, **tokenizer_options(base))
    options = dict(SETTINGS[mode])
    if mode == "lora":
        options["adapter"] = LoraAdapter(LoraConfig(rank=args.lora_rank, targets=["*attn.*.weight"]))
    out = Path(args.out) / f"{name}-{mode}"
    start = time.perf_counter()
    result = fit(base, data, out, batch_size=args.batch_size, schedule="linear", warmup=0.1, threads=args.threads,
                 quiet=False, monitor="val_accuracy", **options)
    seconds = [r["seconds"] for r in result.history if "seconds" in r]
    epoch_s = float(np.mean(seconds)) if seconds else (time.perf_counter() - start) / max(len(result.history), 1)
    row = {"dataset": name, "mode": mode, "train/val/test": [len(data.train), len(data.validation), len(data.test)],
           "test_accuracy": result.metrics["test"]["accuracy"],
           "trainable_parameters": _training_summary(result.model_path)["trainable_parameters"],
           "seconds_per_epoch": round(epoch_s, 1), "model": str(result.model_path)}
    print(json.dumps(row), flush=True)
    return row | {"data": data}


def _training_summary(path: Path) -> dict:
    import onnx

    meta = zoo.read_metadata(onnx.load(str(path), load_external_data=False))
    return meta["onnxkit.training"]


def quantized(row: dict, args: argparse.Namespace) -> dict:
    from onnxkit.evaluate import evaluate
    from onnxkit.quantize import quantize

    fp32 = row["model"]
    int8 = fp32.replace(".onnx", ".int8.onnx")
    quantize(fp32, int8, mode="dynamic", measure_latency=False)
    data = row["data"]
    acc = {p: evaluate(p, data.test)["accuracy"] for p in (fp32, int8)}
    inputs, _ = next(data.test.batches(32))
    times = {}
    for path in (fp32, int8):
        model = runtime.load(path, threads=args.threads)
        model.predict(inputs)
        t = time.perf_counter()
        for _ in range(5):
            model.predict(inputs)
        times[path] = (time.perf_counter() - t) / 5
    out = {"dataset": row["dataset"], "mode": row["mode"], "fp32_accuracy": acc[fp32], "int8_accuracy": acc[int8],
           "accuracy_change_points": round(100 * (acc[int8] - acc[fp32]), 2),
           "batch32_ms_fp32": round(1000 * times[fp32], 1), "batch32_ms_int8": round(1000 * times[int8], 1),
           "speedup": round(times[fp32] / times[int8], 2), "seq_len": int(inputs["input_ids"].shape[1])}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/minilm-runs")
    parser.add_argument("--datasets", default="bbc-news,tweets-sentiment")
    parser.add_argument("--modes", default="lora,head,full")
    parser.add_argument("--limit", type=int, default=0, help="subsample each dataset to this many examples (0: all)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = [run(name, mode, args) for name in args.datasets.split(",") for mode in args.modes.split(",")]
    for row in rows:
        quantized(row, args)

if __name__ == "__main__":
    main()
