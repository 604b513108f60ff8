"""`quantize()`: one model in, a quantized model and its report out."""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from onnxkit.batch_axis import layout_of
from onnxkit.data import Dataset, Split, from_arrays
from onnxkit.errors import OnnxkitError, first_few, suggest
from onnxkit.evaluate import changed_since_training
from onnxkit.files import (
    DiskError,
    atomic_path,
    check_fits_protobuf,
    folder_locked,
    irreplaceable,
    load_model,
    model_location,
    out_of_space,
    read_weights,
    same_file,
    scratch_folder,
    weight_files,
)
from onnxkit.metadata import metadata, set_metadata
from onnxkit.metadata_keys import QUANTIZATION_KEY
from onnxkit.quantize import accuracy, analysis, cpu, latency, rewrite, search, sqnr
from onnxkit.quantize.data import Feeds, bind, calibration_batches, first_batch, load_split, recorded_data
from onnxkit.quantize.inputs import fixed_batch, synthetic_inputs
from onnxkit.quantize.passes import Quantizer, nothing_message, quantized_before
from onnxkit.quantize.report import Report
from onnxkit.quantize.settings import BLOCK_SIZES, FORMATS, METHODS, MODES, Settings, check_choice
from onnxkit.summary import file_bytes

LATENCY_BATCHES = (1, 64)
DEFAULT_BLOCK_SIZE = 32  # int4: weights per scale
AUTO_MAX_DROP = 1.0  # accuracy points `--mode auto` may lose when --max-drop is not given
SQNR_ROWS = 64  # calibration examples the SQNR view runs both models on (it keeps every activation)


@dataclass
class QuantizeResult:
    model: onnx.ModelProto
    report: Report


