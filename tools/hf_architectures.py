"""Hugging Face transformer architectures exported to ONNX as users export them, differentiated by
onnxkit's own autodiff (the `onnx` backend) and trained by `fit`.

Each architecture (BERT, DistilBERT, RoBERTa, ALBERT, ELECTRA, DeBERTa-v2, GPT-2 with a sequence
classification head and with its causal LM head, T5's encoder under a mean-pooled Linear head, ViT,
ConvNeXt, Swin, MobileViT, Whisper's encoder, Wav2Vec2) is a tiny randomly initialised model built
from its config (hidden 32, 2 layers, vocabulary 1000, dropout 0; no download), every weight moved
off its initial value by a little noise so that no two are equal; exported in eval mode with a
dynamic batch (and sequence) axis by `torchscript` (opset 17), `dynamo`, and each without its
folding of constants (`torchscript-nofold`: do_constant_folding=False; `dynamo-noopt`:
optimize=False). `--attention eager` sets transformers' written-out attention in place of its default,
`scaled_dot_product_attention`. `--fresh` keeps the weights as initialised (LayerNorm's equal ones and zeros,
zero biases: the ties exporters make of them, which training unties), matched by name first. For each it prints:

- `params`: the parameters PyTorch trains;
- `grad`: for one batch of 4 (16 tokens, the later rows padded; GPT-2's LM: token ids alone), the
  largest relative difference, over the parameters, between onnxkit's gradient of the loss
  (`open_training`, cross-entropy on the first output, dropout off) and PyTorch autograd's:
  |ours - torch| / max(|torch|, 1e-3 of the largest parameter gradient), in Frobenius norms, PyTorch
  in train mode where the export keeps BatchNorm nodes (onnxkit trains them on batch statistics);
  parameters are matched by name, else by value (the exporter's transposed or reshaped copies,
  `onnx::MatMul_123`), and weights PyTorch ties are compared as the sum over their copies;
  weights PyTorch does not train (requires_grad=False: Whisper's positions) are frozen, as a user
  would with --freeze: ONNX carries no such mark;
- `worst`: the parameter with that difference;
- `loss falls`: `fit(model, (inputs, labels), epochs=6, batch_size=4)` on 48 rows whose labels follow
  their tokens (pixels): whether the last epoch's training loss is below the first's (both shown);
- `folded`: PyTorch parameters no onnx parameter holds: the exporter computed other tensors from them at
  export (a BatchNorm folded into a Conv, weight_norm's g * v / |v|, Swin's bias table gathered), which
  then train as tensors of their own.

    PYTHONPATH=/tmp/torchlib:/tmp/osl:/tmp/hf .venv/bin/python tools/hf_architectures.py [--only gpt2 t5-encoder]
        [--exporters torchscript dynamo] [--attention eager] [--fresh]

Needs torch, onnxscript (for the dynamo exporter) and transformers outside the project environment (without them
it says, in one line, how to install them).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import machine
import numpy as np
import onnx
from step_timing import import_torch_exporter

from onnxkit.errors import OnnxkitError
from onnxkit.train import fit
from onnxkit.train.problem import open_training

BATCH, SEQ, VOCAB, CLASSES, ROWS = 4, 16, 1000, 3, 48
TEXT = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, num_labels=CLASSES)
EXPORTERS = ("torchscript", "dynamo", "torchscript-nofold", "dynamo-noopt")  # the last two: constants left unfolded
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


PACKAGES = ("torch", "onnxscript", "transformers")
INSTALL = ("they come from packages outside the project environment: pip install --target /tmp/torchlib "
           "torch==2.13.0; pip install --no-deps --target /tmp/osl onnxscript; pip install --target /tmp/hf "
           "transformers; then run with PYTHONPATH=/tmp/torchlib:/tmp/osl:/tmp/hf")


def import_transformers():  # type: ignore[no-untyped-def]
    """transformers, its logging quiet; a missing package (torch, onnxscript, transformers) is one line saying how
    to install them."""
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise SystemExit(f"no {', '.join(missing)}: {INSTALL}")
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def architectures() -> dict[str, tuple[Callable[[], Any], str]]:
    """name -> (model factory, its inputs: 'text', 'lm' (labels per token), 'image', 'audio' or 'features')."""
    t = import_transformers()
    text = {**TEXT, **NO_DROPOUT}
    return {
        "bert": (lambda: t.BertForSequenceClassification(t.BertConfig(**text)), "text"),
        "distilbert": (lambda: t.DistilBertForSequenceClassification(t.DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64,
            dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0, num_labels=CLASSES)), "text"),
        "roberta": (lambda: t.RobertaForSequenceClassification(t.RobertaConfig(**text, pad_token_id=1)), "text"),
        "albert": (lambda: t.AlbertForSequenceClassification(t.AlbertConfig(
            **{**text, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}, embedding_size=16,
            classifier_dropout_prob=0.0)), "text"),
        "electra": (lambda: t.ElectraForSequenceClassification(t.ElectraConfig(**text, embedding_size=16)), "text"),
        "deberta-v2": (lambda: t.DebertaV2ForSequenceClassification(t.DebertaV2Config(
            **text, relative_attention=True, position_buckets=8, max_relative_positions=32,
            pos_att_type=["p2c", "c2p"], pooler_dropout=0.0, pooler_hidden_size=32)), "text"),
        "gpt2": (lambda: t.GPT2ForSequenceClassification(t.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, num_labels=CLASSES, pad_token_id=0, use_cache=False)), "text"),
        "gpt2-lm": (lambda: t.GPT2LMHeadModel(t.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, use_cache=False)), "lm"),
        "t5-encoder": (lambda: T5Classifier(t), "text"),
        "vit": (lambda: t.ViTForImageClassification(t.ViTConfig(
            **{k: v for k, v in text.items() if k not in ("vocab_size", "max_position_embeddings")},
            image_size=32, patch_size=8, num_channels=3)), "image"),
        "convnext": (lambda: t.ConvNextForImageClassification(t.ConvNextConfig(
            num_channels=3, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=CLASSES,
            image_size=32)), "image"),
        "swin": (lambda: t.SwinForImageClassification(t.SwinConfig(
            image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
            window_size=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
            num_labels=CLASSES)), "image"),
        "mobilevit": (lambda: t.MobileViTForImageClassification(t.MobileViTConfig(
            image_size=32, patch_size=2, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
            num_attention_heads=2, mlp_ratio=2.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            classifier_dropout_prob=0.0, num_labels=CLASSES)), "image"),
        "whisper-encoder": (lambda: t.WhisperForAudioClassification(t.WhisperConfig(
            vocab_size=VOCAB, num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4,
            decoder_layers=1, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
            max_source_positions=16, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            num_labels=CLASSES)), "features"),
        "wav2vec2": (lambda: t.Wav2Vec2ForSequenceClassification(t.Wav2Vec2Config(
            vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
            feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, classifier_proj_size=16,
            num_labels=CLASSES)), "audio"),
    }


def T5Classifier(t):  # type: ignore[no-untyped-def]  # noqa: N802 - a module factory
    """T5's encoder (relative position buckets, RMS norm) with a mean-pooled Linear head."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = t.T5EncoderModel(t.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                       num_heads=4, dropout_rate=0.0, relative_attention_num_buckets=8))
            self.head = torch.nn.Linear(32, CLASSES)

        def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask[..., None].to(hidden.dtype)
            return self.head((hidden * mask).sum(1) / mask.sum(1))

    return Head()


