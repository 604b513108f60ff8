"""GPU check: the onnx training backend and the runtime on the CUDA execution provider, against
the CPU, on digits-cnn, a ResNet stem (a 7 x 7 stride-2 Conv, BatchNorm in training mode, ReLU, the
overlapping 3 x 3 stride-2 max pool whose gradient scatter-adds at its Indices, a strided 3 x 3 Conv)
and the zoo's bert-classifier (all-MiniLM-L6-v2's shape: 6 layers, hidden 384, 12 heads; random
weights, so the check needs no weights package).

It prints one table:
- logits: the inference model on CUDA vs CPU (max |difference| / max |logit|);
- gradients: one training step's gradients, CUDA vs CPU (relative norm of the difference, over
  all parameters and worst per parameter among those with a gradient above 1e-3 of the largest;
  a gradient that is zero in exact arithmetic, such as attention's key bias, has only noise);
- losses: 20 training steps (dropout off) on both, worst relative difference;
- CPU nodes: nodes ONNX Runtime placed on the CPU in the CUDA training, optimizer and eval
  graphs, from a profiled run, by op type (shape arithmetic is placed there on purpose);
- top ops: the training graph's op types with the most kernel time (ms per step);
- speed: ms per training step on CUDA and CPU; inference latency at batch 1 and 64 on CUDA.

Run it where onnxruntime-gpu is installed in place of onnxruntime
(`pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]>=1.31'`):

    python tools/gpu_check.py [--device cuda:0] [--steps 20]

On a machine that cannot download, install the onnxruntime-gpu wheel brought along
(`pip install --no-deps --target DIR onnxruntime_gpu-*.whl`, then PYTHONPATH=DIR): the CUDA 13
and cuDNN libraries it loads come from the nvidia-*-cu13 pip packages (`onnxruntime.preload_dlls`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxkit import nn, runtime, zoo  # noqa: E402
from onnxkit.errors import OnnxkitError  # noqa: E402
from onnxkit.runtime.session import ort  # noqa: E402
from onnxkit.train.backends import get_backend  # noqa: E402
from onnxkit.train.problem import open_training  # noqa: E402


def cases(batch: int, rng: np.random.Generator) -> dict[str, tuple]:
    """name -> (model, feeds, labels) for one training batch."""
    cnn = zoo.build_model("digits-cnn")
    images = rng.normal(size=(batch, 1, 8, 8)).astype(np.float32)
    bert = zoo.build_model("bert-classifier", num_classes=5)  # MiniLM's shape, random weights
    ids = rng.integers(1000, 20000, (16, 128)).astype(np.int64)
    text = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    text = {k: v for k, v in text.items() if k in {i.name for i in bert.graph.input}}
    stem = nn.build(nn.Sequential([nn.Conv2d(3, 16, 7, stride=2, padding=3), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.MaxPool2d(3, stride=2, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                                   nn.ReLU(), nn.GlobalAvgPool2d(), nn.Flatten(), nn.Linear(32, 10)]),
                    {"x": nn.Input(["batch", 3, 64, 64])}, output_names=["logits"])
    return {
        "digits-cnn": (cnn, {cnn.graph.input[0].name: images}, rng.integers(0, 10, batch)),
        "resnet-stem": (stem, {"x": rng.normal(size=(16, 3, 64, 64)).astype(np.float32)}, rng.integers(0, 10, 16)),
        "minilm-classifier": (bert, text, rng.integers(0, 5, 16)),
    }


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def time_steps(session, feeds, labels, steps: int) -> float:
    session.train_step(feeds, labels), session.optimizer_step(1e-4)  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        session.train_step(feeds, labels)
        session.optimizer_step(1e-4)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def profile(path: Path, device_id: int, feeds: dict[str, np.ndarray], runs: int = 3) -> tuple[Counter, Counter]:
    """From profiled CUDA runs of `path`: op types of the nodes placed on the CPU, and the
    kernel milliseconds per run of each op type."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=[("CUDAExecutionProvider", {"device_id": device_id}),
                                                                   "CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
    events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    placed = {e["name"]: (e["args"].get("provider"), e["args"].get("op_name")) for e in kernels}
    times: Counter = Counter()
    for e in kernels:
        times[e["args"].get("op_name")] += e["dur"] / 1e3 / runs
    return Counter(op for provider, op in placed.values() if provider == "CPUExecutionProvider"), times