def quantize(
    model: str | os.PathLike | onnx.ModelProto,
    output: str | os.PathLike | None = None,
    *,
    mode: str | None = None,
    calib: Any = None,
    calib_size: int = 256,
    method: str | None = None,
    per_channel: bool | None = None,
    format: str | None = None,  # noqa: A002 - mirrors --format
    exclude: str | Iterable[str] = (),
    reduce_range: bool | None = None,
    block_size: int | None = None,
    eval_data: Any = None,
    model_output: str | None = None,
    max_drop: float | None = None,
    report_path: str | os.PathLike | None = None,
    sqnr_rows: int = 0,
    measure_latency: bool = True,
    seq_len: int = 128,
    log: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Quantize `model` and report what it cost and bought.

    mode: dynamic | static | int4 | fp16 | auto; None picks static when
    convolutions do most of the multiply-adds, else dynamic. `auto` tries the int8 candidates and
    keeps the fastest whose accuracy drop is within `max_drop` (default 1 point).
    calib / eval_data: a dataset name or file, a Dataset, a Split or `(X, y)` arrays, used whole as a Split (calib
    also takes a dict of arrays
    keyed by input name, or one array for a model of one input: inputs without labels, which cannot
    score a model); calibration uses the train split, evaluation the test split (without `calib`, static
    modes calibrate on the train split of a named `eval_data` or Dataset, or on a Split `eval_data` itself).
    Without `eval_data`, a model trained by onnxkit is evaluated on the data it was trained on
    (split as in its training run), when that data is here; `max_drop` and `auto` use it too.
    `model_output`: the output scored (default: the one training fit, else the scores beside a first
    output that is the predicted label, else the first).
    A drop over `max_drop` (points of accuracy, or of loss for regression) raises OnnxkitError and
    writes nothing. `calib_size`: calibration examples.
    int8 settings (None: chosen for the model and this CPU): `method` minmax | entropy | percentile
    (static activation ranges); `per_channel` weight scales (else per tensor); `format` qdq | qoperator
    (static); `reduce_range` 7-bit weights (on for x86 CPUs without VNNI). int4: `block_size` weights per scale
    (default 32).
    exclude: node names or op types to leave float (one name, or several).
    sqnr_rows: also compare the models tensor by tensor and keep the worst rows.
    measure_latency: time both models at batch 1 and 64 (`seq_len` fills free dimensions past the batch of
    the synthetic inputs used without eval_data). log: a function given each progress line.
    While it runs, it silences sys.stdout and logging and works in a scratch folder, as ONNX Runtime's
    quantizers need: process-wide, so other threads' prints and relative paths are affected meanwhile.
    `output` and `report_path` are written atomically, only after everything succeeded.
    Returns a `QuantizeResult`: the quantized `model` (a ModelProto) and its `report` (`report.text()`
    prints it; `size_ratio`, `latency_ratio(batch)`, `accuracy`).
    """
    say = log or (lambda _msg: None)
    if not isinstance(model, str | os.PathLike | onnx.ModelProto):
        raise TypeError(f"model must be a path to an .onnx file or an onnx.ModelProto, not {type(model).__name__}")
    given = exclude
    exclude = [given] if isinstance(given, str) else list(given) if isinstance(given, Iterable) else []  # not letters
    if not isinstance(given, Iterable) or not all(isinstance(e, str) for e in exclude):
        raise TypeError(f"exclude must be a node name or op type, or a list of them, not {given!r}")
    source = None if isinstance(model, onnx.ModelProto) else Path(model)
    _check_outputs(source, output, report_path)
    calib, eval_data = from_arrays(calib, whole=True), from_arrays(eval_data, whole=True)  # (X, y): all their rows
    _check_data(calib, eval_data)
    original = model if source is None else load_model(source, load_weights=False)
    check_fits_protobuf(original, source or "the model", "quantize",
                        " (ONNX Runtime's quantize_dynamic(..., use_external_data_format=True) can)")
    if source is not None:
        _check_not_weights(source, original, output, report_path)
        read_weights(original, source)
    elif files := weight_files(original):  # onnx.load(..., load_external_data=False): no folder to read them from
        raise OnnxkitError(f"the model keeps its weights in {first_few(files)}, which were not loaded: pass the "
                           "model's path, or load it with onnx.load(path) (load_external_data=True)")
    if any(node.op_type in ("Constant", *rewrite.LAYOUT_OPS) for node in original.graph.node):
        copy = onnx.ModelProto()  # weights held in Constant nodes or laid out by ops (a dynamo LSTM's gates) as
        copy.CopyFrom(original)  # initializers, which the quantizers and the mode's choice look for (the caller's
        # model stays): the LSTM's work went uncounted, so a dynamo Conv1d -> LSTM export got static, its LSTM float
        original = copy if rewrite.constants_as_initializers(copy) + rewrite.fold_weight_layouts(copy) else original
    outputs = [o.name for o in original.graph.output]
    if model_output is not None and model_output not in outputs:
        raise OnnxkitError(f"the model has no output {model_output!r}.{suggest(model_output, outputs)} Its outputs: "
                           f"{', '.join(outputs)}", params=["model_output"])
    recorded, recorded_seed, missing = recorded_data(original)  # a model onnxkit trained says on what
    notes = []

    def seed(data: Any) -> int:
        """The split seed of `data`: the training run's for its own data (so its test split is unseen), else 0.
        The data is the run's however it is named: the run records a file by its absolute path."""
        same = isinstance(data, str | os.PathLike) and recorded is not None and same_file(data, recorded)
        return recorded_seed if same else 0

    _check_options(mode, method, format, calib_size, max_drop)
    for name, count, least in (("sqnr_rows", sqnr_rows, 0), ("seq_len", seq_len, 1)):
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < least:
            raise OnnxkitError(f"{name} must be a whole number, {least} or more, got {count!r}", params=[name])
    for name, flag in (("per_channel", per_channel), ("reduce_range", reduce_range)):
        if flag is not None and not isinstance(flag, bool):
            raise TypeError(f"{name} must be True, False or None (for the default), not {flag!r}")
    if eval_data is None:
        eval_data = recorded
        notes += [f"{missing}: give --eval DATA for an accuracy report"] if missing else []
        notes += [f"evaluated on the test split of {recorded}, the data the model was trained on"] if recorded else []
        if recorded and changed_since_training(original, recorded):
            notes += [f"{recorded} changed since training, so that split may hold rows the model trained on (both "
                      "models are scored on the same rows); give --eval DATA for unseen data"]
    profile = analysis.profile(original)
    if mode in ("static", "auto") and not any(profile.weighted.values()):  # before asking for data it would not use
        raise OnnxkitError(nothing_message(original, mode), params=["mode", "exclude"])
    weights = {t.name for t in original.graph.initializer}  # old exporters list them as inputs too
    _check_evaluation(mode, eval_data, max_drop, missing, images=any(
        len(i.type.tensor_type.shape.dim) == 4 for i in original.graph.input if i.name not in weights))
    _check_not_data({"output": output, "report_path": report_path}, {"calib": calib, "eval_data": eval_data})
    if output is not None and (held := irreplaceable(output)):
        raise OnnxkitError(f"output {output} holds {held}, which the quantized model would replace; write it to "
                           "another file, or delete that one first", params=["output"])
    _check_report_replaceable(report_path)
    features = cpu.detect()
    reduce_range = features.reduce_range if reduce_range is None else reduce_range
    from_eval = calib is None and eval_data is not None
    if from_eval:
        calib = eval_data  # a name's or Dataset's train split: no overlap with the test split evaluated on
    requested, mode = mode, mode or profile.default_mode
    calibrated = None  # said once the mode that calibrated is known (auto may keep a dynamic candidate)
    if from_eval and isinstance(calib, Split | dict):
        calibrated = "calibrated on the eval_data examples themselves; pass calib to calibrate on other data"
    elif from_eval and isinstance(calib, str | os.PathLike):
        calibrated = (f"calibrated on the train split of {calib}, evaluated on its test split (--calib, calib=, "
                      "calibrates on other data)")
    if already := quantized_before(original):  # quantizing it again gains nothing and loses accuracy
        raise OnnxkitError(f"{source or 'the model'} is already quantized ({already}); quantize the float32 model it "
                           "was made from")
    if doubles := _float64_values(original):  # int4 wrote a float64 MatMulNBits, which no onnxruntime loads
        raise OnnxkitError(f"{source or 'the model'} computes in float64 ({first_few(doubles)}); quantization "
                           "takes a float32 model: export it in float32 (PyTorch: model.float())")

    name = str(source or "the model")
    from onnxkit.runtime.session import plain_session

    plain_session(original.SerializeToString(), name=name)  # one onnxruntime refuses (an op it lacks, an opset
    # newer than it runs) is the model's fault, which no --mode helps: said before calibration or scoring tries it
    with _scratch(output) as tmp, _disk_full_errors(tmp, original.ByteSize()), _onnxruntime_errors(name):
        test = None if eval_data is None else bind(load_split(eval_data, "test", original, seed(eval_data)), original)
        baseline = accuracy.score(original, test, output=model_output) if test is not None else None
        batches = (fixed,) if (fixed := fixed_batch(original)) else LATENCY_BATCHES  # a fixed batch: timed at it
        feeds = {
            b: first_batch(test, b) if test is not None else synthetic_inputs(original, b, seq_len=seq_len)
            for b in batches
        }
        quantizer = Quantizer(original, tmp, exclude, check=feeds[min(feeds)])

        def calibration(size: int = calib_size) -> list[Feeds]:
            say(f"reading up to {size} calibration examples of {calib} ...")
            batches = calibration_batches(calib, original, size, seed=seed(calib))
            _runs_on(original, batches, calib)
            return batches

        timed, spread = None, {}
        candidates = []
        if mode == "auto":
            picked = search.run(
                quantizer,
                per_channel=per_channel,
                reduce_range=reduce_range,
                calibration=calibration,
                score=lambda m: accuracy.score(m, test, like=baseline),
                baseline=baseline,
                max_drop=AUTO_MAX_DROP if max_drop is None else max_drop,
                feeds=feeds,
                log=say,
            )
            settings, quantized, candidates = picked.settings, picked.model, picked.candidates
            reason, timed, spread = picked.reason, picked.latency_ms, picked.latency_spread
            notes += [f"{opt} does not apply to --mode auto, which tries {tried}; ignored"
                      for opt, given, tried in (("--method", method, "minmax, entropy and percentile"),
                                                ("--format", format, "qdq only")) if given is not None]
        else:
            settings = Settings(
                mode=mode,
                per_channel=True if per_channel is None else per_channel,
                method=method or "minmax",
                format=format or "qdq",
                reduce_range=reduce_range,
                block_size=DEFAULT_BLOCK_SIZE if block_size is None else block_size,
            )  # per-channel by default: as fast here, and far closer with 7-bit weights (see README)
            reason = f"mode {mode}, as asked" if requested else profile.reason()
            given_calib = None if from_eval else calib  # calib taken from eval_data is not one the user gave
            notes += _ignored_options(settings, method, format, per_channel, given_calib, block_size)
            if requested == "dynamic" and profile.nodes("conv"):
                notes.append("Conv stays fp32 in dynamic mode (ConvInteger is slow); --mode static quantizes it")
            if mode == "int4":
                notes += [note] if (note := _int4_leaves_float(quantizer.prepared_for(settings))) else []
            say(f"quantizing: {settings.label} ...")
            quantized = quantizer.run(settings, calibration() if mode == "static" else None)

        if calibrated and settings.mode == "static":
            notes.append(calibrated)
        if settings.mode == "static" and any(node.op_type == "LSTM" for node in original.graph.node):
            notes.append("LSTM stays fp32 in static mode (ONNX Runtime's static quantizer has no LSTM); --mode "
                         "dynamic quantizes it")
        matched, blocks = quantizer.attention
        if settings.mode == "dynamic" and quantizer.fused:
            notes.append(f"fused {matched} of {blocks} attention blocks into ONNX Runtime's Attention op "
                         "(QAttention in int8; the model now needs ONNX Runtime to run)")
        elif settings.mode == "dynamic" and matched:
            notes.append(f"attention left unfused: ONNX Runtime's fusion matches {matched} of {blocks} blocks (not a "
                         "pre-norm encoder's first), and partly fused such an encoder ran slower than unfused")
        _stamp(quantized, original, settings)
        notes += _non_finite(original, _check_loads(quantized), feeds[min(feeds)],
                             "random inputs" if test is None else "evaluation rows")
        report = Report(
            model=str(source) if source else "(model)",
            output=None,
            settings=settings.as_dict(),
            reason=reason,
            cpu=features.describe(reduce_range) if mode in ("dynamic", "static", "auto") else features.isa,
            size_bytes={
                # on disk, with the weight files beside it (an export's .onnx.data was counted 0.5-1.5% off)
                "original": file_bytes(source) if source is not None else len(original.SerializeToString()),
                "quantized": len(quantized.SerializeToString()),
            },
            candidates=candidates,
            notes=notes,
        )
        if baseline is not None:
            after = accuracy.score(quantized, test, like=baseline)  # --mode auto's pick too: its classes a row
            report.accuracy = accuracy.entry(baseline, after, eval_data)
            report.accuracy["agreement"] = accuracy.agreement(baseline, after)
            if max_drop is not None and report.accuracy["drop"] > max_drop:
                raise OnnxkitError(
                    f"{settings.label} {baseline.worse_by(report.accuracy['drop'])}, "
                    f"more than max_drop {max_drop}; nothing written. Try {_closer_options(settings)}",
                    params=["max_drop", "mode", "per_channel", "method", "block_size", "exclude", "sqnr_rows"],
                )
        if timed is None and measure_latency:
            say("timing both models ...")
            ms = latency.measure(
                {"original": original.SerializeToString(), "quantized": quantized.SerializeToString()},
                feeds,
                spread=spread,
            )
            timed = {b: {k: ms[k][b] for k in ms} for b in feeds}
        report.latency_ms, report.latency_spread = timed or {}, spread
        if report.latency_ms and test is None:  # a reader reproducing the figures needs the shapes timed
            report.notes.append(_synthetic_note(original, feeds, seq_len))
        left_float = any(note.startswith(_INT4_ONLY) for note in notes)  # what is larger then, and why: said there
        for note in (report.slower_note(excluded=bool(quantizer.exclude)),
                     None if left_float else report.bigger_note(bool(quantizer.exclude)), report.unsteady_note()):
            report.notes += [note] if note else []
        if sqnr_rows:
            say("comparing tensors (SQNR) ...")
            data = (
                calibration(min(calib_size, SQNR_ROWS)) if calib is not None
                else [first_batch(test, 16)] if test is not None
                else [synthetic_inputs(original, 16, seq_len=seq_len)]
            )  # fmt: skip
            float_model = quantizer.prepared_for(settings)
            report.sqnr = sqnr.sqnr_table(float_model, quantized, data, Path(tmp))[:sqnr_rows]
        report.output = str(output) if output is not None else None
        _write(quantized, output, report, report_path)
    return QuantizeResult(quantized, report)


def _synthetic_note(model: onnx.ModelProto, feeds: dict[int, Feeds], seq_len: int) -> str:
    """Which inputs the latency was timed on when no data was given: random ones, of these shapes."""
    from onnxkit.data import model_inputs

    sample = next(iter(feeds.values()), {})
    shapes = ", ".join(f"{k} [{', '.join(map(str, v.shape))}]" for k, v in sample.items())
    free = any(spec.shape and any(not isinstance(d, int) or d <= 0 for d in spec.shape[1:])
               for spec in model_inputs(model))
    length = f"; free dimensions after the batch set to {seq_len}" if free else ""
    return f"latency timed on random inputs ({shapes}{length}); pass --eval DATA to time real examples"


def _write(model: onnx.ModelProto, output, report: Report, report_path) -> None:  # type: ignore[no-untyped-def]
    """Write the model and the report together: both land, or neither does (short of a kill -9 in the microseconds
    between their renames), and another quantize writing into the model's folder meanwhile waits."""
    with contextlib.ExitStack() as stack:
        written = output if output is not None else report_path
        if written is not None:
            stack.enter_context(folder_locked(Path(written).parent))
        if output is not None:
            model_tmp = stack.enter_context(atomic_path(output))
            model_tmp.write_bytes(model.SerializeToString())
        if report_path is not None:
            report_tmp = stack.enter_context(atomic_path(report_path))
            report_tmp.write_text(report.json())


@contextlib.contextmanager
def _scratch(output: str | os.PathLike | None) -> Iterator[Path]:
    """Where the passes and ONNX Runtime's quantizers (which make temporary folders of their own)
    write intermediate models: beside the output (removed after Ctrl-C or SIGTERM, swept by the
    next run after a hard kill), else in the system's temporary folder."""
    with contextlib.ExitStack() as stack:
        if output is not None:
            folder = stack.enter_context(scratch_folder(output, "quantize"))
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="onnxkit-quantize-")))
        previous, tempfile.tempdir = tempfile.tempdir, str(folder)
        try:
            yield folder
        finally:
            tempfile.tempdir = previous


