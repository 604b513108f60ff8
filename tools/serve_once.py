"""Start `onnxkit serve` on a model, send it one request, print the answer, stop the server.

For demos and smoke tests: the server listens on a free 127.0.0.1 port, readiness
is polled (no blind sleeps), and the server is stopped with SIGTERM; the exit
status is non-zero if any step fails.

    python tools/serve_once.py run/model.onnx --dataset digits-images
    python tools/serve_once.py model.onnx --input rows.npy --top-k 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from onnxkit import runtime
from onnxkit.errors import OnnxkitError
from onnxkit.runtime.datafiles import read_inputs
from onnxkit.runtime.signature import example_feeds
from onnxkit.serve.launch import ServerProcess


def one_example(model: runtime.Model, args: argparse.Namespace) -> tuple[dict[str, np.ndarray], str]:
    """One row of inputs for the model, and a note on where it came from."""
    if args.dataset:
        from onnxkit.data import load_dataset

        split = load_dataset(args.dataset).split(args.split)
        arrays = list(split.inputs.values())
        if len(arrays) == 1 and len(model.inputs) == 1:
            values = {model.inputs[0].name: arrays[0]}
        else:
            values = split.inputs
        note = f"{args.dataset} {args.split} example {args.index}, true label {split.labels[args.index]}"
    elif args.input:
        values, note = read_inputs(args.input, model), f"{args.input} row {args.index}"
    else:
        return example_feeds(model.inputs), "zeros"
    row = {name: np.asarray(v)[args.index : args.index + 1] for name, v in values.items()}
    return model.prepare(row), note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="an .onnx file")
    parser.add_argument("--dataset", help="take the example from this onnxkit dataset (e.g. digits-images)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--input", help="or from this file (.npy, .npz, .json, .csv)")
    parser.add_argument("--index", type=int, default=0, help="which example")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args()
    try:
        model = runtime.load(args.model)
        feeds, note = one_example(model, args)
        classify = model.class_names is not None or model.task in ("classification", "binary")
        outputs = [{"name": model.outputs[0].name, "parameters": {"classification": args.top_k}}] if classify else None
        start = time.perf_counter()
        with ServerProcess([args.model]) as server:
            print(f"server ready at {server.url} in {time.perf_counter() - start:.1f} s")
            shapes = ", ".join(f"{name} {list(a.shape)}" for name, a in feeds.items())
            print(f"POST /v2/models/{model.name}/infer  ({shapes}; {note})")
            reply = server.infer(model.name, feeds, **({"outputs": outputs} if outputs else {}))
            for tensor in reply["outputs"]:
                if tensor["datatype"] == "BYTES":  # classification: "score:index:label"
                    best = [entry.split(":", 2) for entry in tensor["data"]]
                    print("answer: " + ", ".join(f"{p[-1]} (score {float(p[0]):.3f})" for p in best))
                else:
                    print(f"answer: {tensor['name']} {tensor['shape']} = {json.dumps(tensor['data'][:10])}")
        print(f"server stopped (exit status {server.process.returncode})")
    except OnnxkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return server.process.returncode


if __name__ == "__main__":
    sys.exit(main())
