"""Fine-tuning step time: onnxkit (ONNX Runtime training) against PyTorch on the pretrained MiniLM classifier.

Both sides start from the same weights (all-MiniLM-L6-v2 in the zoo's
bert-classifier, read back from its ONNX file), train every parameter on the
same batches (bbc-news training split, tokenized by the model's own tokenizer,
`--max-length` tokens), with the same thread count and the same AdamW settings
as tools/bench_train.py except a fine-tuning learning rate (`--lr`, 5e-5). A step
is forward + backward + optimizer update. Rounds alternate between the two; each
side's figure is the median over rounds, and the ratio is onnxkit / PyTorch
(below 1: onnxkit is faster).

    PYTHONPATH=/tmp/torchlib python tools/bench_finetune.py [--threads 2] [--batch-size 16] [--max-length 128]

It first trains `--check-steps` steps on both with dropout off and asserts the
losses agree, so the timing compares the same computation. Needs torch
(`pip install 'onnxkit[bench]'`, or a separate --target folder on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from onnx import numpy_helper

from onnxkit import zoo
from onnxkit.data import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import TorchTrainer, import_torch, onnxkit_session, time_side_by_side  # noqa: E402 - a sibling tool, not a package

HEADS = 12  # all-MiniLM-L6-v2


def torch_bert(model, dropout: float):  # type: ignore[no-untyped-def]
    """The bert-classifier graph written in PyTorch over the ONNX model's weights ([in, out] linears);
    called on an (input_ids, attention_mask, token_type_ids) tuple."""
    import torch
    from torch.nn import functional as F  # noqa: N812

    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    (eps,) = {a.f for n in model.graph.node if n.op_type == "LayerNormalization" for a in n.attribute
              if a.name == "epsilon"}
    layers = 1 + max(int(n.split(".")[1]) for n in weights if n.startswith("encoder."))

    class Bert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.ParameterDict(
                {k.replace(".", "__"): torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in weights.items()})

        def w(self, name: str) -> torch.Tensor:
            return self.p[name.replace(".", "__")]

        def linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
            return x @ self.w(f"{name}.weight") + self.w(f"{name}.bias")

        def norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
            return F.layer_norm(x, x.shape[-1:], self.w(f"{name}.weight"), self.w(f"{name}.bias"), eps)

        def drop(self, x: torch.Tensor) -> torch.Tensor:
            return F.dropout(x, dropout, self.training)

        def forward(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
            ids, mask, types = batch
            b, s = ids.shape
            x = (F.embedding(ids, self.w("embeddings.word.weight")) + self.w("embeddings.position.weight")[:s]
                 + F.embedding(types, self.w("embeddings.token_type.weight")))
            x = self.drop(self.norm(x, "embeddings.norm"))
            dim = x.shape[-1]
            bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * -1.0e4
            for i in range(layers):
                at = f"encoder.{i}"
                q, k, v = (self.linear(x, f"{at}.attn.{n}").view(b, s, HEADS, dim // HEADS).transpose(1, 2)
                           for n in "qkv")
                scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(dim // HEADS)) + bias
                ctx = (self.drop(scores.softmax(-1)) @ v).transpose(1, 2).reshape(b, s, dim)
                x = self.norm(x + self.drop(self.linear(ctx, f"{at}.attn.out")), f"{at}.norm1")
                ff = self.linear(self.drop(F.gelu(self.linear(x, f"{at}.ff.fc1"))), f"{at}.ff.fc2")
                x = self.norm(x + self.drop(ff), f"{at}.norm2")
            keep = mask[..., None].to(x.dtype)
            pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1e-9)
            return self.linear(self.drop(pooled), "classifier")

    return Bert()


def batches(model, batch_size: int, steps: int) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:  # type: ignore[no-untyped-def]
    train = load_dataset("bbc-news", model=model).train
    return list(train.batches(batch_size, shuffle=True, seed=0, drop_last=True))[:steps]


def as_torch(feeds: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
    import torch

    return tuple(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--steps", type=int, default=4, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check-steps", type=int, default=3, help="steps whose losses must agree (dropout off)")
    args = parser.parse_args()
    torch = import_torch(args.threads)
    model = zoo.build_model("bert-classifier", pretrained="all-MiniLM-L6-v2", num_classes=5,
                            max_length=args.max_length)
    dropout = float(zoo.options("bert-classifier")["dropout"].default)
    data = batches(model, args.batch_size, max(args.steps, args.check_steps) + 1)
    seq = max(f["input_ids"].shape[1] for f, _ in data)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"bert-classifier (all-MiniLM-L6-v2, {params:,} parameters, all trained), batch {args.batch_size}, "
          f"sequence {seq}, {args.threads} threads, AdamW lr {args.lr:g}; PyTorch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        # the same computation: dropout off, the first steps' losses agree
        session = onnxkit_session(model, Path(tmp) / "check", args.threads, dropout=False, lr=args.lr)
        trainer = TorchTrainer(torch_bert(model, 0.0), lr=args.lr)
        worst = 0.0
        for feeds, labels in data[: args.check_steps]:
            ours = session.train_step(feeds, labels)
            session.optimizer_step()
            theirs = trainer.step(as_torch(feeds), torch.from_numpy(labels))
            worst = max(worst, abs(ours - theirs) / abs(theirs))
            print(f"  loss onnxkit {ours:.6f}  pytorch {theirs:.6f}")
        assert worst < 1e-3, f"losses differ by {worst:.2e}; not the same computation"
        print(f"same losses for {args.check_steps} steps (max relative difference {worst:.1e})")
        del session, trainer

        session = onnxkit_session(model, Path(tmp) / "bench", args.threads, dropout=True, lr=args.lr)
        trainer = TorchTrainer(torch_bert(model, dropout), lr=args.lr)
        timed = data[1 : args.steps + 1]
        torch_data = [(as_torch(f), torch.from_numpy(y)) for f, y in timed]

        session.train_step(*data[0]), session.optimizer_step()  # warm up: kernels, allocators
        trainer.step(as_torch(data[0][0]), torch.from_numpy(data[0][1]))
        result = time_side_by_side(session, timed, trainer, torch_data, args.rounds)
    print(f"median ms per step over {args.rounds} rounds x {len(timed)} steps: onnxkit {result['onnxkit']:.0f}  "
          f"pytorch {result['torch']:.0f}  ratio onnxkit/pytorch {result['onnxkit'] / result['torch']:.2f}")


if __name__ == "__main__":
    main()