@contextlib.contextmanager
def _disk_full_errors(scratch: Path, model_bytes: int) -> Iterator[None]:
    """A failure while the scratch folder's disk has less room than the copies of the model a quantization writes
    (input, preprocessed, ONNX Runtime's own, output: 4), as the disk's: ONNX Runtime's quantizers write a model cut
    short without an error, then fail to read it back."""
    try:
        yield
    except Exception as e:
        if isinstance(e, DiskError) or not out_of_space(scratch, 4 * model_bytes):
            raise
        raise DiskError(f"cannot write in {scratch.parent}: too little space left on its disk to quantize this "
                        f"{model_bytes / 1e6:.1f} MB model; free some space or write somewhere else") from e


@contextlib.contextmanager
def _onnxruntime_errors(model: str) -> Iterator[None]:
    """ONNX Runtime failing on the model (an op it lacks, a graph it rejects) as one OnnxkitError."""
    try:
        yield
    except Exception as e:  # onnxruntime raises its own exception types, without a common base
        from onnxkit.runtime.session import error_reason, raised_by_onnxruntime

        if isinstance(e, OnnxkitError) or not raised_by_onnxruntime(e):
            raise

        raise OnnxkitError(f"{model}: onnxruntime {_ort_version()} failed on it while quantizing ({error_reason(e)}); "
                           "if the model runs (onnxkit predict), try another --mode or --exclude the node it names",
                           params=["mode", "exclude"]) from e


