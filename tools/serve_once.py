"""Start `onnxkit serve` on a model, send it one request (of --rows examples), print the answers, stop the server.

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


def examples(model: runtime.Model, args: argparse.Namespace) -> tuple[dict[str, np.ndarray], str, list]:
    """`args.rows` rows of inputs for the model, a note on where they came from, and their true labels."""
    if args.dataset:
        import onnx

        from onnxkit.data import load_dataset

        # a text dataset is tokenized by the tokenizer the model carries
        dataset = load_dataset(args.dataset, model=onnx.load(args.model, load_external_data=False))
        split, names = dataset.split(args.split), dataset.label_names
        arrays = list(split.inputs.values())
        if len(arrays) == 1 and len(model.inputs) == 1:
            values = {model.inputs[0].name: arrays[0]}
        else:
            values = split.inputs
        truth = [names[t] if names else str(t) for t in split.labels[args.index : args.index + args.rows]]
        note = f"{args.dataset} {args.split} examples {args.index}..{args.index + args.rows - 1}"
    elif args.input:
        values, note, truth = read_inputs(args.input, model), f"{args.input} rows from {args.index}", []
    else:
        return example_feeds(model.inputs), "zeros", []
    rows = {name: np.asarray(v)[args.index : args.index + args.rows] for name, v in values.items()}
    return model.prepare(rows), note, truth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="an .onnx file")
    parser.add_argument("--dataset", help="take the example from this onnxkit dataset (e.g. digits-images)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--input", help="or from this file (.npy, .npz, .json, .csv)")
    parser.add_argument("--index", type=int, default=0, help="first example")
    parser.add_argument("--rows", type=int, default=1, help="how many examples to send in the request")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args()
    try:
        model = runtime.load(args.model)
        feeds, note, truth = examples(model, args)
        classify = model.class_names is not None or model.task in ("classification", "binary")
        outputs = [{"name": model.outputs[0].name, "parameters": {"classification": args.top_k}}] if classify else None
        start = time.perf_counter()
        with ServerProcess([args.model]) as server:
            print(f"server ready at {server.url} in {time.perf_counter() - start:.1f} s")
            shapes = ", ".join(f"{name} {list(a.shape)}" for name, a in feeds.items())
            print(f"POST /v2/models/{model.name}/infer  ({shapes}; {note})")
            reply = server.infer(model.name, feeds, **({"outputs": outputs} if outputs else {}))
            for tensor in reply["outputs"]:
                if tensor["datatype"] == "BYTES":  # classification: "score:index:label", k per row
                    k = tensor["shape"][-1]
                    for r in range(len(tensor["data"]) // k):
                        best = [entry.split(":", 2) for entry in tensor["data"][r * k : (r + 1) * k]]
                        answer = ", ".join(f"{p[-1]} (score {float(p[0]):.3f})" for p in best)
                        print(f"answer {r}: {answer}" + (f"   true label {truth[r]}" if truth else ""))
                else:
                    print(f"answer: {tensor['name']} {tensor['shape']} = {json.dumps(tensor['data'][:10])}")
        print(f"server stopped (exit status {server.process.returncode})")
    except OnnxkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return server.process.returncode


if __name__ == "__main__":
    sys.exit(main())
