"""Fine-tuning step time of onnxkit's backends against PyTorch on the pretrained MiniLM classifier.

Every contender starts from the same weights (all-MiniLM-L6-v2 in the zoo's bert-classifier,
read back from its ONNX file), trains every parameter on the same batches (bbc-news training
split, tokenized by the model's own tokenizer, `--max-length` tokens), with the same thread
count and AdamW with torch's defaults at a fine-tuning learning rate (`--lr`, 5e-5; PyTorch:
`torch.optim.AdamW(fused=True)`, one inter-op thread). A step is forward + backward + optimizer
update at batch 16 x 128 tokens. Rounds alternate between the contenders (see
tools/step_timing.py); the tool prints each one's median ms/step, the min/median/max over rounds
of each backend / PyTorch (and onnx / ort-training when both run), and the achieved GFLOP/s of
each step (the forward MatMul/Gemm FLOPs counted from the ONNX graph at the batch's static
shape, training = 3x forward) against ONNX Runtime's fp32 MatMul peak measured in the same run
(a plain InferenceSession on a `--peak-size` cube MatMul, same threads).

    PYTHONPATH=/tmp/torchlib .venv/bin/python tools/bench_finetune.py [--check] [--rounds 5] [--steps 4]
    PYTHONPATH=/tmp/torchlib .venv-ort/bin/python tools/bench_finetune.py --backends onnx ort-training

`--check` first trains 20 steps (`--check-steps`) on every contender with dropout off and stops
unless the losses agree with PyTorch's within 1e-3 (relative). `--no-dropout` times with dropout
off everywhere (PyTorch's dropout alone is over a third of its step here). `--profile [NODES]` adds
per-op kernel times of the onnx backend's training and optimizer graphs and their NODES slowest nodes
(12; 3000 lists every one, with its output shape).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import machine
import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference
from step_timing import (
    add_ab_option,
    backend_contender,
    check_same_computation,
    import_torch,
    print_summary,
    profile_onnx_backend,
    summarise,
    time_rounds,
    torch_contender,
    variant_contender,
)

from onnxkit import zoo
from onnxkit.data import load_dataset
from onnxkit.runtime.session import create_session, ort, session_options
from onnxkit.train.backends import backend_names

HEADS = 12  # all-MiniLM-L6-v2
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def torch_bert(model: onnx.ModelProto, dropout: float):  # type: ignore[no-untyped-def]
    """The bert-classifier graph written in PyTorch over the ONNX model's weights ([in, out] linears);
    called on an (input_ids, attention_mask, token_type_ids) tuple."""
    import torch
    from torch.nn import functional as F  # noqa: N812

    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    (eps,) = {
        a.f for n in model.graph.node if n.op_type == "LayerNormalization" for a in n.attribute if a.name == "epsilon"
    }
    layers = 1 + max(int(n.split(".")[1]) for n in weights if n.startswith("encoder."))

    class Bert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.ParameterDict(
                {k.replace(".", "__"): torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in weights.items()}
            )

        def w(self, name: str) -> torch.Tensor:
            return self.p[name.replace(".", "__")]

        def linear(self, x: torch.Tensor, name: str) -> torch.Tensor:  # nn.Linear's kernel (one addmm)
            return F.linear(x, self.w(f"{name}.weight").t(), self.w(f"{name}.bias"))

        def norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
            return F.layer_norm(x, x.shape[-1:], self.w(f"{name}.weight"), self.w(f"{name}.bias"), eps)

        def drop(self, x: torch.Tensor) -> torch.Tensor:
            return F.dropout(x, dropout, self.training)

        def forward(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
            ids, mask, types = batch
            b, s = ids.shape
            x = (
                F.embedding(ids, self.w("embeddings.word.weight"))
                + self.w("embeddings.position.weight")[:s]
                + F.embedding(types, self.w("embeddings.token_type.weight"))
            )
            x = self.drop(self.norm(x, "embeddings.norm"))
            dim = x.shape[-1]
            bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * -1.0e4
            for i in range(layers):
                at = f"encoder.{i}"
                q, k, v = (
                    self.linear(x, f"{at}.attn.{n}").view(b, s, HEADS, dim // HEADS).transpose(1, 2) for n in "qkv"
                )
                # PyTorch's fused attention, as Hugging Face's BERT runs it (attn_implementation="sdpa")
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout if self.training
                                                     else 0.0).transpose(1, 2).reshape(b, s, dim)
                x = self.norm(x + self.drop(self.linear(ctx, f"{at}.attn.out")), f"{at}.norm1")
                ff = self.linear(self.drop(F.gelu(self.linear(x, f"{at}.ff.fc1"))), f"{at}.ff.fc2")
                x = self.norm(x + self.drop(ff), f"{at}.norm2")
            keep = mask[..., None].to(x.dtype)
            pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1e-9)
            return self.linear(self.drop(pooled), "classifier")

    return Bert()


def pytorch_contender(model: onnx.ModelProto, data: list, dropout: float, lr: float):  # type: ignore[no-untyped-def]
    """PyTorch fine-tuning `model` (`torch_bert`) on `data` with fused AdamW at `lr`."""
    import torch

    def as_torch(feeds: dict[str, np.ndarray]) -> tuple:
        return tuple(torch.from_numpy(feeds[k]) for k in INPUTS)

    return torch_contender(torch_bert(model, dropout), data, as_torch, lr=lr)


def batches(model: onnx.ModelProto, batch_size: int, steps: int) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    train = load_dataset("bbc-news", model=model).train
    return list(train.batches(batch_size, shuffle=True, seed=0, drop_last=True))[:steps]


def forward_matmul_flops(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """FLOPs (2 per multiply-add) of the MatMul and Gemm nodes of `model` with its inputs at `shapes`."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in shapes:
            value.type.tensor_type.shape.ClearField("dim")
            value.type.tensor_type.shape.dim.extend(
                onnx.TensorShapeProto.Dimension(dim_value=d) for d in shapes[value.name]
            )
    del fixed.graph.value_info[:]
    graph = shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True).graph
    known = {t.name: list(t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            known[value.name] = [d.dim_value for d in dims]
    total = 0
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        if node.input[0] not in known or node.output[0] not in known:
            raise SystemExit(f"{node.name}: no static shape after shape inference; cannot count its FLOPs")
        a, out = known[node.input[0]], known[node.output[0]]
        trans_a = any(x.name == "transA" and x.i for x in node.attribute)
        inner = a[-2] if node.op_type == "Gemm" and trans_a else a[-1]
        total += 2 * math.prod(out) * inner
    return total


def matmul_peak(threads: int, n: int, repeats: int = 20) -> float:
    """GFLOP/s of ONNX Runtime's fp32 MatMul on n x n x n: the fastest of `repeats` runs after warm-up
    (a peak; on a shared machine the median moves with the load)."""
    a, b = (helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [n, n]) for x in "ab")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [a, b],
        [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = create_session(model.SerializeToString(), session_options(threads, "all"), ["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    binding = session.io_binding()
    for name in "ab":
        binding.bind_cpu_input(name, rng.standard_normal((n, n), dtype=np.float32))
    binding.bind_ortvalue_output("c", ort.OrtValue.ortvalue_from_shape_and_type([n, n], np.float32))
    seconds = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        seconds.append(time.perf_counter() - start)
    return 2 * n**3 / min(seconds[2:]) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["onnx"], choices=backend_names(),
                        help="onnx, ort-training (both: side by side)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=machine.count, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--steps", type=machine.count, default=4, help="steps per round")
    parser.add_argument("--rounds", type=machine.count, default=5)
    parser.add_argument("--check", action="store_true", help="first compare losses with dropout off")
    parser.add_argument("--no-dropout", action="store_true", help="time with dropout off on every contender")
    parser.add_argument("--check-steps", type=machine.count, default=20)
    parser.add_argument("--profile", type=int, nargs="?", const=12, metavar="NODES",
                        help="per-op kernel times of the onnx backend's graphs, and its NODES slowest nodes (12)")
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n x n x n MatMul measuring the peak")
    add_ab_option(parser)
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)
    torch = import_torch(args.threads)
    model = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2", num_classes=5, max_length=args.max_length)
    dropout = 0.0 if args.no_dropout else float(zoo.options("bert-classifier")["dropout"].default)
    data = batches(model, args.batch_size, max(args.steps, args.check_steps if args.check else 0))
    shape = data[0][0]["input_ids"].shape
    params = sum(math.prod(t.dims) for t in model.graph.initializer)
    print(
        f"bert-classifier (all-MiniLM-L6-v2, {params:,} parameters, all trained), batch {shape[0]} x {shape[1]} "
        f"tokens, {args.threads} threads, AdamW lr {args.lr:g}; PyTorch {torch.__version__} (fused AdamW)"
    )

    def contenders(work: Path, batches: list, dropout: float) -> list:
        out = [
            backend_contender(b, model, work / b, batches, threads=args.threads, lr=args.lr, dropout=dropout > 0)
            for b in args.backends
        ]
        if args.ab:
            out.append(variant_contender(args.ab, model, work / "onnx-ab", batches, threads=args.threads, lr=args.lr,
                                         dropout=dropout > 0))
        return [*out, pytorch_contender(model, batches, dropout, args.lr)]

    with tempfile.TemporaryDirectory() as tmp:
        if args.check:
            check_same_computation(contenders(Path(tmp) / "check", data[: args.check_steps], 0.0), "bert-classifier")
        timed = data[: args.steps]
        summary = summarise(time_rounds(contenders(Path(tmp) / "bench", timed, dropout), args.rounds))
        print_summary("bert-classifier", summary)
        peak = matmul_peak(args.threads, args.peak_size)
        flops = 3 * forward_matmul_flops(model, dict.fromkeys(INPUTS, shape))
        print(
            f"training step: {flops / 1e9:.1f} GFLOP (3 x forward MatMul); ONNX Runtime {ort.__version__} fp32 "
            f"MatMul peak {peak:.0f} GFLOP/s ({args.peak_size}^3, {args.threads} threads)"
        )
        for name, ms in summary["ms"].items():
            achieved = flops / ms / 1e6
            print(f"  {name:<14} {achieved:6.1f} GFLOP/s = {achieved / peak:.2f} x peak")
        if args.profile:
            print(
                profile_onnx_backend(
                    model, Path(tmp) / "profile", timed, threads=args.threads, lr=args.lr, dropout=dropout > 0,
                    top=args.profile,
                )
            )


if __name__ == "__main__":
    machine.run(main)