_INT4_ONLY = "int4 quantizes MatMul weights only"
_QUANTIZED_BY = {"Conv": "static", "ConvTranspose": "static", "LSTM": "dynamic", "Gather": "dynamic",
                 "Attention": "dynamic"}  # the --mode that quantizes what int4 leaves float (a GRU: none)


def _int4_leaves_float(model: onnx.ModelProto) -> str | None:
    """A note saying how much of the weights int4 leaves float32 (Conv, LSTM, Gather, ...; `model` preprocessed, its
    Gemms MatMuls) and which mode quantizes them; None when MatMuls hold them all. A torchvision resnet18 came out
    1.00x its size with no word, a TorchScript LSTM classifier larger, said to be 'too small for int4's block
    scales'."""
    by_op = analysis.weight_values_by_op(model)
    left = {op: n for op, n in by_op.most_common() if op != "MatMul"}
    if not left:
        return None
    share = sum(left.values()) / sum(by_op.values())
    modes = {m: [op for op in left if _QUANTIZED_BY.get(op) == m] for m in ("dynamic", "static")}
    hints = "".join(f"; --mode {m} quantizes {', '.join(ops)}" for m, ops in modes.items() if ops)
    shown = f"{100 * share:.0f}%" if share < 0.995 else "over 99%" if share < 1 else "all"
    return f"{_INT4_ONLY}: {shown} of the weight values stay float32 ({', '.join(left)}){hints}"