def batch(kind: str, rows: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Inputs (by input name) and labels that follow them, the later rows of text padded."""
    if kind in ("text", "lm"):
        ids = rng.integers(2, VOCAB, (rows, SEQ))
        mask = np.ones((rows, SEQ), np.int64)
        for row in range(rows):
            mask[row, SEQ - (row % 4) * 3:] = 0
        if kind == "lm":  # token ids alone, unpadded, as causal LMs train (GPT-2's TorchScript export of
            # attention_mask, a keyword argument, also makes logits_to_keep an input)
            return {"input_ids": ids.astype(np.int64)}, np.roll(ids, -1, 1).astype(np.int64)
        ids = np.where(mask == 1, ids, 1)
        return {"input_ids": ids.astype(np.int64), "attention_mask": mask}, (ids[:, 1] % CLASSES).astype(np.int64)
    shape = {"image": (3, 32, 32), "features": (16, 32), "audio": (400,)}[kind]
    x = rng.normal(size=(rows, *shape)).astype(np.float32)
    labels = (x.reshape(rows, -1)[:, :64].mean(1) > 0).astype(np.int64) + (x.reshape(rows, -1)[:, 64] > 1)
    name = {"image": "pixel_values", "features": "input_features", "audio": "input_values"}[kind]
    return {name: x}, labels.astype(np.int64)


def with_attention(module, attention: str | None) -> None:  # type: ignore[no-untyped-def]
    """Each Hugging Face model in `module` set to compute attention as `attention` ('eager': softmax of masked
    scores written out; 'sdpa': PyTorch's scaled_dot_product_attention), where it can (None: as configured)."""
    for part in module.modules() if attention else ():
        if hasattr(part, "set_attn_implementation") and getattr(part.config, "_attn_implementation", None):
            with contextlib.suppress(ValueError):  # an architecture without that kind (ConvNeXt has no sdpa)
                part.set_attn_implementation(attention)


def moved_off_init(module, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
    """Every parameter plus a little noise, so no two hold equal values and none is all zeros."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Standard output and error sent nowhere, at the file descriptors: the TorchScript exporter prints the traced
    graph from C++ when it fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def export(module, feeds: dict[str, np.ndarray], exporter: str) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    import torch

    args = {k: torch.from_numpy(v) for k, v in feeds.items()}
    names = list(args)
    with warnings.catch_warnings(), silenced():
        warnings.simplefilter("ignore")
        if exporter.startswith("dynamo"):
            batch_dim = torch.export.Dim("batch", min=1, max=1024)
            seq_dim = torch.export.Dim("seq", min=2, max=64)
            shapes = {k: {0: batch_dim, **({1: seq_dim} if v.dtype == torch.int64 else {})} for k, v in args.items()}
            program = torch.onnx.export(module, (), kwargs=args, input_names=names, output_names=["logits"],
                                        dynamic_shapes=shapes, dynamo=True, verbose=False,
                                        optimize=exporter == "dynamo")
            return program.model_proto
        buffer = io.BytesIO()
        axes = {k: {0: "batch", **({1: "seq"} if v.dtype == torch.int64 else {})} for k, v in args.items()}
        torch.onnx.export(module, (), buffer, kwargs=args, input_names=names, output_names=["logits"],
                          opset_version=17, dynamic_axes={**axes, "logits": {0: "batch"}}, dynamo=False,
                          do_constant_folding=exporter == "torchscript")
    return onnx.load_from_string(buffer.getvalue())


def torch_gradients(module, model: onnx.ModelProto, feeds, labels) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F

    module.train(any(n.op_type == "BatchNormalization" for n in model.graph.node))  # as onnxkit trains a BatchNorm
    module.zero_grad(set_to_none=True)
    out = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    logits = out if isinstance(out, torch.Tensor) else out[0]
    target = torch.from_numpy(labels)
    loss = F.cross_entropy(logits.transpose(1, 2) if logits.ndim == 3 else logits, target)
    loss.backward()
    return {n: p.grad.numpy().copy() for n, p in module.named_parameters() if p.grad is not None}


def matched(module, values: dict[str, np.ndarray], fresh: bool = False) -> dict[str, list[tuple[str, bool]]]:  # type: ignore[no-untyped-def]
    """torch parameter name -> the onnx parameters holding it, (name, stored transposed): the one named after it
    where it holds its values (a Conv's weight a BatchNorm was folded into keeps its name, not its values), and
    those holding its values (transposed or reshaped) under a name of no parameter, where no other parameter holds
    those values too (a fresh model's ones and zeros are matched by name alone). `fresh` (weights as initialised):
    transposed copies only, since a value folded from parameters may equal one of them there (weight_norm starts
    with g = |v|, so g * v / |v| is v)."""
    params = dict(module.named_parameters())
    claimed = {key for key, v in values.items() if key in params and v.size == params[key].numel()
               and np.array_equal(v.reshape(params[key].shape), params[key].detach().numpy())}  # (not folded into)
    counts: dict[bytes, int] = {}
    for p in params.values():
        counts[p.detach().numpy().tobytes()] = counts.get(p.detach().numpy().tobytes(), 0) + 1
    found: dict[str, list[tuple[str, bool]]] = {}
    for name, p in params.items():
        w = p.detach().numpy()
        found[name] = [(name, False)] if name in claimed else []
        for key, v in values.items():
            if key in claimed or counts[w.tobytes()] > 1:
                continue
            if not fresh and v.size == w.size and np.array_equal(v.reshape(w.shape), w):
                found[name].append((key, False))
            elif w.ndim == 2 and v.shape == w.T.shape and np.array_equal(v, w.T):
                found[name].append((key, True))
    return {name: copies for name, copies in found.items() if copies}


def frozen_in(module, values: dict[str, np.ndarray]) -> list[str]:  # type: ignore[no-untyped-def]
    """The onnx parameters holding weights PyTorch does not train (requires_grad False: Whisper's positions)."""
    fixed = {name: p for name, p in module.named_parameters() if not p.requires_grad}
    return [key for name, copies in matched(module, values).items() if name in fixed for key, _ in copies]


def gradient_error(module, model: onnx.ModelProto, feeds, labels, fresh: bool = False,
                   ) -> tuple[float, str, list[str], list[str]]:  # type: ignore[no-untyped-def]
    """(largest relative error over the parameters both sides hold, its parameter, torch's parameters the
    exporter computed other tensors from (none of the onnx parameters holds them), the onnx parameters to freeze)."""
    theirs = torch_gradients(module, model, feeds, labels)
    with tempfile.TemporaryDirectory() as folder:
        first = open_training(model, Path(folder) / "v", optimizer="sgd", dropout=False)
        values = {k: v for k, v in first.parameters().items() if k not in first.buffers()}  # (BatchNorm's statistics)
        freeze = frozen_in(module, values)
        session = open_training(model, Path(folder) / "s", optimizer="sgd", dropout=False, freeze=freeze)
        session.train_step(feeds, labels)
        ours = session.gradients()
    pairs = matched(module, values, fresh)
    floor = 1e-3 * max(np.linalg.norm(g) for g in theirs.values())
    worst, where, folded = 0.0, "", []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        copies = pairs.get(name)
        if not copies:
            folded.append(name)
            continue
        want = theirs.get(name, np.zeros(tuple(p.shape), np.float32))
        got = sum(ours[k].T if transposed else ours[k].reshape(want.shape) for k, transposed in copies)
        error = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), floor))
        if error > worst:
            worst, where = error, name
    return worst, where, folded, freeze


def loss_falls(model: onnx.ModelProto, kind: str, freeze: list[str]) -> str:
    feeds, labels = batch(kind, ROWS, np.random.default_rng(1))
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what the export folded (`folded` says it), an LM's classes unseen
        result = fit(model, (feeds, labels), Path(folder) / "run", epochs=6, batch_size=BATCH, patience=None,
                     evaluate_test=False, freeze=freeze, quiet=True)
    losses = [r["train_loss"] for r in result.history]
    return f"{'yes' if losses[-1] < losses[0] else 'no'} ({losses[0]:.3f} -> {losses[-1]:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="architecture names (default: all)")
    parser.add_argument("--exporters", nargs="*", default=list(EXPORTERS), choices=EXPORTERS)
    parser.add_argument("--fresh", action="store_true",
                        help="the weights as initialised (equal LayerNorm weights, zero biases: the ties exporters "
                             "make of them), matched by name first")
    parser.add_argument("--attention", choices=["sdpa", "eager"],
                        help="transformers' attention implementation (default: the config's, sdpa where it has one)")
    args = parser.parse_args()
    made = architectures()
    torch = import_torch_exporter()
    torch.set_num_threads(1)
    unknown = sorted(set(args.only or ()) - set(made))
    if unknown:
        parser.error(f"no architecture {', '.join(unknown)}; choose from {', '.join(made)}")
    print(machine.machine_line(), flush=True)
    print(f"{'architecture':16s} {'exporter':18s} {'params':>7s} {'grad':>8s}  {'worst':44s} {'loss falls':22s} folded")
    for name, (make, kind) in made.items():
        if args.only and name not in args.only:
            continue
        for exporter in args.exporters:
            torch.manual_seed(0)
            module = make().eval()
            with_attention(module, args.attention)
            if not args.fresh:
                moved_off_init(module)
            feeds, labels = batch(kind, BATCH, np.random.default_rng(0))
            params = sum(p.numel() for p in module.parameters() if p.requires_grad)
            head = f"{name:16s} {exporter:18s} {params:7d}"
            try:
                model = export(module, feeds, exporter)
            except Exception as e:  # noqa: BLE001 - the exporter's own failure, reported
                line = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()[0]  # without the exporter's colours
                print(f"{head}  export failed: {line[:100]}", flush=True)
                continue
            try:
                error, where, folded, freeze = gradient_error(module, model, feeds, labels, args.fresh)
                falls = loss_falls(model, kind, freeze)
            except OnnxkitError as e:
                print(f"{head}  error: {e}", flush=True)
                continue
            shown = f"{len(folded)} ({folded[0]}{', ...' * (len(folded) > 1)})" if folded else "0"
            frozen = f"; froze {', '.join(freeze)} (requires_grad=False)" if freeze else ""
            print(f"{head} {error:8.1e}  {where[-44:]:44s} {falls:22s} {shown}{frozen}", flush=True)


if __name__ == "__main__":
    machine.run(main)