def graph_feeds(session, feeds, labels) -> dict[str, np.ndarray]:
    """Every input of the training, optimizer and eval graphs, from a CPU session's state."""
    values = dict(feeds, labels=labels, lr=np.asarray(1e-4, np.float32), step=np.asarray(1, np.int64))
    values.update(session.parameters())
    for state in (session._state[0], session._buffer_set[0]):
        values.update({name: v.numpy() for name, v in state.items()})
    values["onnxkit.params.grad"] = np.zeros_like(values["onnxkit.params"])
    if session._dropout:
        values["onnxkit.dropout.starts"] = session._dropout.starts(0, 0)
        values.update({f"onnxkit.dropout.table.{k}": t for k, t in enumerate(session._dropout.tables)})
    return values


def check(name: str, model, feeds, labels, device: str, steps: int, work: Path) -> dict:
    index = int(device.partition(":")[2] or 0)
    row: dict = {"model": name}
    ours, theirs = (open_training(model, work / f"{name}-{role}", dropout=False, device=where, optimizer="adamw")
                    for role, where in (("device", device), ("cpu", "cpu")))
    sessions = {"device": ours, "cpu": theirs}
    row["logits"] = relative(ours.eval_step(feeds), theirs.eval_step(feeds))
    for s in (ours, theirs):
        s.train_step(feeds, labels)
    g_gpu, g_cpu = ours.gradients(), theirs.gradients()
    row["gradients"] = relative(ours.flat_gradient(), theirs.flat_gradient())
    largest = max(np.linalg.norm(g) for g in g_cpu.values())
    row["worst_param"] = max(relative(g_gpu[k], g) for k, g in g_cpu.items() if np.linalg.norm(g) > 1e-3 * largest)
    ours.optimizer_step(1e-4), theirs.optimizer_step(1e-4)
    losses = {k: [] for k in sessions}
    for _ in range(steps):
        for k, s in sessions.items():
            losses[k].append(s.train_step(feeds, labels))
            s.optimizer_step(1e-4)
    row["losses"] = max(abs(a - b) / abs(b) for a, b in zip(losses["device"], losses["cpu"], strict=True))
    values = graph_feeds(theirs, feeds, labels)
    placed: Counter = Counter()
    for graph in ("training", "optimizer", "eval"):
        cpu, times = profile(work / f"{name}-device" / f"{graph}.onnx", index, values)
        placed += cpu
        if graph == "training":
            row["top_ops"] = ", ".join(f"{op} {ms:.2f}" for op, ms in times.most_common(6))
    row["cpu_nodes"] = ", ".join(f"{op}x{n}" for op, n in placed.most_common()) or "none"
    row["step_ms"] = time_steps(ours, feeds, labels, steps)
    row["cpu_step_ms"] = time_steps(theirs, feeds, labels, max(3, steps // 4))
    inference = runtime.load(model.SerializeToString(), device=device)
    for batch in (1, 64):
        rows = {k: np.repeat(v[:1], batch, axis=0) for k, v in feeds.items()}
        inference.run(rows)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            inference.run(rows)
            times.append(time.perf_counter() - start)
        row[f"infer_b{batch}_ms"] = statistics.median(times) * 1e3
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}")
    try:  # no usable GPU: one line saying why and what to install, not a traceback from the first case
        get_backend("onnx").resolve_device(args.device)
    except OnnxkitError as e:
        raise SystemExit(f"gpu_check: {e}") from None
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, feeds, labels) in cases(64, rng).items():
            rows.append(check(name, model, feeds, labels, args.device, args.steps, Path(tmp)))
    columns = ["model", "logits", "gradients", "worst_param", "losses", "step_ms", "cpu_step_ms", "infer_b1_ms",
               "infer_b64_ms", "cpu_nodes", "top_ops"]
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{row[c]:.2e}" if c in ("logits", "gradients", "worst_param", "losses") else
                         f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in columns))


if __name__ == "__main__":
    main()