def _float64_values(model: onnx.ModelProto) -> list[str]:
    """The float64 weights the quantizers would take: those a MatMul, Gemm or Conv multiplies by, or a Gather
    looks up (a float64 table elsewhere, on a side path, is left as it is)."""
    weights = {node.input[0] if node.op_type == "Gather" else node.input[1] for node in model.graph.node
               if node.op_type in ("MatMul", "Gemm", "Conv", "ConvTranspose", "Gather") and len(node.input) > 1}
    return [t.name for t in model.graph.initializer if t.data_type == TensorProto.DOUBLE and t.name in weights]


def _check_loads(quantized: onnx.ModelProto) -> Any:
    """A check session of the quantized model; refuse to write one onnxruntime cannot load (a pass's output it
    rejects), whether or not the report times or scores it."""
    from onnxkit.runtime.session import error_reason, plain_session

    try:
        return plain_session(quantized.SerializeToString())
    except OnnxkitError as e:
        raise OnnxkitError(f"the quantized model does not load in onnxruntime {_ort_version()} "
                           f"({error_reason(e.__cause__ or e)}); nothing written: try another --mode, or --exclude "
                           "the nodes it names", params=["mode", "exclude"]) from e


def _non_finite(original: onnx.ModelProto, quantized: Any, feeds: Feeds, where: str) -> list[str]:
    """A warning when the quantized model (a session) answers NaN or infinity on `feeds` (`where` they come from) in
    an output where the original answers finite numbers: a broken model, which only an accuracy figure would show,
    and none is taken without evaluation data."""
    from onnxkit.runtime.session import plain_session

    names = [o.name for o in quantized.get_outputs()]
    try:
        before = dict(zip(names, plain_session(original.SerializeToString()).run(names, feeds), strict=True))
        after = dict(zip(names, quantized.run(names, feeds), strict=True))
    except Exception:  # noqa: BLE001 - random inputs a model does not take (ids past a short position table): no check
        return []
    broken = [name for name in names if _floats(after[name]) and not np.isfinite(after[name]).all()
              and _floats(before[name]) and np.isfinite(before[name]).all()]
    return [f"the quantized model is broken: it answers NaN or infinity in {first_few(broken)} where the original "
            f"answers finite numbers (on {where}); try another --mode, or --exclude the nodes that overflow"
            ] if broken else []


def _runs_on(model: onnx.ModelProto, batches: list[Feeds], calib: Any) -> None:
    """Refuse calibration inputs the float model itself cannot run (token ids past its vocabulary, more tokens than
    its positions), as the data's fault: ONNX Runtime's calibrator failing on them read as the model's, with advice
    to --exclude the node."""
    from onnxkit.runtime.session import error_reason, plain_session, raised_by_onnxruntime, run_failure_hint

    session = plain_session(model.SerializeToString())  # not kept: a large model's copy in memory while it quantizes
    for feeds in batches:
        try:
            session.run(None, feeds)
        except Exception as e:  # onnxruntime raises its own exception types, without a common base
            if not raised_by_onnxruntime(e):
                raise
            what = f"calib {calib}" if isinstance(calib, str | os.PathLike) else "calib"
            layout = layout_of(model)
            rows = f" (read rows first, [batch, seq, ...], and swapped to its {layout.describe()})" if layout else ""
            raise OnnxkitError(f"{what}: onnxruntime could not run the model (before quantizing) on these inputs{rows} "
                               f"({error_reason(e)}); {run_failure_hint(e, 'check that they fit its inputs')}",
                               params=["calib"]) from e


def _floats(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _check_outputs(source: Path | None, output, report_path) -> None:  # type: ignore[no-untyped-def]
    """Refuse to write over the model being quantized, or the model and report over each other."""
    paths = {"output": output, "report_path": report_path}
    for name, path in paths.items():
        if path is not None and source is not None and same_file(path, source):
            raise OnnxkitError(f"{name} {path} is the model being quantized; write the result to another file",
                               params=[name])
    if output is not None and report_path is not None and same_file(output, report_path):
        raise OnnxkitError(f"output and report_path are both {output}; give the report another name",
                           params=["output", "report_path"])


def _check_report_replaceable(report_path) -> None:  # type: ignore[no-untyped-def]
    """Refuse to write the report over a file that is not an earlier report (`--report data.csv` replaced the data,
    exit status 0); an earlier report is replaced, as quantizing again makes it again."""
    path = Path(report_path) if report_path is not None else None
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    try:
        earlier = {"settings", "size_bytes"} <= json.loads(path.read_text(encoding="utf-8")).keys()
    except (ValueError, OSError, AttributeError):  # not JSON, not UTF-8 (a UnicodeDecodeError), not an object
        earlier = False
    if not earlier:
        raise OnnxkitError(f"report_path {report_path} holds a file that is no quantize report, which the report would "
                           "replace; give the report another name, or delete that file first", params=["report_path"])


def _check_not_weights(source: Path, model: onnx.ModelProto, output, report_path) -> None:  # type: ignore[no-untyped-def]
    """Refuse to write over a weight file the model keeps its tensors in (a dynamo export's .onnx.data): the
    quantized model replaced it, exit status 0, and the source no longer loaded."""
    folder = model_location(source, model).parent
    for name, path in {"output": output, "report_path": report_path}.items():
        for weights in weight_files(model):
            if path is not None and same_file(path, folder / weights):
                raise OnnxkitError(f"{name} {path} is the weight file of {source}; write the result to another file",
                                   params=[name])


def _check_not_data(outputs: dict[str, Any], data: dict[str, Any]) -> None:
    """Refuse to write the model or report over a data file the command reads (calibration or evaluation data,
    the latter perhaps the training data a model records): it was replaced by the model, exit status 0."""
    for name, path in outputs.items():
        for role, given in data.items():
            if path is not None and isinstance(given, str | os.PathLike) and Path(given).is_file() and \
                    same_file(path, given):
                raise OnnxkitError(f"{name} {path} is the {role} data file; write the result to another file",
                                   params=[name, role])
            if path is not None and isinstance(given, str | os.PathLike) and Path(given).is_dir() and \
                    Path(given).resolve() in Path(path).resolve().parents:  # it landed among the images
                raise OnnxkitError(f"{name} {path} is inside the {role} data folder {given}, where the next read of "
                                   "it would take the file for data; write the result elsewhere", params=[name, role])


def _check_options(mode, method, fmt, calib_size, max_drop) -> None:  # type: ignore[no-untyped-def]
    if mode is not None:
        check_choice("mode", mode, MODES)
    if method is not None:
        check_choice("method", method, METHODS)
    if fmt is not None:
        check_choice("format", fmt, FORMATS)
    if isinstance(calib_size, bool) or not isinstance(calib_size, numbers.Integral):
        raise TypeError(f"calib_size must be a whole number of examples, not {calib_size!r}")
    if calib_size < 1:
        raise OnnxkitError(f"calib_size {calib_size}: must be at least 1", params=["calib_size"])
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real)):
        raise TypeError(f"max_drop must be a number of points, got {max_drop!r}")
    if max_drop is not None and not math.isfinite(max_drop):  # below 0 asks for a gain (the tests use it)
        raise OnnxkitError(f"max_drop {max_drop}: must be a finite number of points", params=["max_drop"])


def _check_data(calib: Any, eval_data: Any) -> None:
    """Refuse data of the wrong kind with what to pass instead (before anything is read)."""
    kinds = "a dataset name, an .npz/.csv path, a Dataset, a Split or a dict of arrays keyed by input name"
    if calib is not None and not isinstance(calib, str | os.PathLike | Dataset | Split | dict | np.ndarray):
        raise TypeError(f"calib must be {kinds} (or one array), not {type(calib).__name__}")
    if isinstance(eval_data, np.ndarray | dict):  # inputs without labels: an accuracy of zeros as labels before
        raise TypeError("eval_data needs labels to score the models: pass (X, y), a Split or a Dataset")
    if eval_data is not None and not isinstance(eval_data, str | os.PathLike | Dataset | Split):
        raise TypeError("eval_data must be a dataset name, an .npz/.csv path, a Dataset, a Split or (X, y), features "
                        f"and labels, not {type(eval_data).__name__}")


def _check_evaluation(mode: str | None, eval_data: Any, max_drop: float | None, missing: str | None, *,
                      images: bool) -> None:
    """max_drop and mode auto need data to score the models on: eval_data, or the data a trained model names (a
    built-in example that fits: digits-images for a model of images)."""
    if eval_data is not None:
        return
    data = (f"a dataset name such as {'digits-images' if images else 'digits'}, or an .npz/.csv file of model inputs "
            "and labels "
            f"({missing or 'the model names no training data of its own'})")
    if max_drop is not None:
        raise OnnxkitError(f"max_drop needs eval_data to measure the accuracy drop on: {data}",
                           params=["max_drop", "eval_data"])
    if mode == "auto":
        raise OnnxkitError(f"mode auto compares candidates by accuracy: pass eval_data, {data}",
                           params=["mode", "eval_data"])


def _ignored_options(settings: Settings, method, fmt, per_channel, calib, block_size) -> list[str]:  # type: ignore[no-untyped-def]
    ignored = {
        "--block-size": block_size is not None and settings.mode != "int4",
        "--method": method is not None and settings.mode != "static",
        "--format": fmt is not None and settings.mode != "static",
        "--per-channel": per_channel is not None and settings.mode in ("int4", "fp16"),
        "--calib": calib is not None and settings.mode != "static",
    }
    why = {"--calib": " (--mode static calibrates on it)"}
    return [f"{opt} does not apply to --mode {settings.mode}{why.get(opt, '')}; ignored"
            for opt, on in ignored.items() if on]


def _closer_options(settings: Settings) -> str:
    """What may quantize closer than `settings` did: only options that apply to its mode and are not already set."""
    tries = ["mode auto"] if settings.mode in ("dynamic", "static") else ["another mode"]
    tries += ["per_channel"] if settings.mode in ("dynamic", "static") and not settings.per_channel else []
    tries += ["another method"] if settings.mode == "static" else []
    tries += ["a smaller block_size"] if settings.mode == "int4" and settings.block_size > min(BLOCK_SIZES) else []
    tries += ["exclude what sqnr_rows shows worst"]
    return f"{', '.join(tries[:-1])}, or {tries[-1]}"


def _stamp(quantized: onnx.ModelProto, original: onnx.ModelProto, settings: Settings) -> None:
    """Carry the original's metadata over and record how the model was quantized."""
    set_metadata(quantized, {**metadata(original), **metadata(quantized), QUANTIZATION_KEY: settings.as_dict()})

